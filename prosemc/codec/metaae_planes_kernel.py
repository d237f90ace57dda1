"""The metaae/1 token/2 encoder as one compiled loop per image (numba, optional): the same constriction-ans/1
bytes as the numpy path of prosemc.codec.metaae_planes in about a third of its time, at ~0.5 s once per process.

    coefficients c [N * D] (the transform's output) --clip to the block limit--> sign(c) * floor(|c| / finest step)
    per layer k, over the plan's runs (StreamPlan: consecutive coefficients the layer codes alike):
        each entry's symbol and table (as metaae_planes.layer_symbols), computed without branches; appended to its
        table's list, newest first -- the tables in decreasing order, each newest first, is the order rANS codes
        grouped_symbols' groups in, so nothing is sorted
        --rANS (ans_portable's recurrence: 64-bit state, 32-bit words, 24-bit weights)--> the layer's words
    floor(state / weight) is a multiply-high by the weight's precomputed reciprocal (exact for states below 2**63,
    see `reciprocals`); above that, or for weight 1, a true division. The symbols are not range-checked one by one:
    KernelTables refuses tables that do not cover every symbol the schedule can produce (PlaneWeights.symbol_reach).

The numpy path stays the reference and the decoder; tests check that both write identical bytes.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np

from prosemc.codec.entropy import ConstrictionAnsCoder, FrequencyTable
from prosemc.errors import CodecError

CODER_ID = ConstrictionAnsCoder.coder_id  # the payloads it writes


def available() -> bool:
    """Whether numba imports here (the kernel is an optional speed-up: `pip install numba`)."""
    return _kernel() is not None


@dataclass(frozen=True)
class KernelTables:
    """Every context's table as rows of one array, for the kernel: symbol s of context c is row first[c] + s."""

    first: np.ndarray  # [C] int64: the row of context c's symbol 0 (its first row minus its offset)
    table: np.ndarray  # [T, 4] uint64: weight, cumulative weight before the symbol, reciprocal, shift (`reciprocals`)

    @classmethod
    def build(cls, tables: tuple[FrequencyTable, ...], lowest: np.ndarray, highest: np.ndarray) -> "KernelTables":
        """From the tables and the lowest / highest symbol [C] each context can meet (lowest > highest: none); a
        CodecError if a table does not cover them (the kernel does not check symbols one by one)."""
        offsets = np.array([t.offset for t in tables], dtype=np.int64)
        sizes = np.array([t.alphabet_size for t in tables], dtype=np.int64)
        used = lowest <= highest
        if (used & ((lowest < offsets) | (highest > offsets + sizes - 1))).any():
            raise CodecError("these metaae weights' tables do not cover the symbols their schedule codes (a damaged "
                             "or hand-made file); re-run `prosemc fit`")
        weight = np.concatenate([t.weights for t in tables]).astype(np.int64)
        start = np.concatenate([np.cumsum(t.weights) - t.weights for t in tables]).astype(np.int64)
        reciprocal, shift = reciprocals(weight)
        rows = np.concatenate([[0], np.cumsum(sizes)[:-1]]) - offsets
        return cls(rows.astype(np.int64), np.ascontiguousarray(np.stack(
            [weight.astype(np.uint64), start.astype(np.uint64), reciprocal, shift], axis=1)))


def reciprocals(weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(r, s) [T] uint64 per weight f >= 2 with floor(x / f) == mulhi64(x, r) >> s for every x < 2**63 (the
    reciprocal of Alverson's integer division, as in ryg_rans' rans64); weight 1 gets (0, 0) and is divided."""
    out_r, out_s = np.zeros(len(weights), dtype=np.uint64), np.zeros(len(weights), dtype=np.uint64)
    for i, f in enumerate(int(v) for v in weights):
        if f < 2:
            continue
        shift = (f - 1).bit_length()  # 2**(shift - 1) < f <= 2**shift
        high = 1 << (shift + 31)
        out_r[i] = ((((f - 1) + ((high % f) << 32)) // f) + ((high // f) << 32)) & ((1 << 64) - 1)
        out_s[i] = shift - 1
    return out_r, out_s


@lru_cache(maxsize=1)
def _kernel() -> Any:
    """The compiled encoder (numba compiles it on first use and caches it on disk), or None without numba."""
    try:
        from prosemc.codec.metaae_planes_numba import encode
    except ImportError:
        return None
    return encode


def encode_layers(coefficients: np.ndarray, limit: np.ndarray, finest: np.ndarray, plan: Any,
                  tables: KernelTables, layers: int) -> list[bytes]:
    """Layers 0..layers-1 as constriction-ans/1 payloads, from coefficients [N * D] (whole tiles) with the block
    limits and finest steps [F * D] of one tile's positions and the plan (metaae_planes.StreamPlan)."""
    words, word_end = _kernel()(np.ascontiguousarray(coefficients), limit, finest, plan.runs, plan.static_key,
                                plan.layer_runs[: layers + 1], plan.layer_entries[: layers + 1], tables.first,
                                tables.table)
    data = words.astype("<u4").tobytes()
    return [data[4 * int(word_end[k]) : 4 * int(word_end[k + 1])] for k in range(layers)]
