"""Streaming `.psem` reader of both forms: header first, then verified layers one by one from a file, pipe or socket.

    PsemReader(stream[, profiles=store]) -> .header   (full: preamble, JSON and CRC; compact: profile id, patch, CRC)
    for chunk in reader -> Chunk(LAYR | ext)         (each CRC-checked before it is yielded; never partial)
    reader.chunks(keep) -> only the chunks keep(type, seq, end) wants; the others are CRC-checked in pieces
                           and dropped, never held in memory
    reader.end          -> ReadEnd(complete | prefix | truncated at byte X)

The first four bytes say the form; a compact file needs its profile in `profiles` (UnknownProfileError names
the id otherwise). A length field is checked against the limits before anything is allocated (and against the
codec's bound for that layer, once the caller sets `max_layer_bytes` from the header), and payloads are read in
bounded pieces, so memory follows what actually arrived, not what a header claims.
"""

from __future__ import annotations

import io
import zlib
from dataclasses import dataclass, field
from typing import BinaryIO, Callable, Iterator, Sequence

from prosemc.format.compact import read_compact_head
from prosemc.format.errors import (
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
    UnknownProfileError,
    UnsupportedVersionError,
)
from prosemc.format.framing import PIECE_BYTES, read_compact_frame, read_full_frame, read_up_to
from prosemc.format.header import PsemHeader, header_from_json
from prosemc.format.profiles import Profile, ProfileStore
from prosemc.format.spec import (
    COMPACT_MAGIC,
    CRC,
    DEFAULT_LIMITS,
    FULL_MAJORS,
    LAYER_INDEX,
    LAYER_TYPE,
    MAGIC,
    PREAMBLE,
    Limits,
)
from prosemc.text import plural


@dataclass(frozen=True)
class Chunk:
    """One verified chunk: a layer (type b"LAYR", seq = layer index) or an extension; offset is in the file."""

    type: bytes
    seq: int
    flags: int
    payload: bytes
    offset: int
    crc: int
    frame: bytes  # the frame exactly as it stands in the file (12 bytes in the full form, 1-9 in the compact one)

    @property
    def is_layer(self) -> bool:
        return self.type == LAYER_TYPE

    @property
    def size(self) -> int:
        """Bytes this chunk takes in the file (frame + payload + CRC)."""
        return len(self.frame) + len(self.payload) + CRC.size

    @property
    def end(self) -> int:
        return self.offset + self.size

    def to_bytes(self) -> bytes:
        """The chunk exactly as it stands in the file."""
        return b"".join((self.frame, self.payload, CRC.pack(self.crc)))


@dataclass(frozen=True)
class ReadEnd:
    """How the stream ended: all declared layers, a clean prefix of them, or a cut inside a chunk."""

    layers: int  # complete layers read
    declared: int | None  # layers the header declares (None: a compact file whose profile is unknown)
    bytes_read: int  # total bytes that arrived
    cut_at: int | None = None  # offset of the chunk that was cut, if the stream ended inside one

    @property
    def status(self) -> str:
        if self.cut_at is not None:
            return "truncated"
        if self.declared is None:
            return "needs-profile"
        return "complete" if self.layers == self.declared else "prefix"

    def describe(self) -> str:
        if self.cut_at is not None:
            return (
                f"{plural(self.layers, 'complete layer')}, then truncated at byte {self.bytes_read} "
                f"(inside the chunk starting at byte {self.cut_at})"
            )
        if self.declared is None:
            return f"{plural(self.layers, 'layer')}; how many were declared is in the profile, which this reader does not know"
        if self.layers == self.declared:
            return "complete: the only layer" if self.declared == 1 else f"complete: all {self.declared} layers"
        return f"prefix: {self.layers} of {plural(self.declared, 'layer')}"


class PsemReader:
    """Reads a `.psem` stream of either form; iterate it for verified chunks, then look at `.end`.

    `profiles` resolves compact files; with `require_profile=False` a compact file whose profile is unknown still
    reads (header None, profile_id set) so that its chunks can be verified and listed.
    """

    def __init__(self, stream: BinaryIO | bytes, limits: Limits = DEFAULT_LIMITS, *, strict: bool = False,
                 profiles: ProfileStore | None = None, require_profile: bool = True) -> None:
        self._stream: BinaryIO = io.BytesIO(stream) if isinstance(stream, (bytes, bytearray, memoryview)) else stream
        self._limits = limits
        self._strict = strict
        self.end: ReadEnd | None = None
        self.form = "full"
        self.profile: Profile | None = None  # the profile a compact file names, when known
        self.profile_id: bytes | None = None  # the id a compact file names
        self.header: PsemHeader | None
        # the most payload bytes each layer may hold (its length is the codec's layer count); None: the chunk cap
        self.max_layer_bytes: Sequence[int] | None = None
        self.header_bytes = self._read_header(profiles, require_profile)
        self._position = len(self.header_bytes)

    @property
    def header_crc(self) -> int:
        """The header CRC: every chunk CRC of the file is seeded with it."""
        return self._header_crc

    def _read_header(self, profiles: ProfileStore | None, require_profile: bool) -> bytes:
        preamble = read_up_to(self._stream, len(COMPACT_MAGIC))
        if preamble == COMPACT_MAGIC:
            return self._read_compact_header(preamble, profiles, require_profile)
        if len(preamble) == len(COMPACT_MAGIC):
            preamble += read_up_to(self._stream, PREAMBLE.size - len(preamble))
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
        if major not in FULL_MAJORS:
            raise UnsupportedVersionError(
                f"file is PSEM {major}.{minor}, this prosemc reads PSEM 1.x and 2.x; upgrade prosemc to read it"
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
        rest = read_up_to(self._stream, header_len + CRC.size)
        if len(rest) < header_len + CRC.size:
            raise TruncatedError(
                f"input ends inside the header after {PREAMBLE.size + len(rest)} of "
                f"{PREAMBLE.size + header_len + CRC.size} bytes; the transfer was cut, send the file again"
            )
        body, (stored,) = rest[:header_len], CRC.unpack(rest[header_len:])
        self._header_crc = zlib.crc32(body, zlib.crc32(preamble))
        if stored != self._header_crc:
            raise ChecksumError("header checksum mismatch: the file is corrupt; send or encode it again")
        self.header = header_from_json(body, self._limits)
        self.version = (major, minor)
        return preamble + rest

    def _read_compact_header(self, magic: bytes, profiles: ProfileStore | None, require_profile: bool) -> bytes:
        head = read_compact_head(magic, self._stream, self._limits)
        self.form, self.version, self.profile_id, self._header_crc = "compact", head.version, head.profile_id, head.crc
        self.profile = profiles.get(head.profile_id) if profiles is not None else None
        if self.profile is None and require_profile:
            raise UnknownProfileError(
                f"this compact .psem names profile {head.profile_id.hex()}, which this reader does not know; get the "
                "full file from a machine that knows the profile, or add the profile to this reader's profile store",
                head.profile_id,
            )
        self.header = head.header(self.profile, self._limits) if self.profile is not None else None
        return head.raw

    @property
    def _declared(self) -> int | None:
        return self.header.layers if self.header is not None else None

    def _cut(self, layers: int, chunk_start: int, arrived: int) -> None:
        self.end = ReadEnd(layers, self._declared, chunk_start + arrived, cut_at=chunk_start)
        if self._strict:
            raise TruncatedError(f"input truncated: {self.end.describe()}; send the rest of the file")

    def _misplaced_layer(self, stored: int, crc_before_index: int) -> int | None:
        """The index a compact layer's CRC matches instead of the expected one, if any (it was moved or repeated)."""
        for index in range(self._limits.layers):
            if zlib.crc32(LAYER_INDEX.pack(index), crc_before_index) == stored:
                return index
        return None

    def __iter__(self) -> Iterator[Chunk]:
        return self.chunks()

    def chunks(self, keep: Callable[[bytes, int, int], bool] | None = None) -> Iterator[Chunk]:
        """Verified chunks in file order; a chunk for which keep(type, seq, end offset) is false is CRC-checked
        in pieces and dropped without being held in memory (it still counts for `end`)."""
        layers = extensions = 0
        compact = self.form == "compact"
        declared = self._declared if self._declared is not None else self._limits.layers
        while True:
            start = self._position
            where = f"chunk at byte {start}"
            frame = (read_compact_frame if compact else read_full_frame)(self._stream, where, self._limits)
            if isinstance(frame, bytes):  # the stream ended before a whole frame
                if not frame:
                    self.end = ReadEnd(layers, self._declared, start)
                    return
                return self._cut(layers, start, len(frame))
            is_layer = frame.type == LAYER_TYPE
            seq = frame.seq if frame.seq is not None else (layers if is_layer else 0)
            self._check_layer_bound(is_layer, seq, frame.length, where)
            # a full-form layer's index is in its frame: a misplaced one is raised once its CRC is good
            misplaced = is_layer and (seq != layers or layers >= declared)
            end = start + len(frame.raw) + frame.length + CRC.size
            wanted = not misplaced and (keep is None or keep(frame.type, seq, end))
            payload, arrived, crc = self._payload(frame.length, zlib.crc32(frame.raw, self._header_crc), wanted)
            tail = read_up_to(self._stream, CRC.size) if arrived == frame.length else b""
            if len(tail) < CRC.size:
                return self._cut(layers, start, len(frame.raw) + arrived + len(tail))
            (stored,) = CRC.unpack(tail)
            expected = zlib.crc32(LAYER_INDEX.pack(seq), crc) if compact else crc
            if stored != expected and compact and is_layer:
                moved_from = self._misplaced_layer(stored, crc)  # the CRC fits another position: moved or repeated
                if moved_from is not None:
                    seq, expected, misplaced = moved_from, stored, True
            if stored != expected:
                label = f"layer {layers + 1}" if is_layer else f"extension chunk {frame.type!r}"
                raise ChecksumError(
                    f"{label} ({where}, {end - start} bytes) fails its checksum: the data was "
                    f"corrupted after {layers} good layers; resend, or keep the first {layers} with `prosemc truncate`"
                )
            self._position = end
            if misplaced:
                raise LayerOrderError(
                    f"{where} is layer index {seq}, expected {layers} of {declared} declared: "
                    "layers are duplicated, reordered or extra; re-encode the file"
                )
            if is_layer:
                layers += 1
            elif frame.type[:1].isupper():
                raise UnknownChunkError(
                    f"{where} has critical type {frame.type.decode()}, unknown to this reader; upgrade prosemc"
                )
            else:
                extensions += 1
                if extensions > self._limits.extension_chunks:
                    raise LimitError(f"more than {self._limits.extension_chunks} extension chunks; the file is hostile")
            if wanted:
                yield Chunk(frame.type, seq, frame.flags, payload, start, stored, frame.raw)

    def _check_layer_bound(self, is_layer: bool, seq: int, length: int, where: str) -> None:
        """ChunkTooLargeError, before anything is read, for a layer longer than its codec can produce."""
        bounds = self.max_layer_bytes
        if is_layer and bounds is not None and seq < len(bounds) and length > bounds[seq]:
            raise ChunkTooLargeError(
                f"{where} claims {length} bytes for layer {seq + 1}, more than its codec can produce for these "
                f"tokens ({bounds[seq]}); the file is corrupt or hostile"
            )

    def _payload(self, length: int, crc: int, keep: bool) -> tuple[bytes, int, int]:
        """(payload or b"" when not kept, bytes that arrived, CRC updated over them), read in bounded pieces."""
        if keep:
            payload = read_up_to(self._stream, length)
            return payload, len(payload), zlib.crc32(payload, crc)
        arrived = 0
        while arrived < length:
            piece = self._stream.read(min(length - arrived, PIECE_BYTES))
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


def read(stream: BinaryIO | bytes, limits: Limits = DEFAULT_LIMITS, *, strict: bool = False,
         profiles: ProfileStore | None = None) -> PsemFile:
    """Read a whole stream of either form; a cut inside a chunk keeps the complete layers (or raises when strict)."""
    reader = PsemReader(stream, limits, strict=strict, profiles=profiles)
    layers: list[bytes] = []
    extensions: list[Chunk] = []
    for chunk in reader:
        (layers.append(chunk.payload) if chunk.is_layer else extensions.append(chunk))
    assert reader.end is not None and reader.header is not None
    return PsemFile(reader.header, layers, reader.end, extensions)


def loads(data: bytes, limits: Limits = DEFAULT_LIMITS, *, strict: bool = False,
          profiles: ProfileStore | None = None) -> PsemFile:
    """Read a `.psem` of either form from bytes."""
    return read(bytes(data), limits, strict=strict, profiles=profiles)
