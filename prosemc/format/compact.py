"""The compact form of `.psem` (PSEM 2.0): a profile id in place of the header, and short chunk frames.

    header  "\\x89PSc" | version | flags | profile id (8) | [varint P | patch JSON (P bytes)] | CRC-32
    chunk   varint(length << 2 | kind) | [type (4) when kind = 1] | payload | CRC-32(frame, payload, layer index)

A compact file names a *profile* -- a full header the reader already holds -- and carries only a JSON merge patch
(RFC 7386) for what its own header changes, usually nothing (18 bytes in all). The file's header is the profile
with the patch applied, validated by the same rules as a full header. A layer's CRC also covers its index, so a
layer out of place fails it although the compact frame does not spell the index out; every CRC is seeded with
the header CRC, binding chunks to their file as in the full form.
"""

from __future__ import annotations

import json
import zlib
from dataclasses import dataclass
from typing import Any, BinaryIO

from prosemc.format.errors import (
    ChecksumError,
    HeaderTooLargeError,
    InvalidHeaderError,
    ReservedBitsError,
    TruncatedError,
    UnsupportedVersionError,
)
from prosemc.format.framing import encode_varint, is_minimal, read_up_to, read_varint
from prosemc.format.header import PsemHeader, canonical_json, header_from_json
from prosemc.format.profiles import Profile, profile_id
from prosemc.format.spec import (
    COMPACT_HEAD,
    COMPACT_MAJORS,
    COMPACT_MAGIC,
    COMPACT_PATCH_FLAG,
    COMPACT_RESERVED_FLAGS,
    COMPACT_VERSION,
    CRC,
    DEFAULT_LIMITS,
    KIND_LAYER,
    KIND_TYPED,
    LAYER_INDEX,
    LAYER_TYPE,
    Limits,
)


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386: `patch` applied to `target` (neither is changed): null deletes a member, objects merge, else replace."""
    if not isinstance(patch, dict):
        return patch
    merged = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = merge_patch(merged.get(key), value)
    return merged


def patch_between(source: dict[str, Any], target: dict[str, Any]) -> dict[str, Any]:
    """The smallest merge patch that turns JSON object `source` into `target` ({} when they are equal)."""
    patch: dict[str, Any] = {key: None for key in source if key not in target}
    for key, value in target.items():
        if key in source and canonical_json(source[key]) == canonical_json(value):
            continue
        both_objects = isinstance(value, dict) and isinstance(source.get(key), dict)
        patch[key] = patch_between(source[key], value) if both_objects else value
    return patch


def encode_compact_header(header: PsemHeader, profile: PsemHeader,
                          limits: Limits = DEFAULT_LIMITS) -> tuple[bytes, int]:
    """The compact header naming `profile` and patching it into `header`, and its CRC (it seeds every chunk CRC)."""
    profile_body, body = profile.to_json_bytes(limits), header.to_json_bytes(limits)
    patch = patch_between(json.loads(profile_body), json.loads(body))
    flags, tail = 0, b""
    if patch:
        if canonical_json(merge_patch(json.loads(profile_body), patch)) != body:
            raise InvalidHeaderError(
                "the header differs from its profile by a null inside an object, which a JSON merge patch cannot "
                "carry; leave the null value out, or write the full form"
            )
        patch_body = canonical_json(patch)
        if len(patch_body) > limits.header_bytes:
            raise InvalidHeaderError(
                f"the header patch is {len(patch_body)} bytes, over the {limits.header_bytes}-byte cap; shorten the metadata"
            )
        flags, tail = COMPACT_PATCH_FLAG, encode_varint(len(patch_body)) + patch_body
    major, minor = COMPACT_VERSION
    head = COMPACT_HEAD.pack(COMPACT_MAGIC, major << 4 | minor, flags, profile_id(profile_body)) + tail
    crc = zlib.crc32(head)
    return head + CRC.pack(crc), crc


def encode_compact_chunk(chunk_type: bytes, index: int, payload: bytes, header_crc: int) -> bytes:
    """One compact chunk; its CRC-32 covers frame, payload and the layer index (0 for other chunks), seeded with the
    header CRC."""
    kind, type_bytes = (KIND_LAYER, b"") if chunk_type == LAYER_TYPE else (KIND_TYPED, chunk_type)
    frame = encode_varint(len(payload) << 2 | kind) + type_bytes
    crc = zlib.crc32(LAYER_INDEX.pack(index), zlib.crc32(payload, zlib.crc32(frame, header_crc)))
    return b"".join((frame, payload, CRC.pack(crc)))


@dataclass(frozen=True)
class CompactHead:
    """A compact header as read and CRC-checked: its bytes, CRC, version, profile id and patch JSON (None: none)."""

    raw: bytes
    crc: int
    version: tuple[int, int]
    profile_id: bytes
    patch: bytes | None

    def header(self, profile: Profile, limits: Limits = DEFAULT_LIMITS) -> PsemHeader:
        """The file's header: `profile` with the patch applied, validated by the rules of a full header."""
        if self.patch is None:
            return profile.header
        try:
            patch = json.loads(self.patch.decode("utf-8"), object_pairs_hook=_unique_members,
                               parse_constant=_no_constants)
            if not isinstance(patch, dict):
                raise _invalid("the header patch is not a JSON object")
            body = canonical_json(merge_patch(profile.document, patch))
        except (ValueError, RecursionError) as exc:  # bad UTF-8 or JSON, 1e400, a huge integer, deep nesting
            raise _invalid(f"the header patch is not valid JSON ({type(exc).__name__})") from None
        if len(body) > limits.header_bytes:
            raise HeaderTooLargeError(
                f"the patched header is {len(body)} bytes, over the {limits.header_bytes}-byte cap; the file is hostile"
            )
        return header_from_json(body, limits)


def _invalid(problem: str) -> InvalidHeaderError:
    return InvalidHeaderError(f"invalid compact .psem header: {problem}; the file was not written by a conforming "
                              "encoder, re-encode it")


def _unique_members(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    if len({key for key, _ in pairs}) != len(pairs):
        raise _invalid("the header patch repeats a key")
    return dict(pairs)


def _no_constants(name: str) -> Any:
    raise _invalid(f"the header patch holds the non-finite number {name}")


def _cut(have: int) -> TruncatedError:
    return TruncatedError(f"input ends inside the compact header after {have} bytes; the transfer was cut, "
                          "send the file again")


def read_compact_head(magic: bytes, stream: BinaryIO, limits: Limits = DEFAULT_LIMITS) -> CompactHead:
    """Read the rest of a compact header whose magic was already read; CRC-checked before the patch is parsed."""
    head = magic + read_up_to(stream, COMPACT_HEAD.size - len(magic))
    if len(head) < COMPACT_HEAD.size:
        raise _cut(len(head))
    _, version, flags, pid = COMPACT_HEAD.unpack(head)
    major, minor = version >> 4, version & 0x0F
    if major not in COMPACT_MAJORS:
        raise UnsupportedVersionError(
            f"file is PSEM {major}.{minor} in the compact form, this prosemc reads compact PSEM 2.x; "
            "upgrade prosemc to read it"
        )
    if flags & COMPACT_RESERVED_FLAGS:
        raise ReservedBitsError(
            f"reserved compact header flag bits 0x{flags & COMPACT_RESERVED_FLAGS:02x} are set (PSEM {major}.{minor}); "
            "the file needs a newer reader or is corrupt"
        )
    patch = None
    if flags & COMPACT_PATCH_FLAG:
        length, varint = read_varint(stream)
        head += varint
        if length is None:
            raise _cut(len(head))
        if length > limits.header_bytes:
            raise HeaderTooLargeError(
                f"header patch length says {length} bytes, over the {limits.header_bytes}-byte cap; "
                "the file is corrupt or hostile"
            )
        if length == 0 or not is_minimal(varint):
            raise _invalid("the patch length is zero or spelled in more bytes than needed")
        patch = read_up_to(stream, length)
        head += patch
        if len(patch) < length:
            raise _cut(len(head))
    stored = read_up_to(stream, CRC.size)
    if len(stored) < CRC.size:
        raise _cut(len(head) + len(stored))
    crc = zlib.crc32(head)
    if CRC.unpack(stored)[0] != crc:
        raise ChecksumError("header checksum mismatch: the file is corrupt; send or encode it again")
    return CompactHead(head + stored, crc, (major, minor), pid, patch)
