"""metaae/1 with token/2 weights: the per-token Meta AutoEncoder for any model, as bit planes of a grid transform.

    edge   tokens x [N, D] --GridTransform (DCT over the token grid, per-band rotations)--> coefficients c [N, D]
           blocks b = (band group of the frequency) x (channel group); schedule: step level of every block after
           each layer (level j: step step0 / 2**j), ordered by rate-distortion slope when it was trained
           layer k, every block whose level rises from p to j:
             not yet significant:  symbol = sign(c) * floor(|c| / step_j)             (0 while |c| < step_j)
             significant:          symbol = the j - p new bits of floor(|c| / step_j)  (0 .. 2**(j - p) - 1)
           ANS-coded with integer tables shared by all layers, chosen by an integer context (numpy below, or the
           same bytes from one compiled loop: prosemc.codec.metaae_planes_kernel)
    cloud  any prefix --> |c'| = (m + delta) * step of the block's level where m > 0, else 0 --> tokens' = inverse

Embedded dead-zone quantisation (as JPEG 2000's bit planes): halving a block's step costs one refinement bit per
significant coefficient and sends the rest as significance; the layers are nested, so any prefix decodes to the
best reconstruction of what it holds. A symbol's table is chosen by an integer context the decoder knows: for a
coefficient not yet significant, (first coding of its block) x (its trained deviation against the step, in half
octaves); for a significant one, the number of halvings. (Significant neighbours on the frequency grid and per-
frequency activity, as token/1 used, saved under 2 % here and cost most of the coding time.) Every table gives each
symbol at most 1 - 2**-9 of the probability, so a decoder refuses a layer whose payload is too short for its
symbols before decoding anything.

The error head (`quality_estimate`): per token, sqrt(S / (S + E)) with S the decoded token's energy and E the
expected error energy (step^2 / 12 on significant coefficients, the trained mean c^2 of a block's coefficients still
insignificant after the layer on the others, spread onto tokens through the transform), calibrated per layer.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Sequence

import numpy as np

from prosemc.codec import metaae_planes_kernel
from prosemc.codec.base import EncodedTokens
from prosemc.codec.entropy import DEFAULT_CODER_ID, FrequencyTable
from prosemc.codec.limits import ans_payload_bytes
from prosemc.codec.metaae_token import (
    MAX_LAYERS,
    LayeredWeightsCodec,
    check_layer_room,
    check_shape,
    check_stream,
    check_tokens,
    grouped_symbols,
    read_grouped,
    stream_layer_count,
)
from prosemc.codec.metaae_transform import GridTransform, zigzag_index
from prosemc.codec.metaae_weights import (
    FORMAT_PLANES,
    MAX_HALVINGS,
    MAX_LEVEL,
    MAX_TABLE_WEIGHT,
    PLANE_CONTEXTS,
    RATIO_BUCKETS,
    RATIO_OFFSET,
    SIGNIFICANCE_CONTEXTS,
    plane_tensors_valid,
)
from prosemc.errors import CodecError

def block_map(rows: int, cols: int, band_start: Sequence[int], channel_start: Sequence[int], dim: int) -> np.ndarray:
    """Block [F, D] of every coefficient of a tile (F = rows * cols, or 1 without a grid): band group of its
    frequency (by u + v) x channel group."""
    zigzag = zigzag_index(rows, cols) if rows else np.zeros(1, dtype=np.int64)
    band = np.searchsorted(np.array(band_start[1:]), zigzag, side="right")
    channel = np.searchsorted(np.array(channel_start[1:]), np.arange(dim), side="right")
    return band[:, None] * len(channel_start) + channel[None, :]


@dataclass(frozen=True)
class LayerPlan:
    """What layer k codes for N token rows: flat indices [M] into [N * D] and their static context parts."""

    index: np.ndarray  # [M] int64
    static_key: np.ndarray  # [M] uint8: the table of a coefficient not yet significant (first coding x ratio)
    refine_key: np.ndarray  # [M] uint8: the table of a significant one (halvings)
    halvings: np.ndarray  # [M] int32: level rise j - p (0 for a block's first coding)
    shift: np.ndarray  # [M] int32: final level - j (the encoder's magnitudes are at the final level)
    known_shift: np.ndarray  # [M] int32: halvings, or 31 for a first coding (nothing known before)


@dataclass(frozen=True)
class StreamPlan:
    """Every layer's LayerPlan for N token rows as runs of consecutive coefficients that a layer codes alike (one
    block's channels in one token: ~40 entries a run), for the compiled encoder."""

    runs: np.ndarray  # [R, 6] int64: first coefficient, length, shift, known_shift, halvings, refine key
    static_key: np.ndarray  # [E] uint8: each entry's table while not yet significant
    layer_runs: np.ndarray  # [K + 1] int64: layer k's runs are runs[layer_runs[k]:layer_runs[k + 1]]
    layer_entries: np.ndarray  # [K + 1] int64: ... and its entries static_key[layer_entries[k]:...]

    @classmethod
    def join(cls, plans: Sequence[LayerPlan]) -> "StreamPlan":
        """The layers' plans [K], in order, as one stream plan."""
        runs = []
        for p in plans:
            columns = np.stack([p.index, p.shift, p.known_shift, p.halvings, p.refine_key]).astype(np.int64)
            new = np.ones(len(p.index), dtype=bool)
            new[1:] = (np.diff(p.index) != 1) | (np.diff(columns[1:], axis=1) != 0).any(axis=0)
            first = np.flatnonzero(new)
            length = np.diff(np.append(first, len(p.index)))
            runs.append(np.column_stack([columns[0, first], length, columns[1:, first].T]))
        return cls(np.concatenate(runs), np.concatenate([p.static_key for p in plans]),
                   np.cumsum([0] + [len(r) for r in runs]), np.cumsum([0] + [len(p.index) for p in plans]))


@dataclass(frozen=True)
class PlaneWeights:
    """A loaded token/2 weights file (see prosemc.codec.metaae_weights.PLANE_TENSORS)."""

    path: str
    sha256: str
    model: str
    token_dim: int
    transform: GridTransform
    log_sigma: np.ndarray  # [F, D] int64
    band_start: tuple[int, ...]  # [NB]
    channel_start: tuple[int, ...]  # [NC]
    limit: np.ndarray  # [B] float64
    levels: np.ndarray  # [K, B] int64, -1 = not coded yet
    step0_exponent: int  # step0 = 2 ** step0_exponent
    tables: tuple[FrequencyTable, ...]  # [PLANE_CONTEXTS]
    insignificant: np.ndarray  # [K, B] float64
    calibration: np.ndarray  # [K, 2] float64
    delta: float

    @property
    def layer_count(self) -> int:
        return int(self.levels.shape[0])

    @property
    def latent_dim(self) -> int:
        return self.token_dim

    @cached_property
    def alphabets(self) -> tuple[np.ndarray, np.ndarray]:
        """Lowest and highest codable symbol [C] of each context's table."""
        return (np.array([t.offset for t in self.tables]),
                np.array([t.offset + t.alphabet_size - 1 for t in self.tables]))

    @cached_property
    def block_of_position(self) -> np.ndarray:
        """Block [F, D] of every coefficient of a tile: band group of its frequency x channel group."""
        return block_map(self.transform.rows, self.transform.cols, self.band_start, self.channel_start,
                         self.token_dim)

    @cached_property
    def symbol_reach(self) -> np.ndarray:
        """The largest |symbol| [C] each context can meet in this schedule (-1: never used): a block's first coding
        up to floor(limit / step), a later one below 2**h for h halvings, as significance and as refinement."""
        reach = np.full(PLANE_CONTEXTS, -1, dtype=np.int64)
        blocks = self.block_of_position.ravel()
        for k in range(self.layer_count):
            plan = self.plan(k, self.transform.positions)
            chosen = blocks[plan.index]
            first = np.floor(self.limit[chosen] / self.step(self.levels[k][chosen]))
            later = plan.halvings > 0
            most = np.where(later, 2 ** plan.halvings - 1, first).astype(np.int64)
            np.maximum.at(reach, plan.static_key, most)
            np.maximum.at(reach, plan.refine_key[later], most[later])
        return reach

    @cached_property
    def kernel_tables(self) -> metaae_planes_kernel.KernelTables:
        """The tables as the compiled encoder reads them; CodecError if they miss a symbol the schedule codes."""
        reach = self.symbol_reach
        lowest = np.where(np.arange(PLANE_CONTEXTS) < SIGNIFICANCE_CONTEXTS, -reach, 0)
        return metaae_planes_kernel.KernelTables.build(self.tables, np.where(reach >= 0, lowest, 1), reach)

    @cached_property
    def tile_bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """(clip limit, finest step) [F * D] float64 of every coefficient of a tile (step 0: never coded)."""
        blocks = self.block_of_position.ravel()
        return self.limit[blocks], self.step(self.levels[-1])[blocks]

    def step(self, level: np.ndarray) -> np.ndarray:
        """Quantiser step of each level (0 where the level is -1: nothing coded)."""
        level = np.asarray(level)
        return np.where(level >= 0, np.ldexp(1.0, self.step0_exponent - np.maximum(level, 0)), 0.0)

    def plan(self, k: int, rows: int) -> LayerPlan:
        """The coefficients layer k codes for `rows` token rows (cached per layer and row count)."""
        cache = self.__dict__.setdefault("_plans", {})
        plan = cache.get((k, rows))
        if plan is None:
            plan = cache[(k, rows)] = self._plan(k, rows)
        return plan

    def stream_plan(self, rows: int) -> StreamPlan:
        """Every layer's plan for `rows` token rows, concatenated (cached per row count)."""
        cache = self.__dict__.setdefault("_stream_plans", {})
        stream = cache.get(rows)
        if stream is None:
            stream = cache[rows] = StreamPlan.join([self.plan(k, rows) for k in range(self.layer_count)])
        return stream

    def _plan(self, k: int, rows: int) -> LayerPlan:
        before = self.levels[k - 1] if k else np.full(self.levels.shape[1], -1)
        after, final = self.levels[k], self.levels[-1]
        tiles = rows // self.transform.positions
        block = np.tile(self.block_of_position, (tiles, 1)).ravel()
        index = np.flatnonzero((after > before)[block])
        chosen = block[index]
        to, frm = after[chosen], before[chosen]
        log_step = 2 * (self.step0_exponent - to)
        sigma = np.tile(self.log_sigma, (tiles, 1)).ravel()[index]
        ratio = np.clip(sigma - log_step + RATIO_OFFSET, 0, RATIO_BUCKETS - 1)
        halvings = np.where(frm >= 0, to - frm, 0)
        static = (frm < 0) * RATIO_BUCKETS + ratio
        refine = SIGNIFICANCE_CONTEXTS + np.clip(halvings, 1, MAX_HALVINGS) - 1
        return LayerPlan(index, static.astype(np.uint8), refine.astype(np.uint8), halvings.astype(np.int32),
                         (final[chosen] - to).astype(np.int32), np.where(frm >= 0, halvings, 31).astype(np.int32))

    @classmethod
    def build(cls, name: str, sha: str, tensors: dict[str, np.ndarray], metadata: dict[str, str]) -> "PlaneWeights":
        """Validate a parsed token/2 weights file; ValueError naming what is wrong."""
        if metadata.get("format") != FORMAT_PLANES:
            raise ValueError(f"format {metadata.get('format')!r}")
        plane_tensors_valid(tensors, metadata)
        dim, rows, cols = (int(metadata[key]) for key in ("token_dim", "grid_rows", "grid_cols"))
        delta = float(metadata["delta"])
        if not 0.0 <= delta <= 1.0:
            raise ValueError(f"delta {delta} outside 0..1")
        rotation = tensors["transform.rotation"].astype(np.float32)
        gain = tensors["transform.gain"].astype(np.float32)
        if (gain <= 0).any():
            raise ValueError("transform.gain must be positive")
        levels = tensors["schedule.level"].astype(np.int64)
        if not 1 <= levels.shape[0] <= MAX_LAYERS or levels.min() < -1 or levels.max() > MAX_LEVEL:
            raise ValueError(f"schedule.level must hold 1..{MAX_LAYERS} layers of levels -1..{MAX_LEVEL}")
        rise = np.diff(np.vstack([np.full((1, levels.shape[1]), -1), levels]), axis=0)
        if (rise < 0).any() or not (rise > 0).any(axis=1).all():
            raise ValueError("every layer must raise the level of some block and lower none")
        if (rise[1:][(levels[:-1] >= 0)] > MAX_HALVINGS).any():
            raise ValueError(f"a layer refines a block by more than {MAX_HALVINGS} halvings")
        mantissa, exponent = math.frexp(float(tensors["schedule.step0"][0]))
        if mantissa != 0.5 or not -60 <= exponent - 1 <= 60:
            raise ValueError("schedule.step0 must be a power of two")
        counts, offsets, sizes = (tensors[f"tables.{n}"].astype(np.int64) for n in ("counts", "offset", "size"))
        if sizes.min() < 1 or sizes.max() > counts.shape[1] or np.abs(offsets).max() > 1 << 16:
            raise ValueError("table sizes or offsets")
        tables = tuple(FrequencyTable.from_counts(int(offsets[c]), counts[c, : int(sizes[c])])
                       for c in range(PLANE_CONTEXTS))
        if max(int(t.weights.max()) for t in tables) > MAX_TABLE_WEIGHT:
            raise ValueError("a table gives one symbol more than the allowed probability")
        limit = tensors["block.limit"].astype(np.float64)
        finest = np.where(levels[-1] >= 0, np.ldexp(1.0, exponent - 1 - np.maximum(levels[-1], 0)), np.inf)
        if (limit <= 0).any() or (limit / finest >= 2.0 ** 30).any():
            raise ValueError("block.limit must be positive and below 2**30 finest steps")
        transform = GridTransform(tensors["transform.mean"].astype(np.float32), rotation, gain, rows, cols,
                                  tuple(int(v) for v in tensors["transform.group_start"]))
        return cls(name, sha, metadata.get("model", "?"), dim, transform,
                   tensors["coef.log_sigma"].astype(np.int64),
                   tuple(int(v) for v in tensors["block.band_start"]),
                   tuple(int(v) for v in tensors["block.channel_start"]), limit, levels, exponent - 1, tables,
                   tensors["quality.insignificant"].astype(np.float64),
                   tensors["quality.calibration"].astype(np.float64), delta)


def finest_magnitudes(weights: PlaneWeights, tokens: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """floor(|c| / step at the block's final level) and sign(c), both [N * D] int32 (build() checks that limit /
    finest step < 2**30), of tokens [N, D] (whole tiles): coefficients clipped to their block's limit; 0 in blocks
    no layer codes."""
    tiles = tokens.shape[0] // weights.transform.positions
    limit, finest = (np.tile(bound, tiles) for bound in weights.tile_bounds)
    c = np.clip(weights.transform.forward(tokens).ravel(), -limit, limit)
    fine = np.floor(np.abs(c) / np.where(finest > 0, finest, np.inf)).astype(np.int32)
    return fine, np.sign(c).astype(np.int32)


def layer_symbols(plan: LayerPlan, fine: np.ndarray, sign: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The encoder's (tables [M] uint8, symbols [M] int64) of one layer, from the magnitudes [N * D] at the final
    level (floor(|c| / finest step)) and signs: what the layer adds to what earlier layers sent."""
    now = fine[plan.index] >> plan.shift  # floor(|c| / step) at this layer's level
    known = now >> plan.known_shift  # ... at the level before (0 for a block's first coding)
    significant = known > 0
    symbols = (now - (known << plan.halvings)) * np.where(significant, 1, sign[plan.index])
    return np.where(significant, plan.refine_key, plan.static_key), symbols


class PlaneState:
    """The decoder's state after some layers: known magnitudes [N * D] (at each block's level) and signs."""

    def __init__(self, weights: PlaneWeights, rows: int) -> None:
        self.w = weights
        self.rows = rows
        self.magnitude = np.zeros(rows * weights.token_dim, dtype=np.int64)
        self.sign = np.zeros(rows * weights.token_dim, dtype=np.int64)
        self.applied = 0

    @property
    def level(self) -> np.ndarray:
        """Level [B] of every block after the layers applied (-1: not coded)."""
        if not self.applied:
            return np.full(self.w.levels.shape[1], -1)
        return self.w.levels[self.applied - 1]

    def keys(self, k: int) -> np.ndarray:
        """Table [M] (uint8) of every coefficient layer k codes, from what is known before the layer."""
        plan = self.w.plan(k, self.rows)
        return np.where(self.magnitude[plan.index] > 0, plan.refine_key, plan.static_key)

    def apply(self, symbols: np.ndarray, k: int) -> None:
        """Add layer k's symbols [M] to the magnitudes and signs."""
        plan = self.w.plan(k, self.rows)
        known = self.magnitude[plan.index]
        significant = known > 0
        self.magnitude[plan.index] = np.where(significant, (known << plan.halvings) + symbols, np.abs(symbols))
        self.sign[plan.index] = np.where(significant, self.sign[plan.index], np.sign(symbols))
        self.applied = k + 1

    def _blocks(self) -> np.ndarray:
        return np.tile(self.w.block_of_position, (self.rows // self.w.transform.positions, 1))

    def coefficients(self) -> np.ndarray:
        """Reconstructed coefficients [N, D] float64: (m + delta) * step where significant, else 0."""
        step = self.w.step(self.level)[self._blocks()].ravel()
        values = np.where(self.magnitude > 0, self.sign * (self.magnitude + self.w.delta) * step, 0.0)
        return values.reshape(self.rows, self.w.token_dim)

    def tokens(self) -> np.ndarray:
        """Tokens' [N, D] float32 decoded from the layers applied so far."""
        return self.w.transform.inverse(self.coefficients())

    def quality(self, calibrated: bool = True) -> np.ndarray:
        """Predicted cosine [N] of each token against the full tokens after the layers applied (the error head);
        calibrated=False gives the analytic estimate the per-layer calibration is fitted on."""
        w, k = self.w, self.applied - 1
        blocks = self._blocks()
        step = w.step(self.level)[blocks]
        significant = (self.magnitude > 0).reshape(blocks.shape)
        error = np.where(significant, step ** 2 / 12.0, w.insignificant[k][blocks])
        per_row = error @ (1.0 / w.transform.gain.astype(np.float64) ** 2)  # [N]
        spread = w.transform.error_spread()
        energy = (per_row.reshape(-1, spread.shape[0]) @ spread).ravel()
        decoded = self.tokens().astype(np.float64)
        signal = (decoded * decoded).sum(axis=1)
        analytic = np.sqrt(signal / np.maximum(signal + energy, 1e-30))
        if not calibrated:
            return analytic
        a, b = w.calibration[k]
        return np.clip(a + b * analytic, 0.0, 1.0)


class PlaneMetaAECodec(LayeredWeightsCodec):
    """metaae/1 over token/2 weights: progressive codec of tokens [N, D] for any model (numpy)."""

    weights: PlaneWeights

    def __init__(self, weights: PlaneWeights, layers: int | None = None, coder_id: str = DEFAULT_CODER_ID,
                 compiled: bool = False) -> None:
        """compiled: encode with the compiled kernel (metaae_planes_kernel: numba), which writes the same bytes as
        the numpy path ~3x faster but costs ~0.5 s once per process (import and cached compile): for processes that
        encode hundreds of images."""
        super().__init__(weights, layers, coder_id)
        if compiled and not metaae_planes_kernel.available():
            raise CodecError("the compiled metaae encoder needs the 'numba' package, which is not installed; "
                             "install it with `pip install numba` or encode without it")
        self.compiled = bool(compiled) and self.coder.coder_id == metaae_planes_kernel.CODER_ID
        if self.compiled:
            weights.kernel_tables  # noqa: B018 (built now: CodecError for tables that miss a symbol, before any work)

    def _rows(self, rows: int) -> int:
        transform = self.weights.transform
        if not transform.tiles(rows):
            raise CodecError(f"these metaae weights code tokens on a {transform.rows} x {transform.cols} grid (a "
                             f"multiple of {transform.positions} tokens), got {rows}; use the weights trained for "
                             "this vision encoder's token grid")
        return rows

    def encode(self, tokens: np.ndarray) -> EncodedTokens:
        """Compress tokens [N, D] float32 into self.layers layers, coarse to fine."""
        w = self.weights
        x = check_tokens(tokens, w.token_dim)
        rows = self._rows(x.shape[0])
        if self.compiled:
            limit, finest = w.tile_bounds
            return EncodedTokens(params={"layers": self.layers}, layers=metaae_planes_kernel.encode_layers(
                w.transform.forward(x).ravel(), limit, finest, w.stream_plan(rows), w.kernel_tables, self.layers))
        fine, sign = finest_magnitudes(w, x)
        layers = []
        for k in range(self.layers):
            keys, q = layer_symbols(w.plan(k, rows), fine, sign)
            layers.append(self.coder.encode(grouped_symbols(keys, q, w.tables, w.alphabets, k)))
        return EncodedTokens(params={"layers": self.layers}, layers=layers)

    def max_layer_bytes(self, params: dict[str, Any], shape: tuple[int, int]) -> list[int]:
        """The most payload bytes each layer of such a stream can hold (its ANS words)."""
        count = stream_layer_count(params, self.weights)
        rows = self._rows(check_shape(shape, self.weights.token_dim))
        return [ans_payload_bytes(len(self.weights.plan(k, rows).index)) for k in range(count)]

    def state(self, params: dict[str, Any], layers: Sequence[bytes], shape: tuple[int, int]) -> PlaneState:
        """The state after decoding the first len(layers) >= 1 layers; CodecError on any bad input."""
        w = self.weights
        rows = self._rows(check_stream(params, layers, shape, w))
        state = PlaneState(w, rows)
        for k, payload in enumerate(layers):
            check_layer_room(k, payload, len(w.plan(k, rows).index))
            try:
                q = read_grouped(self.coder.reader(bytes(payload)), state.keys(k), w.tables)
            except CodecError as error:
                raise CodecError(f"layer {k + 1}: {error}") from error
            state.apply(q, k)
        return state


__all__ = ["PlaneMetaAECodec", "PlaneWeights", "PlaneState", "LayerPlan", "StreamPlan", "block_map", "layer_symbols",
           "finest_magnitudes"]
