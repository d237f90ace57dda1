"""Constants of the `.psem` container: magics, versions, frame structs and decoder limits (see formats/PSEM.md).

    full file     = preamble(16) | header JSON(L) | header CRC-32(4) | chunk*
    full chunk    = type(4) | seq u16 | flags u16 | length u32 | payload(length) | CRC-32(4)
    compact file  = magic(4) | version(1) | flags(1) | profile id(8) | [varint P | patch JSON(P)] | CRC-32(4) | chunk*
    compact chunk = varint(length << 2 | kind) | [type(4) if kind = 1] | payload(length) | CRC-32(4)
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

# PNG-style magic: a high-bit first byte catches 7-bit channels, CR LF catches newline translation both ways,
# ^Z stops DOS `type`, and the final LF catches LF -> CRLF conversion.
MAGIC = b"\x89PSM\r\n\x1a\n"
MAJOR_VERSION = 1  # full-form files are written as 1.0: the full form is unchanged since 1.0, so 1.x readers read them
MINOR_VERSION = 0
FULL_MAJORS = (1, 2)  # majors a reader of this version reads in the full form

# The compact form (PSEM 2.0): its own magic, a profile id instead of the header, short chunk frames.
COMPACT_MAGIC = b"\x89PSc"  # high-bit first byte as in MAGIC; lower-case `c` for compact
COMPACT_MAJORS = (2,)  # the compact form is new in 2.0
COMPACT_VERSION = (2, 0)
COMPACT_HEAD = struct.Struct("<4sBB8s")  # magic, version (major << 4 | minor), flags, profile id
COMPACT_PATCH_FLAG = 0x01  # a header patch (varint length + JSON merge patch) follows the profile id
COMPACT_RESERVED_FLAGS = 0xFE  # must be zero; a reader refuses a compact header with any of these set
PROFILE_ID_BYTES = 8  # a profile id is the first 8 bytes of the SHA-256 of the profile's canonical header JSON
KIND_LAYER, KIND_TYPED = 0, 1  # low 2 bits of a compact chunk's varint; kinds 2 and 3 are reserved
LAYER_INDEX = struct.Struct("<H")  # the layer index a compact chunk CRC covers (it is not stored in the file)

PREAMBLE = struct.Struct("<8sBBHI")  # magic, major, minor, flags (reserved), header length
CHUNK_FRAME = struct.Struct("<4sHHI")  # type, seq, flags, payload length
CRC = struct.Struct("<I")

LAYER_TYPE = b"LAYR"
CHUNK_RESERVED_FLAGS = 0x00FF  # must be zero; a reader refuses a chunk with any of these set
# bits 0xFF00 of a chunk's flags are "ignored": writers set zero, readers skip over them.


@dataclass(frozen=True)
class Limits:
    """Decoder limits, checked before anything a length field claims is allocated."""

    header_bytes: int = 64 * 1024
    chunk_bytes: int = 64 * 1024 * 1024
    layers: int = 64
    extension_chunks: int = 256


DEFAULT_LIMITS = Limits()
