"""Streaming `.psem` reader: header first, then verified layers one by one from a file, pipe or socket.

    PsemReader(stream)  -> .header            (preamble, header JSON and its CRC checked on construction)
    for chunk in reader -> Chunk(LAYR | ext)  (each CRC-checked before it is yielded; never partial)
    reader.chunks(keep) -> only the chunks keep(type, seq, end) wants; the others are CRC-checked in pieces
                           and dropped, never held in memory
    reader.end          -> ReadEnd(complete | prefix | truncated at byte X)

A length field is checked against the limits before anything is allocated (and against the codec's bound
for that layer, once the caller sets `max_layer_bytes` from the header), and payloads are read in bounded
pieces, so memory follows what actually arrived, not what a header claims.
"""

from __future__ import annotations

import io
import re
import zlib
from dataclasses import dataclass, field
from typing import BinaryIO, Callable, Iterator, Sequence

from prosemc.format.errors import (
    BadChunkError,
    BadMagicError,
    ChecksumError,
    ChunkTooLargeError,
    EmptyInputError,
    HeaderTooLargeError,
    LayerOrderError,
    LimitError,
    ReservedBitsError,
    TruncatedError,
    UnknownChunkError,
    UnsupportedVersionError,
)
from prosemc.format.header import PsemHeader, header_from_json
from prosemc.format.spec import (
    CHUNK_FRAME,
    CHUNK_RESERVED_FLAGS,
    CRC,
    DEFAULT_LIMITS,
    LAYER_TYPE,
    MAGIC,
    MAJOR_VERSION,
    PREAMBLE,
    Limits,
)

_PIECE = 1 << 20  # read payloads in pieces of at most 1 MiB
_CHUNK_TYPE = re.compile(rb"[A-Za-z]{4}")


@dataclass(frozen=True)
class Chunk:
    """One verified chunk: a layer (type b"LAYR", seq = layer index) or an extension; offset is in the file."""

    type: bytes
    seq: int
    flags: int
    payload: bytes
    offset: int
    crc: int

    @property
    def is_layer(self) -> bool:
        return self.type == LAYER_TYPE

    @property
    def size(self) -> int:
        """Bytes this chunk takes in the file (frame + payload + CRC)."""
        return CHUNK_FRAME.size + len(self.payload) + CRC.size

    @property
    def end(self) -> int:
        return self.offset + self.size

    def to_bytes(self) -> bytes:
        """The chunk exactly as it stands in the file."""
        frame = CHUNK_FRAME.pack(self.type, self.seq, self.flags, len(self.payload))
        return b"".join((frame, self.payload, CRC.pack(self.crc)))


@dataclass(frozen=True)
class ReadEnd:
    """How the stream ended: all declared layers, a clean prefix of them, or a cut inside a chunk."""

    layers: int  # complete layers read
    declared: int  # layers the header declares
    bytes_read: int  # total bytes that arrived
    cut_at: int | None = None  # offset of the chunk that was cut, if the stream ended inside one

    @property
    def status(self) -> str:
        if self.cut_at is not None:
            return "truncated"
        return "complete" if self.layers == self.declared else "prefix"

    def describe(self) -> str:
        if self.cut_at is not None:
            return (
                f"{self.layers} complete layers, then truncated at byte {self.bytes_read} "
                f"(inside the chunk starting at byte {self.cut_at})"
            )
        if self.layers == self.declared:
            return f"complete: all {self.declared} layers"
        return f"prefix: {self.layers} of {self.declared} layers"


def _read_up_to(stream: BinaryIO, size: int) -> bytes:
    """Read until `size` bytes or EOF, in pieces of at most 1 MiB (a short result means EOF)."""
    first = stream.read(min(size, _PIECE))
    if not first or len(first) == size:
        return first or b""
    pieces = [first]
    have = len(first)
    while have < size:
        piece = stream.read(min(size - have, _PIECE))
        if not piece:
            break
        pieces.append(piece)
        have += len(piece)
    return b"".join(pieces)


class PsemReader:
    """Reads a `.psem` stream; iterate it for verified chunks, then look at `.end`."""

    def __init__(self, stream: BinaryIO | bytes, limits: Limits = DEFAULT_LIMITS, *, strict: bool = False) -> None:
        self._stream: BinaryIO = io.BytesIO(stream) if isinstance(stream, (bytes, bytearray, memoryview)) else stream
        self._limits = limits
        self._strict = strict
        self.end: ReadEnd | None = None
        # the most payload bytes each layer may hold (its length is the codec's layer count); None: the chunk cap
        self.max_layer_bytes: Sequence[int] | None = None
        self.header_bytes = self._read_header()
        self._position = len(self.header_bytes)

    def _read_header(self) -> bytes:
        preamble = _read_up_to(self._stream, PREAMBLE.size)
        if not preamble:
            raise EmptyInputError("empty input: expected a .psem file; check that the sender wrote anything")
        seen = min(len(preamble), len(MAGIC))
        if preamble[:seen] != MAGIC[:seen]:
            raise BadMagicError(
                "not a .psem file (bad magic bytes); pass a file made by `prosemc encode`, "
                "and transfer it in binary mode"
            )
        if len(preamble) < PREAMBLE.size:
            raise TruncatedError(
                f"input ends inside the {PREAMBLE.size}-byte preamble after {len(preamble)} bytes; "
                "the transfer was cut, send the file again"
            )
        _, major, minor, flags, header_len = PREAMBLE.unpack(preamble)
        if major != MAJOR_VERSION:
            raise UnsupportedVersionError(
                f"file is PSEM {major}.{minor}, this prosemc reads PSEM {MAJOR_VERSION}.x; "
                "upgrade prosemc to read it"
            )
        if flags:
            raise ReservedBitsError(
                f"reserved preamble flag bits 0x{flags:04x} are set (PSEM {major}.{minor}); "
                "the file needs a newer reader or is corrupt"
            )
        if header_len > self._limits.header_bytes:
            raise HeaderTooLargeError(
                f"header length field says {header_len} bytes, over the {self._limits.header_bytes}-byte cap; "
                "the file is corrupt or hostile"
            )
        rest = _read_up_to(self._stream, header_len + CRC.size)
        if len(rest) < header_len + CRC.size:
            raise TruncatedError(
                f"input ends inside the header after {PREAMBLE.size + len(rest)} of "
                f"{PREAMBLE.size + header_len + CRC.size} bytes; the transfer was cut, send the file again"
            )
        body, (stored,) = rest[:header_len], CRC.unpack(rest[header_len:])
        self._header_crc = zlib.crc32(body, zlib.crc32(preamble))
        if stored != self._header_crc:
            raise ChecksumError("header checksum mismatch: the file is corrupt; send or encode it again")
        self.header: PsemHeader = header_from_json(body, self._limits)
        self.version = (major, minor)
        return preamble + rest

    def _cut(self, layers: int, chunk_start: int, arrived: int) -> None:
        self.end = ReadEnd(layers, self.header.layers, chunk_start + arrived, cut_at=chunk_start)
        if self._strict:
            raise TruncatedError(f"input truncated: {self.end.describe()}; send the rest of the file")

    def __iter__(self) -> Iterator[Chunk]:
        return self.chunks()

    def chunks(self, keep: Callable[[bytes, int, int], bool] | None = None) -> Iterator[Chunk]:
        """Verified chunks in file order; a chunk for which keep(type, seq, end offset) is false is CRC-checked
        in pieces and dropped without being held in memory (it still counts for `end`)."""
        layers = extensions = 0
        while True:
            start = self._position
            frame = _read_up_to(self._stream, CHUNK_FRAME.size)
            if not frame:
                self.end = ReadEnd(layers, self.header.layers, start)
                return
            if len(frame) < CHUNK_FRAME.size:
                return self._cut(layers, start, len(frame))
            chunk_type, seq, flags, length = CHUNK_FRAME.unpack(frame)
            where = f"chunk at byte {start}"
            if not _CHUNK_TYPE.fullmatch(chunk_type):
                raise BadChunkError(f"{where} has type {chunk_type!r}, not four ASCII letters; the file is corrupt, resend it")
            self._check_length(chunk_type, seq, length, where)
            if flags & CHUNK_RESERVED_FLAGS:
                raise ReservedBitsError(
                    f"{where} sets reserved flag bits 0x{flags & CHUNK_RESERVED_FLAGS:02x}; "
                    "the file needs a newer reader or is corrupt"
                )
            is_layer = chunk_type == LAYER_TYPE
            misplaced = is_layer and (seq != layers or layers >= self.header.layers)  # raised once the CRC is good
            end = start + len(frame) + length + CRC.size
            wanted = not misplaced and (keep is None or keep(chunk_type, seq, end))
            crc = zlib.crc32(frame, self._header_crc)
            payload, arrived, crc = self._payload(length, crc, wanted)
            tail = _read_up_to(self._stream, CRC.size) if arrived == length else b""
            if len(tail) < CRC.size:
                return self._cut(layers, start, len(frame) + arrived + len(tail))
            (stored,) = CRC.unpack(tail)
            if stored != crc:
                label = f"layer {layers + 1}" if is_layer else f"extension chunk {chunk_type!r}"
                raise ChecksumError(
                    f"{label} ({where}, {end - start} bytes) fails its checksum: the data was "
                    f"corrupted after {layers} good layers; resend, or keep the first {layers} with `prosemc truncate`"
                )
            self._position = end
            if misplaced:
                raise LayerOrderError(
                    f"{where} is layer index {seq}, expected {layers} of {self.header.layers} declared: "
                    "layers are duplicated, reordered or extra; re-encode the file"
                )
            if is_layer:
                layers += 1
            elif chunk_type[:1].isupper():
                raise UnknownChunkError(
                    f"{where} has critical type {chunk_type.decode()}, unknown to this reader; upgrade prosemc"
                )
            else:
                extensions += 1
                if extensions > self._limits.extension_chunks:
                    raise LimitError(f"more than {self._limits.extension_chunks} extension chunks; the file is hostile")
            if wanted:
                yield Chunk(chunk_type, seq, flags, payload, start, stored)

    def _check_length(self, chunk_type: bytes, seq: int, length: int, where: str) -> None:
        """ChunkTooLargeError, before anything is read, for a length over the chunk cap or the layer's bound."""
        if length > self._limits.chunk_bytes:
            raise ChunkTooLargeError(
                f"{where} claims {length} bytes, over the {self._limits.chunk_bytes}-byte cap; "
                "the file is corrupt or hostile"
            )
        bounds = self.max_layer_bytes
        if chunk_type == LAYER_TYPE and bounds is not None and seq < len(bounds) and length > bounds[seq]:
            raise ChunkTooLargeError(
                f"{where} claims {length} bytes for layer {seq + 1}, more than its codec can produce for these "
                f"tokens ({bounds[seq]}); the file is corrupt or hostile"
            )

    def _payload(self, length: int, crc: int, keep: bool) -> tuple[bytes, int, int]:
        """(payload or b"" when not kept, bytes that arrived, CRC updated over them), read in bounded pieces."""
        if keep:
            payload = _read_up_to(self._stream, length)
            return payload, len(payload), zlib.crc32(payload, crc)
        arrived = 0
        while arrived < length:
            piece = self._stream.read(min(length - arrived, _PIECE))
            if not piece:
                break
            crc = zlib.crc32(piece, crc)
            arrived += len(piece)
        return b"", arrived, crc

    def layers(self) -> Iterator[bytes]:
        """Verified layer payloads in order (extension chunks are skipped)."""
        for chunk in self:
            if chunk.is_layer:
                yield chunk.payload


@dataclass
class PsemFile:
    """A whole `.psem` read into memory: header, layer payloads, extension chunks and how it ended."""

    header: PsemHeader
    layers: list[bytes]
    end: ReadEnd
    extensions: list[Chunk] = field(default_factory=list)


def read(stream: BinaryIO | bytes, limits: Limits = DEFAULT_LIMITS, *, strict: bool = False) -> PsemFile:
    """Read a whole stream; a cut inside a chunk keeps the complete layers (or raises when strict)."""
    reader = PsemReader(stream, limits, strict=strict)
    layers: list[bytes] = []
    extensions: list[Chunk] = []
    for chunk in reader:
        (layers.append(chunk.payload) if chunk.is_layer else extensions.append(chunk))
    assert reader.end is not None
    return PsemFile(reader.header, layers, reader.end, extensions)


def loads(data: bytes, limits: Limits = DEFAULT_LIMITS, *, strict: bool = False) -> PsemFile:
    """Read a `.psem` from bytes."""
    return read(bytes(data), limits, strict=strict)
