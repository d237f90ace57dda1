"""Entropy coding of small-alphabet integer symbols with exact integer frequency tables.

    symbols int [M] --FrequencyTable.from_symbols--> table (offset, weights: int, sum 2**24)
    [(symbols_g, table_g), ...] --coder.encode--> payload bytes
    payload bytes --coder.reader--> reader.read(table_g, count_g) for each group in order, then reader.finish()

A table's weights are integers that sum to exactly 2**PRECISION_BITS, every symbol of its alphabet >= 1, so
encoder and decoder on any machine code with the same probabilities bit for bit. Tables travel as their
symbol counts (`write_table` / `read_table`); the weights are derived from counts with integer arithmetic only.
Coders are registered by a stable id (the `.psem` header names it); `coder_for_id` refuses unknown ids. One id
may have several implementations that write identical bytes: constriction-ans/1 is constriction's ANS coder where
it is installed (an optional speed-up), else `ans_portable.PortableAnsCoder` (numpy + Python; constriction has no
aarch64 wheel). Each coder names its `implementation`, which `prosemc encode --json` reports.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Protocol, Sequence

import numpy as np

from prosemc.errors import CodecError

PRECISION_BITS = 24  # constriction's default categorical precision; weights sum to 2**24
MAX_ALPHABET = 4096  # a table covers at most this many consecutive symbols
MAX_SYMBOL_MAGNITUDE = 1 << 20  # table offsets and symbols stay within +-this


@dataclass(frozen=True)
class FrequencyTable:
    """An exact fixed-point model of symbols offset .. offset + len(weights) - 1 (weights sum to 2**24)."""

    offset: int
    weights: np.ndarray  # int64 [K], K >= 1, each >= 1

    @property
    def alphabet_size(self) -> int:
        return int(self.weights.shape[0])

    @classmethod
    def from_counts(cls, offset: int, counts: np.ndarray) -> "FrequencyTable":
        """Quantise symbol counts [K] (int, sum > 0) to integer weights summing to 2**24, each >= 1."""
        counts = np.asarray(counts, dtype=np.int64)
        size = counts.shape[0]
        total_count = int(counts.sum())
        if size < 1 or size > MAX_ALPHABET or not 0 < total_count < 1 << 38 or int(counts.min()) < 0:
            raise CodecError(f"cannot build a frequency table from {size} counts summing to {total_count}")
        free_weight = (1 << PRECISION_BITS) - size
        weights = 1 + (counts * free_weight) // total_count  # exact in int64: counts < 2**38, free < 2**24
        weights[int(np.argmax(counts))] += (1 << PRECISION_BITS) - int(weights.sum())
        return cls(offset=int(offset), weights=weights)

    @classmethod
    def from_symbols(cls, symbols: np.ndarray) -> tuple["FrequencyTable", np.ndarray]:
        """The table of symbols [M] (M >= 1) and its counts [K] over min(symbols) .. max(symbols)."""
        low, high = int(symbols.min()), int(symbols.max())
        if high - low + 1 > MAX_ALPHABET or max(-low, high) > MAX_SYMBOL_MAGNITUDE:
            raise CodecError(
                f"symbols span {low}..{high}, more than the {MAX_ALPHABET}-symbol alphabet a table allows; "
                "use finer quantiser steps between layers (a smaller step ratio)"
            )
        counts = np.bincount(symbols - low, minlength=high - low + 1).astype(np.int64)
        return cls.from_counts(low, counts), counts


class SymbolReader(Protocol):
    """Reads groups of symbols back from one payload, in the order they were encoded."""

    def read(self, table: FrequencyTable, count: int) -> np.ndarray:
        """The next count symbols [count] (int64), coded with table."""
        ...

    def finish(self) -> None:
        """Check that the payload held exactly the symbols read; CodecError otherwise."""
        ...


class EntropyCoder(Protocol):
    """Codes groups of symbols, each group with its own frequency table, into one payload."""

    coder_id: str
    implementation: str  # which implementation of coder_id this is, e.g. "constriction" or "portable"

    def encode(self, groups: Sequence[tuple[np.ndarray, FrequencyTable]]) -> bytes:
        """Code each group's symbols [M_g] with its table; a reader returns them in the same order."""
        ...

    def reader(self, payload: bytes) -> SymbolReader:
        """A reader over payload; every corruption it meets raises CodecError."""
        ...


class ConstrictionAnsCoder:
    """constriction's ANS stack coder (64-bit state, 32-bit words, little-endian in the payload).

    ANS rather than the range coder: every layer's symbols are known before coding, so the stack order costs
    nothing, and ANS is the faster and tighter of the two (no per-stream flush overhead beyond one state).
    A group whose table has one symbol costs no bits and is not coded at all.
    """

    coder_id = "constriction-ans/1"
    implementation = "constriction"

    def __init__(self) -> None:
        try:
            import constriction  # noqa: F401  (an edge without constriction gets a clear error)
        except ImportError as error:  # pragma: no cover - depends on the installation
            raise CodecError(
                f"entropy coder {self.coder_id!r} needs the 'constriction' package, which is not installed; "
                "install it with `pip install constriction` (no aarch64 wheel: build it with a Rust toolchain)"
            ) from error

    def encode(self, groups: Sequence[tuple[np.ndarray, FrequencyTable]]) -> bytes:
        import constriction

        coder = constriction.stream.stack.AnsCoder()
        for symbols, table in reversed(groups):
            if table.alphabet_size < 2 or symbols.size == 0:
                continue
            coder.encode_reverse(np.ascontiguousarray(symbols - table.offset, dtype=np.int32), _categorical(table))
        return coder.get_compressed().astype("<u4").tobytes()

    def reader(self, payload: bytes) -> "ConstrictionAnsReader":
        return ConstrictionAnsReader(self.coder_id, payload)


def _categorical(table: FrequencyTable):  # -> constriction.stream.model.Categorical
    """constriction's model with exactly table.weights as its fixed-point probabilities.

    constriction's fast quantiser maps float probabilities p_i to weight_i = floor(C_{i+1} s) - floor(C_i s) + 1,
    C_i the prefix sums and s = (2**24 - K) / sum(p). With p_i = weight_i - 1 (summing exactly to 2**24 - K, so
    s == 1.0 and every value exact in float64) it reproduces the integer weights exactly.
    """
    model = table.__dict__.get("_categorical")  # built once per table: tables are reused for every layer and image
    if model is None:
        import constriction

        model = constriction.stream.model.Categorical((table.weights - 1).astype(np.float64), perfect=False)
        table.__dict__["_categorical"] = model
    return model


def payload_words(coder_id: str, payload: bytes) -> np.ndarray:
    """An ANS payload as its little-endian 32-bit words [W] uint32; CodecError if it is not whole words."""
    if len(payload) % 4:
        raise CodecError(
            f"corrupt {coder_id} payload: {len(payload)} bytes is not a whole number of 32-bit words; "
            "the layer was truncated or damaged, re-send it"
        )
    return np.frombuffer(payload, dtype="<u4").astype(np.uint32)


class ConstrictionAnsReader:
    """Reads symbol groups from a constriction-ans/1 payload."""

    def __init__(self, coder_id: str, payload: bytes) -> None:
        import constriction

        self.coder_id = coder_id
        words = payload_words(coder_id, payload)
        try:
            self._coder = constriction.stream.stack.AnsCoder(words)
        except Exception as error:  # constriction rejects some malformed word sequences up front
            raise self._corrupt(error) from error

    def _corrupt(self, error: Exception) -> CodecError:
        return CodecError(f"corrupt {self.coder_id} payload ({error}); the layer is damaged, re-send it")

    def read(self, table: FrequencyTable, count: int) -> np.ndarray:
        if table.alphabet_size < 2 or count == 0:
            return np.full(count, table.offset, dtype=np.int64)
        try:
            symbols = self._coder.decode(_categorical(table), count)
        except Exception as error:
            raise self._corrupt(error) from error
        return np.asarray(symbols, dtype=np.int64) + table.offset

    def finish(self) -> None:
        if not self._coder.is_empty():
            raise CodecError(
                f"corrupt {self.coder_id} payload: data left over after decoding all symbols; "
                "the layer is damaged or belongs to another file"
            )


def _portable_ans() -> EntropyCoder:
    from prosemc.codec.ans_portable import PortableAnsCoder

    return PortableAnsCoder()


# coder id -> implementations, fastest first; all of one id write and read the same bytes.
ENTROPY_CODERS: dict[str, tuple[Callable[[], EntropyCoder], ...]] = {
    ConstrictionAnsCoder.coder_id: (ConstrictionAnsCoder, _portable_ans),
}
DEFAULT_CODER_ID = ConstrictionAnsCoder.coder_id


def coder_for_id(coder_id: str, portable: bool = False) -> EntropyCoder:
    """The entropy coder registered under coder_id; CodecError naming the id and the known ones otherwise.

    Uses the fastest implementation that imports here (constriction where it is installed, else the portable one);
    portable=True forces the last, dependency-free one.
    """
    implementations = ENTROPY_CODERS.get(coder_id)
    if implementations is None:
        known = ", ".join(sorted(ENTROPY_CODERS))
        raise CodecError(
            f"unknown entropy coder id {coder_id!r} (this prosemc knows: {known}); "
            "upgrade prosemc or re-encode the file with a known coder"
        )
    if portable:
        return implementations[-1]()
    for make in implementations[:-1]:
        try:
            return make()
        except CodecError:  # its library is not installed here: fall through to the next implementation
            continue
    return implementations[-1]()


# --- compact table serialisation: unsigned LEB128 varints ------------------------------------------------


def write_varint(value: int, out: bytearray) -> None:
    """Append a non-negative int as an LEB128 varint."""
    if value < 0:
        raise CodecError(f"internal error: varint of negative value {value}")
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return


def read_varint(data: bytes, position: int, limit: int) -> tuple[int, int]:
    """Read one varint at position; return (value, new position). Values above limit are corruption."""
    value = 0
    for shift in range(0, 64, 7):
        if position >= len(data):
            raise CodecError("corrupt layer payload: it ends inside a table; the layer was truncated")
        byte = data[position]
        position += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            if value > limit:
                raise CodecError(f"corrupt layer payload: table value {value} exceeds the limit {limit}")
            return value, position
    raise CodecError("corrupt layer payload: over-long varint in a table")


def zigzag(value: int) -> int:
    return 2 * value if value >= 0 else -2 * value - 1


def unzigzag(value: int) -> int:
    return value // 2 if value % 2 == 0 else -(value + 1) // 2


def write_table(counts: np.ndarray | None, offset: int, out: bytearray) -> None:
    """Append a table as varints: zigzag(offset), alphabet size K, then K counts; K = 0 marks an empty group."""
    if counts is None or counts.size == 0:
        write_varint(0, out)
        write_varint(0, out)
        return
    write_varint(zigzag(offset), out)
    write_varint(int(counts.shape[0]), out)
    for count in counts.tolist():
        write_varint(int(count), out)


def read_table(data: bytes, position: int, max_total: int) -> tuple[FrequencyTable | None, int, int]:
    """Read a table written by write_table: (table or None if empty, its symbol count, new position).

    The caller checks the symbol count against the group it codes; counts above max_total are corruption.
    """
    offset_code, position = read_varint(data, position, 2 * MAX_SYMBOL_MAGNITUDE)
    size, position = read_varint(data, position, MAX_ALPHABET)
    if size == 0:
        return None, 0, position
    counts = np.empty(size, dtype=np.int64)
    for index in range(size):
        counts[index], position = read_varint(data, position, max_total)
    total = int(counts.sum())
    if total == 0 or total > max_total:
        raise CodecError(f"corrupt layer payload: a table counts {total} symbols, outside 1..{max_total}")
    return FrequencyTable.from_counts(unzigzag(offset_code), counts), total, position
