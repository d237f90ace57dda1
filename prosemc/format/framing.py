"""Chunk frames of both forms, read from a stream and checked against the limits before any payload is read.

    full frame     type(4) | seq u16 | flags u16 | length u32                  12 bytes
    compact frame  varint(length << 2 | kind) | type(4) only when kind = 1     1-9 bytes (2 for a 340-byte layer)

A varint is unsigned LEB128 (7 bits a byte, low bits first, high bit = more follows), in as few bytes as possible.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import BinaryIO

from prosemc.format.errors import BadChunkError, ChunkTooLargeError, ReservedBitsError
from prosemc.format.spec import CHUNK_FRAME, CHUNK_RESERVED_FLAGS, KIND_LAYER, KIND_TYPED, LAYER_TYPE, Limits

PIECE_BYTES = 1 << 20  # read payloads in pieces of at most 1 MiB
_CHUNK_TYPE = re.compile(rb"[A-Za-z]{4}")
MAX_VARINT_BYTES = 5  # 35 bits: more than any length the limits allow
VARINT_OVERFLOW = 1 << (7 * MAX_VARINT_BYTES)  # what a varint that runs past 5 bytes counts as: over every cap


@dataclass(frozen=True)
class Frame:
    """A chunk frame as read: type, layer index (None when implicit, as in the compact form), flags, length, bytes."""

    type: bytes
    seq: int | None
    flags: int
    length: int
    raw: bytes


def read_up_to(stream: BinaryIO, size: int) -> bytes:
    """Read until `size` bytes or EOF, in pieces of at most 1 MiB (a short result means EOF)."""
    first = stream.read(min(size, PIECE_BYTES))
    if not first or len(first) == size:
        return first or b""
    pieces = [first]
    have = len(first)
    while have < size:
        piece = stream.read(min(size - have, PIECE_BYTES))
        if not piece:
            break
        pieces.append(piece)
        have += len(piece)
    return b"".join(pieces)


def encode_varint(value: int) -> bytes:
    """Unsigned LEB128 in the fewest bytes."""
    out = bytearray()
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def read_varint(stream: BinaryIO) -> tuple[int | None, bytes]:
    """A varint from the stream: (value, its bytes); value None when the stream ends inside it.

    One that runs past 5 bytes stops there and counts as VARINT_OVERFLOW, which every length cap refuses.
    """
    raw = bytearray()
    value = 0
    while len(raw) < MAX_VARINT_BYTES:
        byte = stream.read(1)
        if not byte:
            return None, bytes(raw)
        raw += byte
        value |= (byte[0] & 0x7F) << (7 * (len(raw) - 1))
        if not byte[0] & 0x80:
            return value, bytes(raw)
    return VARINT_OVERFLOW, bytes(raw)


def is_minimal(varint: bytes) -> bool:
    """Whether a complete varint uses the fewest bytes (no trailing zero group)."""
    return len(varint) == 1 or varint[-1] != 0


def _check_type(chunk_type: bytes, where: str) -> None:
    if not _CHUNK_TYPE.fullmatch(chunk_type):
        raise BadChunkError(f"{where} has type {chunk_type!r}, not four ASCII letters; the file is corrupt, resend it")


def _check_length(length: int, where: str, limits: Limits) -> None:
    if length > limits.chunk_bytes:
        shown = "more than 2^33" if length >= VARINT_OVERFLOW >> 2 else str(length)
        raise ChunkTooLargeError(
            f"{where} claims {shown} bytes, over the {limits.chunk_bytes}-byte cap; the file is corrupt or hostile"
        )


def read_full_frame(stream: BinaryIO, where: str, limits: Limits) -> Frame | bytes:
    """The next full-form frame, or the bytes that arrived when the stream ended before a whole frame."""
    raw = read_up_to(stream, CHUNK_FRAME.size)
    if len(raw) < CHUNK_FRAME.size:
        return raw
    chunk_type, seq, flags, length = CHUNK_FRAME.unpack(raw)
    _check_type(chunk_type, where)
    _check_length(length, where, limits)
    if flags & CHUNK_RESERVED_FLAGS:
        raise ReservedBitsError(
            f"{where} sets reserved flag bits 0x{flags & CHUNK_RESERVED_FLAGS:02x}; "
            "the file needs a newer reader or is corrupt"
        )
    return Frame(chunk_type, seq, flags, length, raw)


def read_compact_frame(stream: BinaryIO, where: str, limits: Limits) -> Frame | bytes:
    """The next compact frame, or the bytes that arrived when the stream ended before a whole frame."""
    tag, raw = read_varint(stream)
    if tag is None:
        return raw
    kind, length = tag & 3, tag >> 2
    _check_length(length, where, limits)
    if not is_minimal(raw):
        raise BadChunkError(f"{where} spells its length in more bytes than needed; the file is corrupt, resend it")
    if kind == KIND_LAYER:
        return Frame(LAYER_TYPE, None, 0, length, raw)
    if kind != KIND_TYPED:
        raise ReservedBitsError(f"{where} has reserved chunk kind {kind}; the file needs a newer reader or is corrupt")
    chunk_type = read_up_to(stream, 4)
    if len(chunk_type) < 4:
        return raw + chunk_type
    _check_type(chunk_type, where)
    if chunk_type == LAYER_TYPE:
        raise BadChunkError(f"{where} is a typed LAYR chunk, but compact layers are kind-0 chunks; the file is corrupt")
    return Frame(chunk_type, None, 0, length, raw + chunk_type)
