"""The refinement levels of metaae/1 (levels 2 and up): context-modelled residual quantisation of tokens [N, D].

Shared by the encoder and the decoder, so both build identical contexts from integers only.
"""

from __future__ import annotations

import math
from typing import Any, Sequence, TYPE_CHECKING

import numpy as np

from prosemc.codec.entropy import FrequencyTable
from prosemc.codec.metaae_weights import (
    ACTIVITY_STATES,
    NEIGHBOUR_STATES,
    PEAK_CAP,
    POOLED_ACTIVITY_EDGES,
)
from prosemc.errors import CodecError

if TYPE_CHECKING:
    from prosemc.codec.metaae import MetaAutoEncoderCodec


ACTIVITY_EDGES = np.array(POOLED_ACTIVITY_EDGES)


class RefinementState:
    """Encoder and decoder state of the refinement levels: reconstruction [N, D], significance [N, D], contexts.

    Each refinement layer codes, with learned tables chosen by context:
      1. per channel, the peak |symbol| of its not-yet-significant tokens (capped at 3); context = channel already
         active, channel group, bucket of the predicted channel maximum;
      2. not-yet-significant coefficients of channels with peak >= 1; context = peak, bucket of the prediction,
         significant 4-neighbours in the same channel (tokens on a square grid), significant values in the token;
      3. already-significant coefficients (refinement symbols); one context.
    Contexts come only from integers (autoencoder symbols through a fixed-point predictor, earlier symbols), so
    both sides group and model every coefficient identically on any machine.
    """

    def __init__(self, codec: "MetaAutoEncoderCodec", symbols: np.ndarray, rows: int) -> None:
        w = codec.weights
        assert w.refine is not None
        self.refine = refine = w.refine
        self.clip = w.clip
        # float64 products and sums of integers below 2**53 are exact in any order: bit-identical buckets
        if refine.pred_weight.ndim == 1:  # diagonal autoencoder
            prediction = symbols.astype(np.float64) * refine.pred_weight + refine.pred_bias  # [N or 1, D]
        else:
            prediction = symbols.astype(np.float64) @ refine.pred_weight + refine.pred_bias
        prediction = np.broadcast_to(prediction, (rows, prediction.shape[1]))
        self.buckets_count = len(refine.edges) + 1
        self.bucket = np.searchsorted(refine.edges, prediction.ravel(), side="left").reshape(prediction.shape)
        self.channel_bucket = np.searchsorted(refine.edges, prediction.max(axis=0), side="left")
        self.groups_count = int(refine.group.max()) + 1
        self.applied = 0
        side = int(round(math.sqrt(rows)))
        self.grid = side if side * side == rows else 0
        self.reconstruction = np.zeros(prediction.shape, dtype=np.float64)
        self.significant = np.zeros(prediction.shape, dtype=bool)

    @property
    def peak_contexts(self) -> int:
        return 2 * self.groups_count * self.buckets_count

    @property
    def coefficient_contexts(self) -> int:
        return PEAK_CAP * self.buckets_count * NEIGHBOUR_STATES * ACTIVITY_STATES

    def _neighbours(self) -> np.ndarray:
        """Significant 4-neighbours [N, D] of every value in its channel, capped at NEIGHBOUR_STATES - 1."""
        if not self.grid:
            return np.zeros(self.significant.shape, dtype=np.int64)
        side, dim = self.grid, self.significant.shape[1]
        grid = self.significant.reshape(side, side, dim).astype(np.int64)
        count = np.zeros_like(grid)
        count[1:] += grid[:-1]
        count[:-1] += grid[1:]
        count[:, 1:] += grid[:, :-1]
        count[:, :-1] += grid[:, 1:]
        return np.minimum(count, NEIGHBOUR_STATES - 1).reshape(side * side, dim)

    def peak_keys(self) -> np.ndarray:
        """Context [D] of every channel's peak symbol."""
        active = self.significant.any(axis=0).astype(np.int64)
        return (active * self.groups_count + self.refine.group) * self.buckets_count + self.channel_bucket

    def coefficient_keys(self, peaks: np.ndarray) -> np.ndarray:
        """Context [N, D] of every coefficient: 0..C-1 insignificant, C significant, C + 1 not coded (peak 0)."""
        contexts = self.coefficient_contexts
        key = (np.minimum(peaks, PEAK_CAP)[None, :] - 1) * self.buckets_count + self.bucket
        activity = np.searchsorted(ACTIVITY_EDGES, self.significant.sum(axis=1), side="left")  # [N]
        key = (key * NEIGHBOUR_STATES + self._neighbours()) * ACTIVITY_STATES + activity[:, None]
        key = np.where(peaks[None, :] == 0, contexts + 1, key)
        return np.where(self.significant, contexts, key)

    def quantise(self, target: np.ndarray, k: int) -> np.ndarray:
        """Symbols [N, D] (int64) of target - reconstruction at level k (dead zone where not yet significant)."""
        step = self.refine.steps[k]
        residual = target - self.reconstruction
        scaled = np.abs(residual) / step + np.where(self.significant, 0.5, self.refine.deadzone)
        return (np.floor(scaled) * np.sign(residual)).astype(np.int64)

    def peaks_of(self, q: np.ndarray) -> np.ndarray:
        return np.minimum(np.where(self.significant, 0, np.abs(q)).max(axis=0), PEAK_CAP)

    def streams(self, q: np.ndarray) -> list[tuple[np.ndarray, np.ndarray, int]]:
        """(keys, symbols, first table index) of the peak and coefficient streams, in position order."""
        peaks = self.peaks_of(q)
        keys = self.coefficient_keys(peaks).ravel()
        coded = keys <= self.coefficient_contexts
        return [(self.peak_keys(), peaks, 0), (keys[coded], q.ravel()[coded], self.peak_contexts)]

    def groups(self, q: np.ndarray, k: int) -> list[tuple[np.ndarray, FrequencyTable]]:
        tables = self.refine.tables[k]
        out = []
        for keys, symbols, base in self.streams(q):
            order = np.argsort(keys, kind="stable")
            counts = np.bincount(keys, minlength=1)
            flat = symbols[order]
            position = 0
            for key, count in enumerate(counts.tolist()):
                if count:
                    table = tables[base + key]
                    group = flat[position : position + count]
                    low, high = table.offset, table.offset + table.alphabet_size - 1
                    if group.min() < low or group.max() > high:  # cannot happen for tokens clipped to the range
                        raise CodecError(f"refinement symbols outside the table alphabet {low}..{high}")
                    out.append((group, table))
                position += count
        return out

    def _read_stream(self, reader: Any, keys: np.ndarray, tables: Sequence[FrequencyTable]) -> np.ndarray:
        order = np.argsort(keys, kind="stable")
        flat = np.empty(keys.shape[0], dtype=np.int64)
        position = 0
        for key, count in enumerate(np.bincount(keys, minlength=1).tolist()):
            if count:
                flat[position : position + count] = reader.read(tables[key], count)
            position += count
        out = np.empty_like(flat)
        out[order] = flat
        return out

    def read(self, reader: Any, k: int) -> np.ndarray:
        tables = self.refine.tables[k]
        peaks = self._read_stream(reader, self.peak_keys(), tables[: self.peak_contexts])
        if peaks.min() < 0 or peaks.max() > PEAK_CAP:
            raise CodecError(f"corrupt layer payload: channel peaks outside 0..{PEAK_CAP}")
        keys = self.coefficient_keys(peaks).ravel()
        coded = keys <= self.coefficient_contexts
        q = np.zeros(keys.shape[0], dtype=np.int64)
        q[coded] = self._read_stream(reader, keys[coded], tables[self.peak_contexts :])
        reader.finish()
        return q.reshape(self.significant.shape)

    def apply(self, q: np.ndarray, k: int) -> None:
        refine, step = self.refine, self.refine.steps[k]
        nonzero = q != 0
        fresh = nonzero & ~self.significant
        more = nonzero & self.significant
        values = q.astype(np.float64)
        self.reconstruction[fresh] = np.sign(values[fresh]) * (np.abs(values[fresh]) - refine.deadzone + refine.offset) * step
        self.reconstruction[more] += values[more] * step
        np.clip(self.reconstruction, *self.clip, out=self.reconstruction)
        self.significant |= nonzero
        self.applied = k + 1

    def tokens(self, coarse: np.ndarray | None, k: int | None = None) -> np.ndarray:
        """Tokens' [N, D] float32 after the levels applied so far.

        Not-yet-significant values lie in [0, (1 - deadzone) * step). Without a pooled estimate they stay 0 (the
        best guess: ~90 % of lite token values are exact zeros). With the decoded mean token m' (coarse [N, D],
        every row m'), each channel's not-yet-significant values get one shared value, clipped to that interval,
        that brings the channel's mean back to m'_c -- so the pooled classifier keeps what level 1 gave it --
        scaled by the level's learned fill weight (MSE-optimal on the training tokens; 0 at fine steps, where
        filling true zeros costs more than it gives).
        """
        out = np.where(self.significant, self.reconstruction, 0.0)
        if coarse is not None:
            k = self.applied - 1 if k is None else k
            threshold = (1.0 - self.refine.deadzone) * self.refine.steps[k]
            rows = out.shape[0]
            missing = coarse[0].astype(np.float64) * rows - out.sum(axis=0)
            free = (~self.significant).sum(axis=0)
            fill = self.refine.fill[k] * np.clip(missing / np.maximum(free, 1), 0.0, threshold)
            out = np.where(self.significant, out, fill[None, :])
        return out.astype(np.float32)
