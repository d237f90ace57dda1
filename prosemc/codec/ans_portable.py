"""A numpy + Python coder writing and reading exactly the bytes of constriction's ANS coder ("constriction-ans/1").

For machines without a constriction wheel (aarch64 edge boards): same coder id, same payload, bit for bit, so a
cloud with constriction decodes what an edge without it encoded, and the other way round.

    rANS, 64-bit state, 32-bit words, PRECISION_BITS = 24 (constriction's DefaultAnsCoder):
      encode s (cumulative c, weight f):  if state >> 40 >= f: push state & 0xffffffff; state >>= 32
                                          state = (state // f) << 24 | (c + state % f)
                                                = state + (state // f) * (2**24 - f) + c
      payload = pushed words, then the state's nonzero 32-bit chunks, least significant first (little-endian)
      decode: quantile = state & 0xffffff; s: c_s <= quantile < c_s + f_s; state = (state >> 24) * f + quantile - c
              if state < 2**32 and words remain: state = state << 32 | pop()

One stack means one state, so the per-symbol recurrence stays a Python loop. Everything around it is vectorised
across the coder groups: the weights and cumulative starts of every symbol of every group come from one numpy
gather over the concatenated tables, so the loop touches only Python ints (about 0.2 us per symbol on one x86
core; `prosemc bench export` measures it on the `lite` layers).
"""

from __future__ import annotations

from bisect import bisect_right
from typing import Sequence

import numpy as np

from prosemc.codec.entropy import PRECISION_BITS, FrequencyTable, payload_words
from prosemc.errors import CodecError

_WORD_BITS = 32
_WORD_MASK = (1 << _WORD_BITS) - 1
_QUANTILE_MASK = (1 << PRECISION_BITS) - 1
_TOTAL = 1 << PRECISION_BITS
_RENORM_SHIFT = 64 - PRECISION_BITS
_STATE_FLOOR = 1 << (64 - _WORD_BITS)


def symbol_parameters(groups: Sequence[tuple[np.ndarray, FrequencyTable]]) -> tuple[list[int], list[int]]:
    """Weight f and cumulative start c of every coded symbol, in encoding order (last group's last symbol first).

    Groups whose table has a single symbol cost no bits and are skipped, as constriction's coder skips them.
    """
    coded = [(symbols, table) for symbols, table in groups if table.alphabet_size >= 2 and symbols.size]
    if not coded:
        return [], []
    bases: dict[int, int] = {}  # id(table) -> position of its first symbol in the concatenated tables
    weights, starts, size = [], [], 0
    for _, table in coded:
        if id(table) not in bases:
            bases[id(table)] = size
            size += table.alphabet_size
            weights.append(table.weights)
            starts.append(np.cumsum(table.weights) - table.weights)
    shift = np.array([bases[id(table)] - table.offset for _, table in coded], dtype=np.int64)
    index = np.concatenate([symbols for symbols, _ in coded]).astype(np.int64)
    index += np.repeat(shift, [symbols.size for symbols, _ in coded])
    index = index[::-1]
    return np.concatenate(weights)[index].tolist(), np.concatenate(starts)[index].tolist()


class PortableAnsCoder:
    """constriction-ans/1 without constriction (bit-identical to ConstrictionAnsCoder)."""

    coder_id = "constriction-ans/1"
    implementation = "portable"

    def encode(self, groups: Sequence[tuple[np.ndarray, FrequencyTable]]) -> bytes:
        weights, starts = symbol_parameters(groups)
        words: list[int] = []
        push = words.append
        state = 0
        for weight, start in zip(weights, starts):
            if state >> _RENORM_SHIFT >= weight:
                push(state & _WORD_MASK)
                state >>= _WORD_BITS
            state += (state // weight) * (_TOTAL - weight) + start
        while state:
            push(state & _WORD_MASK)
            state >>= _WORD_BITS
        return np.array(words, dtype="<u4").tobytes()

    def reader(self, payload: bytes) -> "PortableAnsReader":
        return PortableAnsReader(self.coder_id, payload)


class PortableAnsReader:
    """Reads symbol groups from a constriction-ans/1 payload without constriction."""

    def __init__(self, coder_id: str, payload: bytes) -> None:
        self.coder_id = coder_id
        self._words = payload_words(coder_id, payload).tolist()
        self._state = 0
        self._tables: dict[int, tuple[FrequencyTable, list[int], list[int], list[int]]] = {}
        if self._words:
            first = self._words.pop()
            if first == 0:
                raise CodecError(f"corrupt {coder_id} payload (it ends in a zero word); the layer is damaged")
            self._state = first
            while self._words and self._state < _STATE_FLOOR:
                self._state = (self._state << _WORD_BITS) | self._words.pop()

    def _lists(self, table: FrequencyTable) -> tuple[list[int], list[int], list[int]]:
        """(weights, cumulative starts, cumulative ends) of a table as Python lists, once per table and reader."""
        cached = self._tables.get(id(table))
        if cached is None or cached[0] is not table:
            ends = np.cumsum(table.weights)
            cached = (table, table.weights.tolist(), (ends - table.weights).tolist(), ends.tolist())
            self._tables[id(table)] = cached
        return cached[1], cached[2], cached[3]

    def read(self, table: FrequencyTable, count: int) -> np.ndarray:
        if table.alphabet_size < 2 or count == 0:
            return np.full(count, table.offset, dtype=np.int64)
        weights, starts, ends = self._lists(table)
        words, state = self._words, self._state
        out = [0] * count
        for position in range(count):
            quantile = state & _QUANTILE_MASK
            index = bisect_right(ends, quantile)  # the symbol whose interval [start, end) holds the quantile
            out[position] = index
            state = (state >> PRECISION_BITS) * weights[index] + quantile - starts[index]
            if state < _STATE_FLOOR and words:
                state = (state << _WORD_BITS) | words.pop()
        self._state = state
        return np.array(out, dtype=np.int64) + table.offset

    def finish(self) -> None:
        if self._words or self._state:
            raise CodecError(
                f"corrupt {self.coder_id} payload: data left over after decoding all symbols; "
                "the layer is damaged or belongs to another file"
            )
