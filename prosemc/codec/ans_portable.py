"""A pure-Python coder writing and reading exactly the bytes of constriction's ANS coder ("constriction-ans/1").

For machines without a constriction wheel (aarch64 edge boards): same coder id, same payload, bit for bit, so a
cloud with constriction decodes what an edge without it encoded, and the other way round. It is ~100x slower
than constriction (one Python loop step per symbol), which a few tens of thousands of symbols per layer afford.

    rANS, 64-bit state, 32-bit words, PRECISION_BITS = 24 (constriction's DefaultAnsCoder):
      encode s (cumulative c, weight f):  if state >> 40 >= f: push state & 0xffffffff; state >>= 32
                                          state = (state // f) << 24 | (c + state % f)
      payload = pushed words, then the state's nonzero 32-bit chunks, least significant first (little-endian)
      decode: quantile = state & 0xffffff; s: c_s <= quantile < c_s + f_s; state = (state >> 24) * f + quantile - c
              if state < 2**32 and words remain: state = state << 32 | pop()
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
_RENORM_SHIFT = 64 - PRECISION_BITS
_STATE_FLOOR = 1 << (64 - _WORD_BITS)


class PortableAnsCoder:
    """constriction-ans/1 in pure Python (bit-identical to ConstrictionAnsCoder)."""

    coder_id = "constriction-ans/1"

    def encode(self, groups: Sequence[tuple[np.ndarray, FrequencyTable]]) -> bytes:
        words: list[int] = []
        state = 0
        for symbols, table in reversed(groups):
            if table.alphabet_size < 2 or symbols.size == 0:
                continue
            weights = table.weights.tolist()
            cumulative = [0, *np.cumsum(table.weights)[:-1].tolist()]
            for index in reversed((symbols - table.offset).tolist()):
                weight = weights[index]
                if (state >> _RENORM_SHIFT) >= weight:
                    words.append(state & _WORD_MASK)
                    state >>= _WORD_BITS
                state = ((state // weight) << PRECISION_BITS) | (cumulative[index] + state % weight)
        while state:
            words.append(state & _WORD_MASK)
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
        if self._words:
            first = self._words.pop()
            if first == 0:
                raise CodecError(f"corrupt {coder_id} payload (it ends in a zero word); the layer is damaged")
            self._state = first
            while self._words and self._state < _STATE_FLOOR:
                self._state = (self._state << _WORD_BITS) | self._words.pop()

    def read(self, table: FrequencyTable, count: int) -> np.ndarray:
        if table.alphabet_size < 2 or count == 0:
            return np.full(count, table.offset, dtype=np.int64)
        weights = table.weights.tolist()
        cumulative = [0, *np.cumsum(table.weights)[:-1].tolist()]
        words, state = self._words, self._state
        out = [0] * count
        for position in range(count):
            quantile = state & _QUANTILE_MASK
            index = bisect_right(cumulative, quantile) - 1
            out[position] = index
            state = (state >> PRECISION_BITS) * weights[index] + quantile - cumulative[index]
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
