"""Training-free progressive codec: successive-refinement scalar quantisation with significance coding.

    tokens [N, D] -> layer 1: quantise x with step s1 (dead zone)        -> symbols -> entropy coder -> bytes
                  -> layer k: quantise the residual x - x'_{k-1}, step sk -> symbols -> entropy coder -> bytes
    decode(layers[:k]) = sum of the first k dequantised layers, clipped to the data range [N, D]

Each layer splits its symbols into context groups the decoder can rebuild from earlier layers alone:
  - per channel d, the peak |symbol| among its not-yet-significant tokens (capped at PEAK_CAP), coded in two
    groups (channel already active or not) -- channels of a sparse encoder (ReLU features) are mostly silent;
  - not-yet-significant coefficients, grouped by their channel's peak (peak 0: nothing coded at all);
  - already-significant coefficients (refinement symbols, small and centred on 0), split into those that
    became significant in the latest layer and older ones.
Every group has its own integer frequency table, sent in the layer ahead of the entropy-coded words.

Layer payload (all integers unsigned LEB128 varints, see entropy.write_table):
    GROUP_COUNT tables, in coding order: zigzag(lowest symbol), alphabet size K (0 = empty group), K counts
    the entropy coder's words (constriction-ans/1: 32-bit little-endian), holding the groups in that order:
      peaks of channels with no significant token yet [D0], peaks of the other channels [D - D0],
      not-yet-significant coefficients of channels with peak 1, 2, >= 3 (row-major), significant since the
      latest layer, significant for longer (row-major)
A table's counts must equal its group's size, which the decoder knows: a damaged layer is refused, not guessed.
Params (JSON, in the header): steps [L] (float32 values), deadzone_rounding, reconstruction_offset, clip [2].
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from prosemc.codec.base import EncodedTokens
from prosemc.codec.entropy import (
    DEFAULT_CODER_ID,
    MAX_ALPHABET,
    MAX_SYMBOL_MAGNITUDE,
    FrequencyTable,
    SymbolReader,
    coder_for_id,
    read_table,
    write_table,
)
from prosemc.codec.limits import ans_payload_bytes, check_layer_work, varint_bytes
from prosemc.codec.quality import dead_zone_energy, mean_cosine
from prosemc.errors import CodecError

PEAK_CAP = 3  # channel peaks 0, 1, 2 and ">= 3"; part of the sr-baseline/1 format
GROUP_COUNT = 2 + PEAK_CAP + 2  # two channel-peak groups, then the coefficient groups of RefinementState.groups
MAX_LAYERS = 16
MAX_STEP_RATIO = 64.0  # keeps refinement alphabets small (|symbol| <= ~ratio)
MAX_FIRST_LAYER_LEVELS = 1024  # layer 1's step is at least max|x| / this, bounding its alphabet
MAX_TOKEN_VALUES = 1 << 24  # N * D cap: a decoder never allocates more than a few hundred MB for a claimed shape
MIN_STEP = float(np.finfo(np.float32).tiny)
FLOAT32_MAX = float(np.finfo(np.float32).max)
FIRST_LAYER_GROWTH = 2.0  # quality_estimate: assumed growth of small values per octave below layer 1's threshold


@dataclass(frozen=True)
class LayerPlan:
    """Decoder-side parameters of one sr-baseline/1 stream (all of it travels in EncodedTokens.params)."""

    steps: tuple[float, ...]  # quantiser step per layer, non-increasing
    deadzone_rounding: float  # rounding offset for not-yet-significant values: q = floor(|r|/s + this)
    reconstruction_offset: float  # newly significant |x'| = (|q| - deadzone_rounding + this) * s
    clip_low: float
    clip_high: float

    def to_params(self) -> dict[str, Any]:
        """JSON-able params; float32 values as their shortest decimals (from_params rounds them back exactly)."""
        return {
            "steps": [shortest_float32(step) for step in self.steps],
            "deadzone_rounding": self.deadzone_rounding,
            "reconstruction_offset": self.reconstruction_offset,
            "clip": [shortest_float32(self.clip_low), shortest_float32(self.clip_high)],
        }

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> "LayerPlan":
        """Validate and read params written by to_params; CodecError naming what is wrong otherwise."""
        if not isinstance(params, dict) or not isinstance(params.get("steps"), list):
            raise CodecError("sr-baseline/1 params are malformed: expected a dict with a list of layer 'steps'")
        if len(params["steps"]) > MAX_LAYERS:
            raise CodecError(f"sr-baseline/1 needs 1..{MAX_LAYERS} layer steps, got {len(params['steps'])}")
        try:
            steps = tuple(as_float32(step) for step in params["steps"])
            deadzone = float(params["deadzone_rounding"])
            offset = float(params["reconstruction_offset"])
            clip_low, clip_high = (as_float32(value) for value in params["clip"])
        except (KeyError, TypeError, ValueError, OverflowError) as error:
            raise CodecError(
                f"sr-baseline/1 params are malformed ({error!r}); expected keys steps, deadzone_rounding, "
                "reconstruction_offset, clip as written by the encoder"
            ) from error
        plan = cls(steps, deadzone, offset, clip_low, clip_high)
        plan.validate()
        return plan

    def validate(self) -> None:
        steps = self.steps
        if not 1 <= len(steps) <= MAX_LAYERS:
            raise CodecError(f"sr-baseline/1 needs 1..{MAX_LAYERS} layer steps, got {len(steps)}")
        if not all(math.isfinite(step) and MIN_STEP <= step <= FLOAT32_MAX for step in steps):
            raise CodecError(f"sr-baseline/1 steps must be finite positive float32 values, got {list(steps)}")
        for coarse, fine in zip(steps, steps[1:]):
            if not (fine <= coarse <= fine * MAX_STEP_RATIO):
                raise CodecError(
                    f"sr-baseline/1 steps must shrink by a ratio in 1..{MAX_STEP_RATIO} per layer, got {list(steps)}"
                )
        if not (0.0 < self.deadzone_rounding <= 0.5 and 0.0 <= self.reconstruction_offset <= 1.0):
            raise CodecError(
                "sr-baseline/1 deadzone_rounding must be in (0, 0.5] and reconstruction_offset in [0, 1], got "
                f"{self.deadzone_rounding}, {self.reconstruction_offset}"
            )
        bounds = (self.clip_low, self.clip_high)
        if not (all(math.isfinite(v) and abs(v) <= FLOAT32_MAX for v in bounds) and self.clip_low <= self.clip_high):
            raise CodecError(f"sr-baseline/1 clip range must be finite with low <= high, got {list(bounds)}")


def shortest_float32(value: float) -> float:
    """The shortest decimal that rounds back to the float32 value (e.g. 6.089655, not 6.089654922485352)."""
    return float(str(np.float32(value)))


def as_float32(value: Any) -> float:
    """A params number rounded to float32 (inf when out of range, which validation then refuses)."""
    with np.errstate(over="ignore"):
        return float(np.float32(float(value)))


class RefinementState:
    """What encoder and decoder both know after some layers: reconstruction x' [N, D] and significance [N, D]."""

    def __init__(self, shape: tuple[int, int], plan: LayerPlan) -> None:
        self.plan = plan
        self.reconstruction = np.zeros(shape, dtype=np.float64)
        self.significant = np.zeros(shape, dtype=bool)
        self.fresh = np.zeros(shape, dtype=bool)  # became significant in the latest layer

    def groups(self, peaks: np.ndarray | None = None) -> tuple[np.ndarray, list[np.ndarray]]:
        """Context masks: channel activity [D]; then [N, D] masks of the coefficient groups in coding order.

        Coefficient groups: not yet significant with channel peak 1 .. PEAK_CAP, then significant since the
        latest layer, then significant for longer (their refinement symbols are distributed differently).
        """
        channel_active = self.significant.any(axis=0)
        if peaks is None:
            return channel_active, []
        insignificant = ~self.significant
        masks = [insignificant & (peaks == peak)[None, :] for peak in range(1, PEAK_CAP + 1)]
        masks += [self.fresh, self.significant & ~self.fresh]
        return channel_active, masks

    def apply(self, symbols: np.ndarray, step: float) -> None:
        """Add one layer's dequantised symbols [N, D] (int64) with quantiser step; only nonzero symbols act."""
        plan = self.plan
        where = np.flatnonzero(symbols)
        values = symbols.ravel()[where].astype(np.float64)
        reconstruction = self.reconstruction.ravel()
        significant = self.significant.ravel()
        newly = ~significant[where]
        first_values = np.sign(values) * (np.abs(values) - plan.deadzone_rounding + plan.reconstruction_offset) * step
        updated = np.where(newly, first_values, reconstruction[where] + values * step)
        reconstruction[where] = np.clip(updated, plan.clip_low, plan.clip_high)
        self.fresh[:] = False
        self.fresh.ravel()[where[newly]] = True
        significant[where] = True

    def tokens(self) -> np.ndarray:
        return self.reconstruction.astype(np.float32)

    def columns(self, channels: np.ndarray) -> "RefinementState":
        """The state of some channels [C] alone: [N, C] copies, or self when C is over half the channels (then
        working on all of them costs less than copying, and at most twice the work for C)."""
        if 2 * len(channels) > self.significant.shape[1]:
            return self
        part = RefinementState.__new__(RefinementState)
        part.plan = self.plan  # C-contiguous copies: apply() writes through ravel() views
        part.reconstruction = np.ascontiguousarray(self.reconstruction[:, channels])
        part.significant = np.ascontiguousarray(self.significant[:, channels])
        part.fresh = np.ascontiguousarray(self.fresh[:, channels])
        return part

    def store(self, channels: np.ndarray, part: "RefinementState") -> None:
        """Write back the state of channels [C] taken with columns(); the others hold nothing significant, so
        nothing fresh either."""
        if part is not self:
            self.reconstruction[:, channels] = part.reconstruction
            self.significant[:, channels] = part.significant
            self.fresh[:, channels] = part.fresh


def quantise_residual(values: np.ndarray, state: RefinementState, step: float) -> np.ndarray:
    """Symbols [N, D] (int64) for x - x': dead-zone rounding where not yet significant, nearest elsewhere."""
    residual = values - state.reconstruction
    scaled = np.abs(residual)
    scaled *= 1.0 / step
    scaled += state.plan.deadzone_rounding
    if state.significant.any():
        scaled[state.significant] += 0.5 - state.plan.deadzone_rounding
    np.floor(scaled, out=scaled)
    np.copysign(scaled, residual, out=scaled)
    return scaled.astype(np.int64)


def channel_peaks(symbols: np.ndarray, significant: np.ndarray) -> np.ndarray:
    """Per channel [D]: the largest |symbol| among not-yet-significant tokens, capped at PEAK_CAP."""
    return np.minimum(np.where(significant, 0, np.abs(symbols)).max(axis=0), PEAK_CAP)


class SuccessiveRefinementCodec:
    """sr-baseline/1: a training-free progressive codec for any tokens [N, D] float32 (see module docstring)."""

    codec_id = "sr-baseline/1"

    def __init__(
        self,
        layers: int = 5,
        first_step: float = 8.0,
        step_ratio: float = 2.0,
        deadzone_rounding: float = 0.35,
        reconstruction_offset: float = 0.5,
        coder_id: str = DEFAULT_CODER_ID,
        portable_coder: bool = False,
    ) -> None:
        """first_step is relative to the tokens' RMS; each later layer's step is the previous / step_ratio.

        portable_coder=True uses the coder id's pure-Python implementation (same bytes, no native library).
        """
        if not 1 <= int(layers) <= MAX_LAYERS:
            raise CodecError(f"layers must be in 1..{MAX_LAYERS}, got {layers}")
        if not (math.isfinite(first_step) and first_step > 0):
            raise CodecError(f"first_step must be a positive number (relative to the tokens' RMS), got {first_step}")
        if not (1.0 <= step_ratio <= MAX_STEP_RATIO):
            raise CodecError(f"step_ratio must be in 1..{MAX_STEP_RATIO}, got {step_ratio}")
        LayerPlan((1.0,), float(deadzone_rounding), float(reconstruction_offset), 0.0, 0.0).validate()
        self.layers = int(layers)
        self.first_step = float(first_step)
        self.step_ratio = float(step_ratio)
        self.deadzone_rounding = float(deadzone_rounding)
        self.reconstruction_offset = float(reconstruction_offset)
        self.coder = coder_for_id(coder_id, portable=portable_coder)

    def describe(self) -> dict[str, Any]:
        return {"codec": {"id": self.codec_id, "model_sha256": None}, "entropy": {"id": self.coder.coder_id}}

    # --- encoding --------------------------------------------------------------------------------------

    def plan_for(self, tokens: np.ndarray) -> LayerPlan:
        """Steps and clip range for these tokens [N, D] (finite float32)."""
        values = tokens.astype(np.float64)
        peak = float(np.abs(values).max())
        rms = math.sqrt(float(np.mean(values * values)))
        first = max(self.first_step * rms, peak / MAX_FIRST_LAYER_LEVELS, MIN_STEP)
        first = float(f"{min(first, FLOAT32_MAX):.3g}")  # 3 digits: short params, steps / 2**k stay short
        steps, step = [], first
        for _ in range(self.layers):
            steps.append(float(np.float32(min(max(step, MIN_STEP), FLOAT32_MAX))))
            step /= self.step_ratio
        for index in range(1, len(steps)):  # float32 rounding must not break the ratio bound
            steps[index] = min(steps[index], steps[index - 1])
        plan = LayerPlan(
            steps=tuple(steps),
            deadzone_rounding=self.deadzone_rounding,
            reconstruction_offset=self.reconstruction_offset,
            clip_low=float(values.min()),
            clip_high=float(values.max()),
        )
        plan.validate()
        return plan

    def encode(self, tokens: np.ndarray) -> EncodedTokens:
        """Compress tokens [N, D] float32 into len(steps) layers, coarse to fine."""
        tokens = check_tokens(tokens)
        plan = self.plan_for(tokens)
        state = RefinementState(tokens.shape, plan)
        values = tokens.astype(np.float64)
        layers = []
        for step in plan.steps:
            symbols = quantise_residual(values, state, step)
            layers.append(self._encode_layer(state, symbols))
            state.apply(symbols, step)
        return EncodedTokens(params=plan.to_params(), layers=layers)

    def _encode_layer(self, state: RefinementState, symbols: np.ndarray) -> bytes:
        peaks = channel_peaks(symbols, state.significant)
        channel_active, masks = state.groups(peaks)
        groups = [peaks[~channel_active], peaks[channel_active]] + [symbols[mask] for mask in masks]
        tables = bytearray()
        coded = []
        for group in groups:
            if group.size == 0:
                write_table(None, 0, tables)
                continue
            table, counts = FrequencyTable.from_symbols(group)
            write_table(counts, table.offset, tables)
            coded.append((group, table))
        return bytes(tables) + self.coder.encode(coded)

    # --- decoding --------------------------------------------------------------------------------------

    def max_layer_bytes(self, params: dict[str, Any], shape: tuple[int, int]) -> list[int]:
        """The most payload bytes each layer of such a stream can hold (GROUP_COUNT tables + the ANS words)."""
        plan = LayerPlan.from_params(params)
        rows, columns = check_shape(shape)
        symbols = rows * columns + columns  # every coefficient and every channel peak
        table = varint_bytes(2 * MAX_SYMBOL_MAGNITUDE) + varint_bytes(MAX_ALPHABET)  # offset, size,
        table += MAX_ALPHABET * varint_bytes(symbols)  # and the counts
        return [GROUP_COUNT * table + ans_payload_bytes(symbols)] * len(plan.steps)

    def decode(self, params: dict[str, Any], layers: Sequence[bytes], shape: tuple[int, int]) -> np.ndarray:
        """Reconstruct tokens [N, D] float32 from the first len(layers) >= 1 layers.

        Each layer works only on the channels it codes coefficients in, so its cost is its symbols plus N per such
        channel, and that cost is bounded by its bytes (prosemc.codec.limits) before it is paid.
        """
        return self._decode_state(params, layers, shape)[0].tokens()

    def quality_estimate(self, params: dict[str, Any], layers: Sequence[bytes], shape: tuple[int, int]) -> float:
        """Predicted mean per-token cosine between the tokens decoded from these layers and the full,
        uncompressed tokens, in [0, 1] (analytic, from the last step and the significance counts; see
        prosemc.codec.quality)."""
        state, new_counts = self._decode_state(params, layers, shape)
        plan = state.plan
        step = plan.steps[len(layers) - 1]
        threshold = (1.0 - plan.deadzone_rounding) * step
        significant = state.significant.sum(axis=1)
        free = state.significant.size - int(significant.sum())
        previous = new_counts[-2] if len(new_counts) > 1 else None
        dead_zone = dead_zone_energy(new_counts[-1], previous, threshold, free, FIRST_LAYER_GROWTH)
        insignificant = state.significant.shape[1] - significant
        decoded = (state.reconstruction**2).sum(axis=1)
        error = significant * step**2 / 12.0 + insignificant * dead_zone / max(free, 1)
        return mean_cosine(decoded, decoded + error, decoded)

    def _decode_state(self, params: dict[str, Any], layers: Sequence[bytes],
                      shape: tuple[int, int]) -> tuple[RefinementState, list[int]]:
        """The decoder state after these layers, and how many values each layer made newly significant."""
        plan = LayerPlan.from_params(params)
        shape = check_shape(shape)
        if not 1 <= len(layers) <= len(plan.steps):
            raise CodecError(
                f"sr-baseline/1 decodes 1..{len(plan.steps)} layers of this stream, got {len(layers)}"
            )
        check_layer_types(layers)
        state = RefinementState(shape, plan)
        new_counts = []
        for index, (payload, step) in enumerate(zip(layers, plan.steps)):
            try:
                channels, part, symbols = self._decode_layer(state, bytes(payload))
            except CodecError as error:
                raise CodecError(f"layer {index + 1}: {error}") from error
            before = int(state.significant.sum())
            part.apply(symbols, step)
            state.store(channels, part)
            new_counts.append(int(state.significant.sum()) - before)
        return state, new_counts

    def _decode_layer(self, state: RefinementState, payload: bytes) -> tuple[np.ndarray, RefinementState, np.ndarray]:
        """The channels [C] this layer codes coefficients in, their state, and their symbols [N, C] (int64)."""
        rows, count = state.significant.shape[0], state.significant.size
        position = 0
        tables: list[tuple[FrequencyTable | None, int]] = []
        for _ in range(GROUP_COUNT):
            table, total, position = read_table(payload, position, count)
            tables.append((table, total))
        coded = sum(total for _, total in tables)
        check_layer_work(self.codec_id, coded, len(payload))  # before a symbol is decoded
        reader = self.coder.reader(payload[position:])
        channel_active, _ = state.groups()
        peaks = np.zeros(channel_active.shape, dtype=np.int64)
        for (table, total), channels in zip(tables[:2], (~channel_active, channel_active)):
            peaks[channels] = self._read_group(reader, table, total, int(channels.sum()), "channel peak")
        if peaks.min() < 0 or peaks.max() > PEAK_CAP:
            raise CodecError(f"corrupt layer payload: channel peaks outside 0..{PEAK_CAP}")
        channels = np.flatnonzero((peaks > 0) | channel_active)  # every other channel's coefficients are not coded
        check_layer_work(self.codec_id, coded + rows * len(channels), len(payload))  # before their state is touched
        part = state.columns(channels)
        _, masks = part.groups(peaks if part is state else peaks[channels])
        symbols = np.zeros(part.significant.shape, dtype=np.int64)
        for (table, total), mask in zip(tables[2:], masks):
            symbols[mask] = self._read_group(reader, table, total, int(mask.sum()), "coefficient")
        reader.finish()
        return channels, part, symbols

    @staticmethod
    def _read_group(
        reader: SymbolReader, table: FrequencyTable | None, total: int, expected: int, what: str
    ) -> np.ndarray:
        if total != expected:
            raise CodecError(
                f"corrupt layer payload: a {what} table counts {total} symbols where the stream codes {expected}; "
                "the layer is damaged or belongs to another file"
            )
        if table is None:
            return np.zeros(0, dtype=np.int64)
        return reader.read(table, expected)


def check_tokens(tokens: np.ndarray) -> np.ndarray:
    """Tokens as a C-contiguous float32 [N, D] array with N, D >= 1 and only finite values; CodecError otherwise."""
    array = np.asarray(tokens)
    if array.ndim != 2 or array.shape[0] < 1 or array.shape[1] < 1:
        raise CodecError(f"tokens must be a [N, D] array with N, D >= 1, got shape {tuple(array.shape)}")
    if not (np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)):
        raise CodecError(f"tokens must be float32 numbers, got dtype {array.dtype}")
    check_shape(array.shape)
    array = np.ascontiguousarray(array, dtype=np.float32)
    if not np.isfinite(array).all():
        bad = int((~np.isfinite(array)).sum())
        raise CodecError(
            f"tokens contain {bad} non-finite values (NaN or inf), which no codec can represent; "
            "check the vision encoder's output"
        )
    return array


def check_layer_types(layers: Sequence[Any]) -> None:
    """CodecError unless every layer payload is bytes-like."""
    for index, payload in enumerate(layers):
        if not isinstance(payload, (bytes, bytearray, memoryview)):
            raise CodecError(f"layer {index + 1} must be bytes, got {type(payload).__name__}")


def check_shape(shape: Sequence[int]) -> tuple[int, int]:
    """A token shape (N, D), both >= 1 and of bounded size; CodecError otherwise."""
    try:
        rows, columns = (int(value) for value in shape)
    except (TypeError, ValueError) as error:
        raise CodecError(f"token shape must be two integers (N, D), got {shape!r}") from error
    if rows < 1 or columns < 1 or rows * columns > MAX_TOKEN_VALUES:
        raise CodecError(f"token shape must have N, D >= 1 and N*D <= 2**24, got ({rows}, {columns})")
    return rows, columns
