"""The metaae/1 token/2 encoder as one compiled loop per image (numba, optional): the same constriction-ans/1
bytes as the numpy path of prosemc.codec.metaae_planes, without its ~20 numpy passes over ~10**5 entries.

    coefficients c [N * D] (the transform's output) --clip to the block limit, floor(|c| / finest step)--> fine, sign
    per layer k (StreamPlan: every layer's entries, concatenated):
        symbol and table of each entry (as metaae_planes.layer_symbols), the alphabet checked
        --stable counting sort by table--> the groups grouped_symbols gives (tables in increasing order)
        --rANS, last symbol first (ans_portable's recurrence: 64-bit state, 32-bit words, 24-bit weights)--> words
    floor(state / weight) is a multiply-high by the weight's precomputed reciprocal (exact for states below 2**63,
    see `reciprocals`); above that, or for weight 1, a true division.

Used where numba imports (`available()`); otherwise, and for decoding, the numpy path runs. A test checks that both
write identical bytes.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np

from prosemc.codec.entropy import ConstrictionAnsCoder, FrequencyTable
from prosemc.codec.metaae_token import alphabet_error

CODER_ID = ConstrictionAnsCoder.coder_id  # the payloads it writes



def available() -> bool:
    """Whether numba imports here (the kernel is an optional speed-up: `pip install numba`)."""
    return _kernel() is not None


@dataclass(frozen=True)
class KernelTables:
    """Every context's table concatenated [T], with per-context [C] positions and alphabets, for the kernel."""

    base: np.ndarray  # [C] int64: position of context c's first symbol in the arrays below
    low: np.ndarray  # [C] int64: lowest codable symbol (the table's offset)
    high: np.ndarray  # [C] int64: highest codable symbol
    weight: np.ndarray  # [T] uint64
    start: np.ndarray  # [T] uint64: cumulative weight before the symbol
    reciprocal: np.ndarray  # [T] uint64
    shift: np.ndarray  # [T] uint64

    @classmethod
    def build(cls, tables: tuple[FrequencyTable, ...]) -> "KernelTables":
        sizes = np.array([t.alphabet_size for t in tables], dtype=np.int64)
        base = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
        low = np.array([t.offset for t in tables], dtype=np.int64)
        weight = np.concatenate([t.weights for t in tables]).astype(np.int64)
        start = np.concatenate([np.cumsum(t.weights) - t.weights for t in tables]).astype(np.int64)
        reciprocal, shift = reciprocals(weight)
        return cls(base, low, low + sizes - 1, weight.astype(np.uint64), start.astype(np.uint64), reciprocal, shift)


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
    """Layers 0..layers-1 as constriction-ans/1 payloads, from coefficients [N * D] (float32, whole tiles) with the
    block limits and finest steps [F * D] of one tile's positions; CodecError for symbols outside the alphabet."""
    encode = _kernel()
    words, word_end, failed = encode(
        np.ascontiguousarray(coefficients), limit, finest, plan.runs, plan.static_key,
        plan.layer_runs[: layers + 1], plan.layer_entries[: layers + 1], tables.base, tables.low, tables.high,
        tables.weight, tables.start, tables.reciprocal, tables.shift)
    if failed >= 0:
        raise alphabet_error(int(failed))
    data = words.astype("<u4").tobytes()
    return [data[4 * int(word_end[k]) : 4 * int(word_end[k + 1])] for k in range(layers)]
