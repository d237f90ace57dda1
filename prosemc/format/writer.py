"""Streaming `.psem` writer of either form: the header first, then each layer as it is produced, flushed; never seeks.

    PsemWriter(stream, header)                   -> full form: the header spelled out (self-describing, the default)
    PsemWriter(stream, header, profile=profile)  -> compact form: the profile's id and a patch, short chunk frames
    add_layer(payload) ...                       -> the stream holds a valid file after every call
"""

from __future__ import annotations

import io
import re
import zlib
from typing import BinaryIO, Iterable

from prosemc.format.compact import encode_compact_chunk, encode_compact_header
from prosemc.format.errors import BadChunkError, ChunkTooLargeError, InvalidHeaderError, LayerOrderError, LimitError
from prosemc.format.header import PsemHeader
from prosemc.format.spec import (
    CHUNK_FRAME,
    COMPACT_HEAD,
    CRC,
    DEFAULT_LIMITS,
    LAYER_TYPE,
    MAGIC,
    MAJOR_VERSION,
    MINOR_VERSION,
    PREAMBLE,
    Limits,
)

_EXTENSION_TYPE = re.compile(rb"[a-z][A-Za-z]{3}")


def encode_header(header: PsemHeader, limits: Limits = DEFAULT_LIMITS) -> tuple[bytes, int]:
    """Preamble + header JSON + CRC-32 as bytes, and that CRC (it seeds every chunk CRC of the file)."""
    body = header.to_json_bytes(limits)
    if len(body) > limits.header_bytes:
        raise InvalidHeaderError(
            f"header JSON is {len(body)} bytes, over the {limits.header_bytes}-byte cap; shorten the metadata"
        )
    head = PREAMBLE.pack(MAGIC, MAJOR_VERSION, MINOR_VERSION, 0, len(body)) + body
    crc = zlib.crc32(head)
    return head + CRC.pack(crc), crc


def encode_chunk(chunk_type: bytes, seq: int, payload: bytes, header_crc: int, flags: int = 0) -> bytes:
    """One framed chunk; its CRC-32 covers frame + payload and is seeded with the header CRC."""
    frame = CHUNK_FRAME.pack(chunk_type, seq, flags, len(payload))
    crc = zlib.crc32(payload, zlib.crc32(frame, header_crc))
    return b"".join((frame, payload, CRC.pack(crc)))


def encode_any_chunk(chunk_type: bytes, seq: int, payload: bytes, header_crc: int, *, compact: bool) -> bytes:
    """One chunk framed for the full or the compact form."""
    if compact:
        return encode_compact_chunk(chunk_type, seq, payload, header_crc)
    return encode_chunk(chunk_type, seq, payload, header_crc)


class PsemWriter:
    """Writes a `.psem` stream front to back; after each call the bytes written so far are a valid file.

    With `profile` (a header the reader already holds) it writes the compact form, which names the profile by id
    and patches it into `header`.
    """

    def __init__(self, stream: BinaryIO, header: PsemHeader, limits: Limits = DEFAULT_LIMITS, *,
                 profile: PsemHeader | None = None) -> None:
        self._stream = stream
        self._limits = limits
        self.header = header
        self.compact = profile is not None
        self.layers_written = 0
        self._extensions_written = 0
        if profile is None:
            head, self._header_crc = encode_header(header, limits)
        else:
            head, self._header_crc = encode_compact_header(header, profile, limits)
        self.profile_id = COMPACT_HEAD.unpack_from(head)[3] if profile is not None else None  # 8 bytes, or None
        self.header_size = len(head)
        self.bytes_written = 0
        self.layer_ends: list[int] = []  # cumulative file size after each layer
        self._emit(head)

    def _emit(self, data: bytes) -> None:
        self._stream.write(data)
        self._stream.flush()
        self.bytes_written += len(data)

    def _check_size(self, payload: bytes) -> None:
        if len(payload) > self._limits.chunk_bytes:
            raise ChunkTooLargeError(
                f"chunk payload is {len(payload)} bytes, over the {self._limits.chunk_bytes}-byte cap; "
                "split it over more layers"
            )

    def add_layer(self, payload: bytes) -> int:
        """Append the next layer; returns the bytes this layer added to the file."""
        if self.layers_written >= self.header.layers:
            raise LayerOrderError(
                f"the header declares {self.header.layers} layers and all were written; "
                "declare more layers in the header"
            )
        self._check_size(payload)
        chunk = encode_any_chunk(LAYER_TYPE, self.layers_written, bytes(payload), self._header_crc, compact=self.compact)
        self._emit(chunk)
        self.layers_written += 1
        self.layer_ends.append(self.bytes_written)
        return len(chunk)

    def add_extension(self, chunk_type: bytes, payload: bytes) -> int:
        """Append a skippable extension chunk (type: four ASCII letters, the first lower-case)."""
        if not _EXTENSION_TYPE.fullmatch(chunk_type):
            raise BadChunkError(
                f"extension chunk type {chunk_type!r} is not four ASCII letters starting lower-case; use e.g. b'meta'"
            )
        if self._extensions_written >= self._limits.extension_chunks:
            raise LimitError(f"more than {self._limits.extension_chunks} extension chunks; merge them")
        self._check_size(payload)
        chunk = encode_any_chunk(chunk_type, 0, bytes(payload), self._header_crc, compact=self.compact)
        self._emit(chunk)
        self._extensions_written += 1
        return len(chunk)


def write(stream: BinaryIO, header: PsemHeader, layers: Iterable[bytes], limits: Limits = DEFAULT_LIMITS, *,
          profile: PsemHeader | None = None) -> int:
    """Write a whole file to `stream` (compact when `profile` is given); returns the bytes written."""
    writer = PsemWriter(stream, header, limits, profile=profile)
    for payload in layers:
        writer.add_layer(payload)
    return writer.bytes_written


def dumps(header: PsemHeader, layers: Iterable[bytes], limits: Limits = DEFAULT_LIMITS, *,
          profile: PsemHeader | None = None) -> bytes:
    """A whole `.psem` file as bytes (compact when `profile` is given)."""
    buffer = io.BytesIO()
    write(buffer, header, layers, limits, profile=profile)
    return buffer.getvalue()
