"""metaae/1 with per-token weights: one Meta AutoEncoder per token for any model's tokens, numpy only (no torch).

    edge   tokens x [N, D] --z = clip(x @ E + e, +-limit)--> latent z [N, L] (learned linear map; channel order
           = importance, learned step size per channel through E's scale)
           layer k = (step s_k, channels a_k..b_k): successive-refinement dead-zone quantisation of z - z'_{k-1}
                     on those channels, ANS-coded with learned integer tables chosen by context
    cloud  any prefix of layers --> z' [N, L] (0 where nothing significant arrived yet) --> tokens' = z' @ P + p

Coarse to fine, each layer halves the step of a range of channels (the schedule in the weights): bit-plane-like
levels whose channel ranges split every step in two, so one model serves every rate from a few hundred bytes up.
Coding contexts are integers only (which channel quarter of the layer, significant grid neighbours before the
layer, significant values already in the token), so both sides model every symbol alike on any machine.
Every table gives each symbol at most 1 - 2**-9 of the probability mass, so a layer of S symbols needs at least
S * 0.0014 bits: a decoder refuses a layer whose payload is too short for its symbols before decoding anything.

The error head (`quality_estimate`): per token, an analytic estimate of the cosine between tokens' and the full
tokens (the decoded energy against the expected error of each coefficient: step^2 / 12 where significant, the
trained mean z_c^2 where not, through the decoder's row norms), calibrated per layer by two learned numbers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from prosemc.codec.base import EncodedTokens
from prosemc.codec.entropy import DEFAULT_CODER_ID, FrequencyTable, coder_for_id
from prosemc.codec.limits import ans_payload_bytes
from prosemc.codec.metaae_weights import (
    ACTIVITY_STATES,
    CHANNEL_BUCKETS,
    FORMAT_TOKEN,
    MAX_TABLE_WEIGHT,
    MIN_SYMBOL_BITS,
    NEIGHBOUR_STATES,
    TOKEN_CONTEXTS,
    token_tensors_valid,
)
from prosemc.errors import CodecError

CODEC_ID = "metaae/1"
MAX_TOKENS = 4096
MAX_LAYERS = 32
ANS_SLACK_BITS = 96  # an ANS payload may hold up to this many bits less than its symbols' information


@dataclass(frozen=True)
class TokenWeights:
    """A loaded per-token weights file (see prosemc.codec.metaae_weights.TOKEN_TENSORS)."""

    path: str
    sha256: str
    model: str
    token_dim: int
    latent_dim: int
    enc_weight: np.ndarray  # [D, L] float32
    enc_bias: np.ndarray  # [L] float32
    limit: np.ndarray  # [L] float64
    dec_weight: np.ndarray  # [L, D] float64
    dec_bias: np.ndarray  # [D] float64
    steps: tuple[float, ...]  # [K]
    ranges: tuple[tuple[int, int], ...]  # [K] channels a..b-1 of each layer
    tables: tuple[tuple[FrequencyTable, ...], ...]  # [K][TOKEN_CONTEXTS + 1]
    channel_step: np.ndarray  # [K, L] step of each channel after layer k (0: not coded yet)
    insignificant: np.ndarray  # [K, L] float64
    calibration: np.ndarray  # [K, 2] float64
    deadzone: float
    offset: float

    @property
    def layer_count(self) -> int:
        return len(self.steps)

    @property
    def alphabets(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """Per layer: lowest and highest codable symbol [C + 1] of each context's table."""
        cached = self.__dict__.get("_alphabets")
        if cached is None:
            cached = [(np.array([t.offset for t in layer]), np.array([t.offset + t.alphabet_size - 1 for t in layer]))
                      for layer in self.tables]
            object.__setattr__(self, "_alphabets", cached)
        return cached

    @classmethod
    def build(cls, name: str, sha: str, tensors: dict[str, np.ndarray], metadata: dict[str, str]) -> "TokenWeights":
        """Validate a parsed weights file; ValueError naming what is wrong."""
        if metadata.get("format") != FORMAT_TOKEN:
            raise ValueError(f"format {metadata.get('format')!r}")
        token_tensors_valid(tensors, metadata)
        dim, latent = int(metadata["token_dim"]), int(metadata["latent_dim"])
        deadzone, offset = float(metadata["deadzone"]), float(metadata["offset"])
        if not (0 < deadzone <= 0.5 and 0 <= offset <= 1) or not 1 <= latent <= 4096 or not 1 <= dim <= 65536:
            raise ValueError("deadzone, offset, latent_dim or token_dim out of range")
        steps = tuple(float(v) for v in tensors["schedule.step"])
        starts, stops = tensors["schedule.start"].astype(np.int64), tensors["schedule.stop"].astype(np.int64)
        if not 1 <= len(steps) <= MAX_LAYERS or not all(math.isfinite(s) and 1e-6 <= s <= 1e6 for s in steps):
            raise ValueError(f"schedule steps {steps}")
        if (starts < 0).any() or (stops > latent).any() or (stops <= starts).any():
            raise ValueError("schedule channel ranges")
        channel_step = np.zeros((len(steps), latent))
        current = np.zeros(latent)
        for k, (step, a, b) in enumerate(zip(steps, starts.tolist(), stops.tolist())):
            previous = current[a:b]
            if ((previous > 0) & ((previous <= step) | (previous > 64 * step))).any():
                raise ValueError(f"layer {k + 1} does not shrink its channels' step by a ratio in (1, 64]")
            current = current.copy()
            current[a:b] = step
            channel_step[k] = current
        counts, offsets, sizes = (tensors[f"tables.{n}"].astype(np.int64) for n in ("counts", "offset", "size"))
        if sizes.min() < 1 or sizes.max() > counts.shape[2] or np.abs(offsets).max() > 1 << 16:
            raise ValueError("table sizes or offsets")
        tables = tuple(
            tuple(FrequencyTable.from_counts(int(offsets[k, c]), counts[k, c, : int(sizes[k, c])])
                  for c in range(TOKEN_CONTEXTS + 1))
            for k in range(len(steps))
        )
        if max(int(t.weights.max()) for layer in tables for t in layer) > MAX_TABLE_WEIGHT:
            raise ValueError("a table gives one symbol more than the allowed probability")
        limit = tensors["enc.limit"].astype(np.float64)
        if (limit <= 0).any():
            raise ValueError("enc.limit must be positive")
        return cls(name, sha, metadata.get("model", "?"), dim, latent,
                   np.ascontiguousarray(tensors["enc.weight"], dtype=np.float32),
                   np.ascontiguousarray(tensors["enc.bias"], dtype=np.float32), limit,
                   tensors["dec.weight"].astype(np.float64), tensors["dec.bias"].astype(np.float64), steps,
                   tuple(zip(starts.tolist(), stops.tolist())), tables, channel_step,
                   tensors["quality.insignificant"].astype(np.float64),
                   tensors["quality.calibration"].astype(np.float64), deadzone, offset)


class LatentState:
    """Encoder and decoder state of the layers: latent reconstruction [N, L] and significance [N, L]."""

    def __init__(self, weights: TokenWeights, rows: int) -> None:
        self.w = weights
        side = int(round(math.sqrt(rows)))
        self.grid = side if side * side == rows else 0
        self.reconstruction = np.zeros((rows, weights.latent_dim))
        self.significant = np.zeros((rows, weights.latent_dim), dtype=bool)
        self.applied = 0
        latent = weights.latent_dim
        self.activity_edges = np.array([0, latent // 8, latent // 2])

    def _neighbours(self, a: int, b: int) -> np.ndarray:
        """Significant neighbours [N, b - a] in the same channel: 4 on a square grid, else previous and next token."""
        sig = self.significant[:, a:b].astype(np.int8)
        if self.grid:
            grid = sig.reshape(self.grid, self.grid, b - a)
            count = np.zeros_like(grid)
            count[1:] += grid[:-1]
            count[:-1] += grid[1:]
            count[:, 1:] += grid[:, :-1]
            count[:, :-1] += grid[:, 1:]
            count = count.reshape(sig.shape)
        else:
            count = np.zeros_like(sig)
            count[1:] += sig[:-1]
            count[:-1] += sig[1:]
        return np.minimum(count, NEIGHBOUR_STATES - 1)

    def keys(self, k: int) -> np.ndarray:
        """Context [N, b - a] of every coefficient of layer k: 0..C-1 not yet significant, C significant."""
        a, b = self.w.ranges[k]
        bucket = (np.arange(b - a) * CHANNEL_BUCKETS) // (b - a)
        activity = np.searchsorted(self.activity_edges, self.significant.sum(axis=1), side="left")
        key = (bucket[None, :] * NEIGHBOUR_STATES + self._neighbours(a, b)) * ACTIVITY_STATES + activity[:, None]
        return np.where(self.significant[:, a:b], TOKEN_CONTEXTS, key).astype(np.uint8)  # small keys: radix sorts

    def quantise(self, z: np.ndarray, k: int) -> np.ndarray:
        """Symbols [N, b - a] (int64) of layer k: z - z' on its channels, dead zone where not yet significant."""
        a, b = self.w.ranges[k]
        residual = z[:, a:b] - self.reconstruction[:, a:b]
        scaled = np.abs(residual) / self.w.steps[k] + np.where(self.significant[:, a:b], 0.5, self.w.deadzone)
        return (np.floor(scaled) * np.sign(residual)).astype(np.int64)

    def groups(self, q: np.ndarray, k: int) -> list[tuple[np.ndarray, FrequencyTable]]:
        """(symbols, table) per context in coding order: context 0..C (C = refinement), row-major inside each."""
        return grouped_symbols(self.keys(k).ravel(), q.ravel(), self.w.tables[k], self.w.alphabets[k], k)

    def read(self, reader: Any, k: int) -> np.ndarray:
        """Symbols [N, b - a] of layer k from an entropy reader (the inverse of groups)."""
        return read_grouped(reader, self.keys(k).ravel(), self.w.tables[k]).reshape(self.significant.shape[0], -1)

    def apply(self, q: np.ndarray, k: int) -> None:
        """Add layer k's symbols to the reconstruction and the significance map."""
        a, b = self.w.ranges[k]
        step, w = self.w.steps[k], self.w
        sig = self.significant[:, a:b]
        values = q.astype(np.float64)
        fresh = np.sign(values) * (np.abs(values) - w.deadzone + w.offset) * step  # a newly significant value
        self.reconstruction[:, a:b] = np.where(sig, self.reconstruction[:, a:b] + values * step,
                                               np.where(q != 0, fresh, 0.0))
        sig |= q != 0
        self.applied = k + 1

    def tokens(self) -> np.ndarray:
        """Tokens' [N, D] float32 decoded from the latent reconstruction so far."""
        return (self.reconstruction @ self.w.dec_weight + self.w.dec_bias).astype(np.float32)

    def quality(self, calibrated: bool = True) -> np.ndarray:
        """Predicted cosine [N] of each token against the full tokens after the layers applied (the error head);
        calibrated=False gives the analytic estimate the per-layer calibration is fitted on."""
        k = self.applied - 1
        step = self.w.channel_step[k]
        error = np.where(self.significant, step[None, :] ** 2 / 12.0, self.w.insignificant[k][None, :])
        energy = error @ (self.w.dec_weight ** 2).sum(axis=1)  # [N]
        decoded = self.tokens().astype(np.float64)
        signal = (decoded * decoded).sum(axis=1)
        analytic = np.sqrt(signal / np.maximum(signal + energy, 1e-30))
        if not calibrated:
            return analytic
        a, b = self.w.calibration[k]
        return np.clip(a + b * analytic, 0.0, 1.0)


def grouped_symbols(keys: np.ndarray, symbols: np.ndarray, tables: Sequence[FrequencyTable],
                    alphabets: tuple[np.ndarray, np.ndarray], k: int) -> list[tuple[np.ndarray, FrequencyTable]]:
    """(symbols, table) per context of one layer, contexts in increasing order, symbols [M] in their order inside
    each; keys [M] (uint8) pick each symbol's table, alphabets = (lowest, highest) codable symbol per table."""
    order = np.argsort(keys, kind="stable")
    flat = symbols[order]
    edges = np.searchsorted(keys[order], np.arange(len(tables) + 1))
    present = np.flatnonzero(np.diff(edges))
    starts = edges[present]
    low, high = alphabets
    if ((np.minimum.reduceat(flat, starts) < low[present]) | (np.maximum.reduceat(flat, starts) > high[present])).any():
        raise CodecError(f"layer {k + 1}: symbols outside the trained alphabet (tokens far outside the "
                         "training distribution); use the baseline codec for these tokens")
    return [(flat[edges[key] : edges[key + 1]], tables[key]) for key in present.tolist()]


def read_grouped(reader: Any, keys: np.ndarray, tables: Sequence[FrequencyTable]) -> np.ndarray:
    """Symbols [M] (int64) of one layer from an entropy reader, in the order of keys [M] (grouped_symbols' inverse)."""
    order = np.argsort(keys, kind="stable")
    edges = np.searchsorted(keys[order], np.arange(len(tables) + 1)).tolist()
    flat = np.empty(keys.shape[0], dtype=np.int64)
    for key in range(len(tables)):
        if edges[key + 1] > edges[key]:
            flat[edges[key] : edges[key + 1]] = reader.read(tables[key], edges[key + 1] - edges[key])
    reader.finish()
    out = np.empty_like(flat)
    out[order] = flat
    return out


class LayeredWeightsCodec:
    """What both per-token codecs share: weights with layer_count and sha256, the layers to write, the coder."""

    codec_id = CODEC_ID

    def __init__(self, weights: Any, layers: int | None = None, coder_id: str = DEFAULT_CODER_ID) -> None:
        self.weights = weights
        count = weights.layer_count
        if layers is not None and not 1 <= int(layers) <= count:
            raise CodecError(f"metaae/1 with these weights codes 1..{count} layers, got {layers}")
        self.layers = int(layers) if layers is not None else count
        self.coder = coder_for_id(coder_id)

    def describe(self) -> dict[str, Any]:
        return {"codec": {"id": self.codec_id, "model_sha256": self.weights.sha256},
                "entropy": {"id": self.coder.coder_id}}

    def state(self, params: dict[str, Any], layers: Sequence[bytes], shape: tuple[int, int]) -> Any:
        """The decoder's state after the first len(layers) >= 1 layers (tokens(), quality()); CodecError on bad input."""
        raise NotImplementedError

    def decode(self, params: dict[str, Any], layers: Sequence[bytes], shape: tuple[int, int]) -> np.ndarray:
        """Reconstruct tokens [N, D] float32 from the first len(layers) >= 1 layers."""
        return self.state(params, layers, shape).tokens()

    def quality_estimate(self, params: dict[str, Any], layers: Sequence[bytes], shape: tuple[int, int]) -> float:
        """Predicted mean per-token cosine between the tokens decoded from these layers and the full,
        uncompressed tokens, in [0, 1]."""
        return float(self.state(params, layers, shape).quality().mean())


def check_layer_room(k: int, payload: bytes, symbols: int) -> None:
    """CodecError unless layer k's payload can hold its symbols (each costs >= MIN_SYMBOL_BITS): bounded decoding."""
    if symbols * MIN_SYMBOL_BITS > 8 * len(payload) + ANS_SLACK_BITS:
        raise CodecError(f"layer {k + 1}: {len(payload)} bytes cannot hold its {symbols} symbols; the layer "
                         "is truncated or the header's token shape is wrong")


class TokenMetaAECodec(LayeredWeightsCodec):
    """metaae/1 over per-token token/1 weights: progressive codec of tokens [N, D] for any model (numpy)."""

    weights: TokenWeights

    def latent(self, tokens: np.ndarray) -> np.ndarray:
        """Latent z [N, L] float64 of tokens [N, D] (clipped to the trained range)."""
        x = check_tokens(tokens, self.weights.token_dim)
        z = (x @ self.weights.enc_weight + self.weights.enc_bias).astype(np.float64)
        return np.clip(z, -self.weights.limit, self.weights.limit)

    def encode(self, tokens: np.ndarray) -> EncodedTokens:
        """Compress tokens [N, D] float32 into self.layers layers, coarse to fine."""
        z = self.latent(tokens)
        state, layers = LatentState(self.weights, z.shape[0]), []
        for k in range(self.layers):
            q = state.quantise(z, k)
            layers.append(self.coder.encode(state.groups(q, k)))
            state.apply(q, k)
        return EncodedTokens(params={"layers": self.layers}, layers=layers)

    def max_layer_bytes(self, params: dict[str, Any], shape: tuple[int, int]) -> list[int]:
        """The most payload bytes each layer of such a stream can hold (its ANS words)."""
        count = stream_layer_count(params, self.weights)
        rows = check_shape(shape, self.weights.token_dim)
        return [ans_payload_bytes(rows * (b - a)) for a, b in self.weights.ranges[:count]]

    def state(self, params: dict[str, Any], layers: Sequence[bytes], shape: tuple[int, int]) -> LatentState:
        """The latent state after decoding the first len(layers) >= 1 layers; CodecError on any bad input."""
        w = self.weights
        rows = check_stream(params, layers, shape, w)
        state = LatentState(w, rows)
        for k, payload in enumerate(layers):
            a, b = w.ranges[k]
            check_layer_room(k, payload, rows * (b - a))
            try:
                q = state.read(self.coder.reader(bytes(payload)), k)
            except CodecError as error:
                raise CodecError(f"layer {k + 1}: {error}") from error
            state.apply(q, k)
        return state


def check_sha256(expected: Any, weights: Any) -> None:
    """CodecError naming both hashes unless `expected` (a header's codec.model_sha256) is the weights' sha256."""
    if expected != weights.sha256:
        raise CodecError(
            f"this file was encoded with metaae weights sha256 {expected}, but the loaded weights "
            f"({weights.path}) have sha256 {weights.sha256}; decode it with the prosemc version (or weights file) "
            "that encoded it, or re-encode the image with these weights"
        )


def stream_layer_count(params: Any, weights: Any) -> int:
    """The layer count of a stream these weights decode, from its params (layers, model_sha256); CodecError if bad."""
    if not isinstance(params, dict):
        raise CodecError(f"metaae/1 params must be an object, got {type(params).__name__}")
    if "model_sha256" in params:  # the header's codec.model_sha256 was checked when the codec was built
        check_sha256(params["model_sha256"], weights)
    count = params.get("layers")
    if type(count) is not int or not 1 <= count <= weights.layer_count:
        raise CodecError(f"metaae/1 params.layers must be an integer in 1..{weights.layer_count}, got {count!r}")
    return count


def check_stream(params: Any, layers: Sequence[bytes], shape: Sequence[int], weights: Any) -> int:
    """The token count N of a stream these weights decode: params (layers, model_sha256), 1..layers layers, (N, D)."""
    count = stream_layer_count(params, weights)
    rows = check_shape(shape, weights.token_dim)
    if not 1 <= len(layers) <= count:
        raise CodecError(f"metaae/1 decodes 1..{count} layers of this stream, got {len(layers)}")
    return rows


def check_tokens(tokens: np.ndarray, dim: int) -> np.ndarray:
    """tokens [N, D] as finite float32, 1 <= N <= MAX_TOKENS; CodecError otherwise."""
    array = np.asarray(tokens)
    if array.ndim != 2 or array.shape[1] != dim or not 1 <= array.shape[0] <= MAX_TOKENS:
        raise CodecError(
            f"metaae/1 codes tokens [N, {dim}] with 1 <= N <= {MAX_TOKENS}, got shape {tuple(array.shape)}; "
            "use the weights trained for this vision encoder (prosemc fit) or another codec"
        )
    if not (np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)):
        raise CodecError(f"tokens must be float32 numbers, got dtype {array.dtype}")
    array = np.ascontiguousarray(array, dtype=np.float32)
    if not np.isfinite(array).all():
        raise CodecError("tokens contain non-finite values (NaN or inf); check the vision encoder's output")
    return array


def check_shape(shape: Sequence[int], dim: int) -> int:
    """The token count N of a (N, D) shape this decoder accepts; CodecError otherwise."""
    try:
        rows, columns = (int(value) for value in shape)
    except (TypeError, ValueError) as error:
        raise CodecError(f"token shape must be two integers (N, D), got {shape!r}") from error
    if columns != dim or not 1 <= rows <= MAX_TOKENS:
        raise CodecError(f"metaae/1 with these weights decodes [N, {dim}] tokens, 1 <= N <= {MAX_TOKENS}; got {shape!r}")
    return rows


__all__ = ["LayeredWeightsCodec", "TokenMetaAECodec", "check_layer_room", "TokenWeights", "LatentState", "check_sha256", "check_stream", "check_tokens",
           "check_shape", "grouped_symbols", "read_grouped"]
