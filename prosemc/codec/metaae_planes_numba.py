"""numba kernels of prosemc.codec.metaae_planes_kernel (imported only where numba is installed; compiled on first
use, cached on disk)."""

from __future__ import annotations

from typing import Any

import numba
import numpy as np

from prosemc.codec.entropy import PRECISION_BITS

u64 = np.uint64
WORD_BITS = u64(32)
WORD_MASK = u64((1 << 32) - 1)
RENORM_SHIFT = u64(64 - PRECISION_BITS)  # push a word when state >= weight * 2**40
TOTAL = u64(1 << PRECISION_BITS)
EXACT_BELOW = u64(1 << 63)  # the reciprocals are exact for states below this


@numba.njit(inline="always")
def mulhi(a: Any, b: Any) -> Any:
    """The high 64 bits of the 128-bit product of two uint64."""
    a_lo, a_hi, b_lo, b_hi = a & WORD_MASK, a >> WORD_BITS, b & WORD_MASK, b >> WORD_BITS
    lolo, hilo, lohi = a_lo * b_lo, a_hi * b_lo, a_lo * b_hi
    cross = (lolo >> WORD_BITS) + (hilo & WORD_MASK) + lohi
    return a_hi * b_hi + (hilo >> WORD_BITS) + (cross >> WORD_BITS)


@numba.njit(cache=True, nogil=True, error_model="numpy")
def signed_magnitudes(coefficients: Any, limit: Any, finest: Any) -> Any:
    """sign(c) * floor(|c| / finest step) [N * D] int64 of coefficients [N * D] clipped to +-limit, with limit and
    finest [F * D] repeating every tile (0 where the finest step is 0)."""
    period = limit.shape[0]
    fine = np.empty(coefficients.shape[0], np.int64)
    for tile in range(coefficients.shape[0] // period):
        for p in range(period):  # (no i % period: numba's modulo costs ten times the rest of the loop)
            i = tile * period + p
            value = min(max(np.float64(coefficients[i]), -limit[p]), limit[p])
            magnitude = np.int64(np.floor(abs(value) / finest[p])) if finest[p] > 0 else 0
            fine[i] = -magnitude if value < 0 else magnitude
    return fine


@numba.njit(cache=True, nogil=True, error_model="numpy")
def encode(coefficients: Any, limit: Any, finest: Any, runs: Any, static_key: Any, layer_runs: Any, layer_entries: Any,
           first: Any, table: Any) -> Any:
    """(words [W] uint32, word_end [K + 1]): every layer's rANS words, layer k's being words[word_end[k]:
    word_end[k + 1]] (metaae_planes.StreamPlan holds the plan's arrays, KernelTables the tables')."""
    fine = signed_magnitudes(coefficients, limit, finest)
    layers = layer_runs.shape[0] - 1
    words = np.empty(static_key.shape[0] + 2 * layers, np.uint32)  # at most a word per symbol, two per final state
    word_end = np.zeros(layers + 1, np.int64)
    most = np.max(layer_entries[1:] - layer_entries[:-1])
    entries, previous = np.empty(most, np.int32), np.empty(most, np.int32)
    last = np.empty(first.shape[0], np.int32)
    n = 0
    for k in range(layers):
        last[:] = -1
        j = 0
        for r in range(layer_runs[k], layer_runs[k + 1]):  # each entry's symbol and table (layer_symbols)
            shift, known_shift, halvings, refine = runs[r, 2], runs[r, 3], runs[r, 4], runs[r, 5]
            for i in range(runs[r, 0], runs[r, 0] + runs[r, 1]):
                now = abs(fine[i]) >> shift
                known = now >> known_shift
                significant = np.int64(known > 0)  # (arithmetic, not a branch: the branch mispredicts)
                symbol = (significant * (now - (known << halvings))
                          + (1 - significant) * (now if fine[i] >= 0 else -now))
                key = significant * refine + (1 - significant) * np.int64(static_key[layer_entries[k] + j])
                entries[j] = first[key] + symbol  # its row of `table` (KernelTables checked that it has one)
                previous[j] = last[key]  # a list per table, newest first: the order rANS codes them in
                last[key] = j
                j += 1
        state = u64(0)
        for key in range(first.shape[0] - 1, -1, -1):  # rANS codes the last table's newest symbol first
            j = last[key]
            while j >= 0:
                row = entries[j]
                weight = table[row, 0]
                if (state >> RENORM_SHIFT) >= weight:
                    words[n] = np.uint32(state & WORD_MASK)
                    n += 1
                    state >>= WORD_BITS
                if weight < u64(2) or state >= EXACT_BELOW:
                    quotient = state // weight
                else:
                    quotient = mulhi(state, table[row, 2]) >> table[row, 3]
                state = state + quotient * (TOTAL - weight) + table[row, 1]
                j = previous[j]
        while state:
            words[n] = np.uint32(state & WORD_MASK)
            n += 1
            state >>= WORD_BITS
        word_end[k + 1] = n
    return words[:n], word_end
