"""Analytic quality estimates for significance-coded progressive codecs: predicted token cosine from the layers.

What a decoder knows after k layers of dead-zone scalar refinement with step s and threshold T = (1 - dz)·s:
  - significant values: reconstructed within a bin of width s; error ~ uniform, variance s²/12 each;
  - values not yet significant: somewhere in [0, T) (mostly exact zeros in sparse ReLU tokens). How much
    energy they hold is extrapolated from the octave counts: layer k made n_k values newly significant in
    [T, 2T); if the count grows by a factor r per halving of the threshold (r from n_k / n_{k-1}, at most
    GROWTH_CAP), the octaves below hold sum_i n_k r^i values of size ~T/2^(i-1), energy
    n_k · 7/3 · T² · (r/4) / (1 - r/4).
With x' the decoded token, e its error (uncorrelated with x'), and E|e|² its predicted energy, a token's cosine
to the truth is about <x', x' + a> / (|x'| · sqrt(|x'|² + E|e|²)) (a: what the decoder's fill explains of
the dead-zone values; 0 without a fill). The estimate is the mean over tokens, in [0, 1].
"""

from __future__ import annotations

import numpy as np

GROWTH_CAP = 3.0  # at most 3× more newly significant values per halving of the step (r = 4 would diverge)


def dead_zone_energy(new: int, previous: int | None, threshold: float, free: int, first_growth: float) -> float:
    """Expected energy Σx² of the `free` values still under `threshold` (see the module docstring).

    new, previous: values newly significant in the latest layer and the one before (None for the first,
    which uses `first_growth`). The result never exceeds free · T²/3 (uniform in the dead zone).
    """
    growth = min(new / max(previous, 1), GROWTH_CAP) if previous is not None else first_growth
    energy = new * 7.0 / 3.0 * threshold**2 * (growth / 4.0) / (1.0 - growth / 4.0)
    return min(energy, free * threshold**2 / 3.0)


def mean_cosine(cross: np.ndarray, true_energy: np.ndarray, decoded_energy: np.ndarray) -> float:
    """Mean over tokens of cross / sqrt(true_energy · decoded_energy), each [N] (0 for an empty token), in [0, 1]."""
    scale = np.sqrt(np.maximum(true_energy, 0.0) * np.maximum(decoded_energy, 0.0))
    cosine = np.where(scale > 0, cross / np.maximum(scale, 1e-300), 0.0)
    return float(np.clip(cosine, 0.0, 1.0).mean())


def token_cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine of each token [N] of [N, D] tensors (a token that is zero in both scores 1)."""
    a, b = a.astype(np.float64), b.astype(np.float64)
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    both_zero = ~a.any(axis=1) & ~b.any(axis=1)
    return np.where(norms > 0, (a * b).sum(1) / np.where(norms > 0, norms, 1.0), both_zero.astype(np.float64))
