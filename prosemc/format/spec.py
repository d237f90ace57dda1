"""Constants of the `.psem` v1 container: magic, version, frame structs and decoder limits (see formats/PSEM.md).

    file   = preamble(16) | header JSON(L) | header CRC-32(4) | chunk*
    chunk  = type(4) | seq u16 | flags u16 | length u32 | payload(length) | CRC-32(4)
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

# PNG-style magic: a high-bit first byte catches 7-bit channels, CR LF catches newline translation both ways,
# ^Z stops DOS `type`, and the final LF catches LF -> CRLF conversion.
MAGIC = b"\x89PSM\r\n\x1a\n"
MAJOR_VERSION = 1
MINOR_VERSION = 0

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
