"""metaae/1: the Meta AutoEncoder codec at inference, numpy only (no torch), one trained model for every level.

    shipped model (pooled, diagonal, + refinement; see docs/metaae.md):
    tokens x [N, D] --clip 0..6, mean over N--> m [1, D] --y = m * a + c--> s = clip(rint(y - mean), -r, r) [1, D]
        layer 1 = ANS(s), one integer FrequencyTable per scale class of latent channels (shipped, never sent)
        layer 1 decodes to m' = (s + mean) * a' + c', repeated for every token
    layers 2.. = dead-zone scalar refinement of x (steps 4, 2, 1, 0.5, 0.25) coded with learned context tables
        (RefinementState); not-yet-significant values get a learned fill restoring each channel's mean m'_c

    dense autoencoder variants (the comparison in docs/metaae.md):
    nested:   y = E(x) [N, L]; layer k codes channels m_{k-1}..m_k; x'_k = clamp(D(y'[:m_k], 0 beyond), 0, 6)
    residual: layer k codes E_k(x - x'_{k-1}); x'_k = clamp(s_k), s_k = s_{k-1} + D_k(y'_k)

The weights (safetensors, written by `prosemc.training.fit` / `prosemc fit`) are named by their sha256 in
the header's codec.model_sha256; a file made with other weights is refused with both hashes named. Symbols,
tables and every coding context are integers, so the entropy-coded bits are identical on every machine; the
float decoder matches the torch model within float32 rounding (see tests/test_metaae.py).
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from prosemc.codec.base import EncodedTokens
from prosemc.codec.entropy import DEFAULT_CODER_ID, FrequencyTable, coder_for_id
from prosemc.codec.metaae_planes import PlaneMetaAECodec, PlaneWeights
from prosemc.codec.metaae_refine import RefinementState
from prosemc.codec.metaae_token import (
    TokenMetaAECodec,
    TokenWeights,
    check_sha256,
    check_shape,
    check_stream,
    check_tokens,
    stream_layer_count,
)
from prosemc.codec.metaae_weights import (
    FORMAT_POOLED as FORMAT,
    FORMAT_PLANES,
    FORMAT_TOKEN,
    parse,
    pooled_refine_contexts,
    read_bytes,
    shipped_weights,
    shipped_weights_path,
)
from prosemc.codec.limits import ans_payload_bytes, check_layer_work
from prosemc.codec.quality import dead_zone_energy, mean_cosine
from prosemc.errors import CodecError


CODEC_ID = "metaae/1"
# quality_estimate: |mean token|² / mean |token|² of lite tokens (0.312 over the 34 training photos, view 0),
# so the mean token's cosine to a token is about sqrt(0.312) = 0.56; and the assumed growth of small values
# per octave below the first refinement threshold (no earlier level to measure it from).
POOLED_ENERGY_RATIO = 0.312
FIRST_REFINEMENT_GROWTH = 1.0

Layer = tuple[np.ndarray, np.ndarray]  # weight [in, out] float32, bias [out] float32


def default_weights_path() -> Path:
    """prosemc/data/metaae-lite.safetensors, the shipped weights for the `lite` model's tokens."""
    return shipped_weights_path("lite")


def mlp(layers: Sequence[Layer], x: np.ndarray) -> np.ndarray:
    """x [.., in] through linear layers with ReLU between them (none after the last), float32."""
    for index, (weight, bias) in enumerate(layers):
        x = x * weight if weight.ndim == 1 else x @ weight  # 1-D weight: a diagonal (per-channel) map
        x += bias
        if index < len(layers) - 1:
            np.maximum(x, 0.0, out=x)
    return x


@dataclass(frozen=True)
class Refinement:
    """Levels after the autoencoder's: dead-zone scalar refinement of the tokens, coded with learned context tables.

    A coefficient's context is its channel's group and the bucket of the autoencoder's prediction there, computed
    in exact integer arithmetic from the autoencoder's symbols (so encoder and decoder always agree); already
    significant coefficients share one refinement context per level.
    """

    steps: tuple[float, ...]
    deadzone: float  # not yet significant: q = floor(|r| / step + deadzone)
    offset: float  # newly significant value = sign(q) * (|q| - deadzone + offset) * step
    fill: tuple[float, ...]  # per level: weight of the mean-restoring fill of not-yet-significant values
    pred_weight: np.ndarray  # [L, D] (or [D] for a diagonal map) float64 holding integers (fixed-point decoder)
    pred_bias: np.ndarray  # [D] float64 holding integers
    edges: np.ndarray  # [B - 1] float64 holding integers: bucket = #edges below the prediction
    group: np.ndarray  # [D] int64 channel group
    tables: tuple[tuple[FrequencyTable, ...], ...]  # per level: table_count tables (see RefinementState)

    @property
    def table_count(self) -> int:
        """Tables per level: 2 * G * B channel-peak contexts, 3 * B coefficient contexts, 1 significant."""
        groups, buckets = int(self.group.max()) + 1, len(self.edges) + 1
        return pooled_refine_contexts(groups, buckets) + 1


@dataclass(frozen=True)
class MetaAEWeights:
    """A loaded weights file: per-level maps, latent means and the integer entropy tables of every channel."""

    path: str
    sha256: str
    model: str
    variant: str
    levels: tuple[int, ...]  # cumulative latent channels after each level
    token_dim: int
    clip: tuple[float, float]
    encoders: tuple[tuple[Layer, ...], ...]
    decoders: tuple[tuple[Layer, ...], ...]
    mean: np.ndarray  # [L] float32
    radius: np.ndarray  # [L] int64, channel c codes symbols -r_c..r_c (its class's radius)
    table_class: np.ndarray  # [L] int64, the shared table of each latent channel
    tables: tuple[FrequencyTable, ...]  # [C] one per scale class
    refine: Refinement | None = None
    pooled: bool = False  # the autoencoder codes the pooled (mean) token [1, D], decoded to every token

    @property
    def layer_count(self) -> int:
        return len(self.levels) + (len(self.refine.steps) if self.refine is not None else 0)

    @property
    def starts(self) -> tuple[int, ...]:
        return (0,) + self.levels[:-1]

    @classmethod
    def from_bytes(cls, data: bytes, name: str = "<bytes>") -> "MetaAEWeights":
        """Validate pooled-layout weights bytes; CodecError naming the file and the fix otherwise."""
        tensors, metadata, sha = parse(data, name)
        try:
            return cls._build(name, sha, tensors, metadata)
        except (KeyError, ValueError, TypeError) as error:
            raise CodecError(f"{name} is not a valid {FORMAT} weights file ({error!r}); re-run `prosemc fit`") from None

    @classmethod
    def _build(cls, name: str, sha: str, tensors: dict[str, np.ndarray], metadata: dict[str, str]) -> "MetaAEWeights":
        if metadata.get("format") != FORMAT:
            raise CodecError(f"{name} is not a {FORMAT} weights file (format {metadata.get('format')!r})")
        variant = metadata["variant"]
        levels = tuple(int(m) for m in metadata["levels"].split(","))
        token_dim = int(metadata["token_dim"])
        clip_low, clip_high = (float(v) for v in metadata["clip"].split(","))
        if variant not in ("nested", "residual") or not levels or any(b <= a for a, b in zip(levels, levels[1:])):
            raise ValueError(f"variant {variant!r} with levels {levels}")
        latent = levels[-1]
        groups = 1 if variant == "nested" else len(levels)

        def layers(kind: str, k: int) -> tuple[Layer, ...]:
            found = []
            while any(f"{kind}.{k}.{len(found)}.{n}" in tensors for n in ("weight", "scale")):
                i = len(found)
                name = "weight" if f"{kind}.{k}.{i}.weight" in tensors else "scale"
                weight = np.ascontiguousarray(tensors[f"{kind}.{k}.{i}.{name}"], dtype=np.float32)
                bias = np.ascontiguousarray(tensors[f"{kind}.{k}.{i}.bias"], dtype=np.float32)
                if weight.ndim != (2 if name == "weight" else 1) or bias.shape != (weight.shape[-1],):
                    raise ValueError(f"{kind}.{k}.{i} has shapes {weight.shape}, {bias.shape}")
                if i and weight.shape[0] != found[-1][0].shape[-1]:
                    raise ValueError(f"{kind}.{k}.{i} does not chain")
                found.append((weight, bias))
            if not found:
                raise ValueError(f"missing {kind}.{k}")
            return tuple(found)

        encoders = tuple(layers("enc", k) for k in range(groups))
        decoders = tuple(layers("dec", k) for k in range(groups))
        widths = [latent] if variant == "nested" else [b - a for a, b in zip((0,) + levels[:-1], levels)]
        for enc, dec, width in zip(encoders, decoders, widths):
            if enc[0][0].shape[0] != token_dim or enc[-1][0].shape[-1] != width:
                raise ValueError(f"encoder shapes do not map {token_dim} -> {width}")
            if dec[0][0].shape[0] != width or dec[-1][0].shape[-1] != token_dim:
                raise ValueError(f"decoder shapes do not map {width} -> {token_dim}")
        mean = np.ascontiguousarray(tensors["latent.mean"], dtype=np.float32)
        class_radius = np.asarray(tensors["tables.radius"]).astype(np.int64)
        klass = np.asarray(tensors["tables.class"]).astype(np.int64)
        counts = np.asarray(tensors["tables.counts"])
        for key in ("tables.radius", "tables.class", "tables.counts"):
            if not np.issubdtype(tensors[key].dtype, np.integer):
                raise ValueError(f"{key} must be integers")
        if mean.shape != (latent,) or klass.shape != (latent,) or counts.ndim != 2:
            raise ValueError("latent.mean or tables.class do not match the latent width")
        if class_radius.shape != (counts.shape[0],) or klass.min() < 0 or klass.max() >= counts.shape[0]:
            raise ValueError("tables.class, tables.radius and tables.counts disagree")
        if class_radius.min() < 1 or 2 * int(class_radius.max()) + 1 > counts.shape[1]:
            raise ValueError("tables.radius out of range")
        tables = tuple(
            FrequencyTable.from_counts(-int(r), counts[c, : 2 * int(r) + 1].astype(np.int64))
            for c, r in enumerate(class_radius.tolist())
        )
        radius = class_radius[klass]
        finite = all(np.isfinite(w).all() and np.isfinite(b).all() for group in encoders + decoders for w, b in group)
        if not finite or not np.isfinite(mean).all():
            raise ValueError("non-finite weights")
        refine = _build_refinement(tensors, metadata, latent, token_dim) if metadata.get("refine_steps") else None
        pooled = metadata.get("pooled", "0") == "1"
        return cls(name, sha, metadata.get("model", "?"), variant, levels, token_dim, (clip_low, clip_high),
                   encoders, decoders, mean, radius, klass, tables, refine, pooled)


def _build_refinement(tensors: dict[str, np.ndarray], metadata: dict[str, str], latent: int, dim: int) -> Refinement:
    steps = tuple(float(v) for v in metadata["refine_steps"].split(","))
    if not all(math.isfinite(v) and 1e-4 <= v <= 1e4 for v in steps) or len(steps) > 16:
        raise ValueError(f"refine steps {steps}")
    deadzone, offset = float(metadata["refine_deadzone"]), float(metadata["refine_offset"])
    fill = tuple(float(v) for v in metadata.get("refine_fill", ",".join("0" for _ in steps)).split(","))
    if len(fill) != len(steps) or not all(0.0 <= v <= 1.0 for v in fill):
        raise ValueError(f"refine fill weights {fill}")
    if not (0 < deadzone <= 0.5 and 0 <= offset <= 1):
        raise ValueError("refine deadzone/offset out of range")
    ints = {}
    for key in ("refine.pred.weight", "refine.pred.bias", "refine.edges", "refine.group", "refine.counts",
                "refine.offsets", "refine.sizes"):
        if not np.issubdtype(tensors[key].dtype, np.integer):
            raise ValueError(f"{key} must be integers")
        ints[key] = np.asarray(tensors[key]).astype(np.int64)
    weight, bias, edges, group = (ints[k] for k in ("refine.pred.weight", "refine.pred.bias", "refine.edges", "refine.group"))
    if weight.shape not in ((latent, dim), (dim,)) or bias.shape != (dim,) or group.shape != (dim,) or edges.ndim != 1:
        raise ValueError("refinement predictor shapes")
    if np.abs(weight).max() >= 1 << 20 or np.abs(bias).max() >= 1 << 40 or group.min() < 0 or group.max() >= 64:
        raise ValueError("refinement predictor values out of range")
    buckets = edges.shape[0] + 1
    contexts = pooled_refine_contexts(int(group.max()) + 1, buckets)
    counts, offsets, sizes = ints["refine.counts"], ints["refine.offsets"], ints["refine.sizes"]
    if counts.shape[:2] != (len(steps), contexts + 1) or offsets.shape != counts.shape[:2] or sizes.shape != offsets.shape:
        raise ValueError("refinement table shapes")
    if sizes.min() < 1 or sizes.max() > counts.shape[2]:
        raise ValueError("refinement table sizes")
    tables = tuple(
        tuple(FrequencyTable.from_counts(int(offsets[k, c]), counts[k, c, : int(sizes[k, c])]) for c in range(contexts + 1))
        for k in range(len(steps))
    )
    return Refinement(steps, deadzone, offset, fill, weight.astype(np.float64), bias.astype(np.float64),
                      edges.astype(np.float64), group, tables)


_CACHE: dict[tuple[str, int, int], MetaAEWeights] = {}
_CACHE_LOCK = threading.Lock()


def load_weights(path: str | Path | None = None) -> MetaAEWeights | TokenWeights | PlaneWeights:
    """The weights at path (default: the shipped `lite` file), loaded once per file version, either layout."""
    path = Path(path) if path is not None else default_weights_path()
    try:
        stat = path.stat()
    except OSError as error:
        raise CodecError(
            f"the metaae weights {path} are missing ({error.strerror}); pass an existing weights file, reinstall "
            "prosemc, or train weights with `prosemc fit --model MODEL --images DIR -o WEIGHTS`"
        ) from None
    key = (str(path.resolve()), stat.st_mtime_ns, stat.st_size)
    with _CACHE_LOCK:
        if key not in _CACHE:
            _CACHE[key] = weights_from_bytes(read_bytes(path), str(path))
        return _CACHE[key]


def weights_from_bytes(data: bytes, name: str) -> MetaAEWeights | TokenWeights | PlaneWeights:
    """Weights of any layout (pooled `lite`, per-token token/1 or token/2) from a file's bytes; CodecError if invalid."""
    tensors, metadata, sha = parse(data, name)
    layout = metadata.get("format")
    if layout not in (FORMAT_TOKEN, FORMAT_PLANES):
        return MetaAEWeights.from_bytes(data, name)
    try:
        return (TokenWeights if layout == FORMAT_TOKEN else PlaneWeights).build(name, sha, tensors, metadata)
    except (KeyError, ValueError, TypeError) as error:
        raise CodecError(f"{name} is not a valid {layout} weights file ({error}); re-run `prosemc fit`") from None


def weights_by_sha256(sha256: Any) -> MetaAEWeights | TokenWeights | PlaneWeights:
    """The shipped weights whose bytes hash to sha256; CodecError naming the hashes here and the fix otherwise."""
    found = {}
    for path in shipped_weights():
        weights = load_weights(path)
        if weights.sha256 == sha256:
            return weights
        found[path.name] = weights.sha256
    here = ", ".join(f"{name} {sha}" for name, sha in found.items()) or "none"
    raise CodecError(
        f"this file was encoded with metaae weights sha256 {sha256}, which this prosemc does not ship (shipped: "
        f"{here}); pass the weights file that encoded it (--codec-weights), or re-encode the image"
    )


def make_metaae(weights: str | Path | MetaAEWeights | TokenWeights | PlaneWeights | None = None,
                model: str | None = None, model_sha256: str | None = None, **options: Any) -> Any:
    """The metaae/1 codec for explicit weights, else the shipped weights a header names by sha256, else those
    shipped for `model` (default `lite`); a header's sha256 that the chosen weights do not have is refused.
    options: layers, coder_id, compiled (the token/2 codec's compiled encoder; ignored by the others)."""
    if weights is None and model_sha256 is not None:
        weights = weights_by_sha256(model_sha256)
    elif weights is None and model is not None:
        path = shipped_weights_path(model)
        if not path.is_file():
            raise CodecError(f"prosemc ships no metaae weights for model {model!r}; train them with `prosemc fit "
                             f"--model {model} --images DIR -o W.safetensors` and pass --codec-weights W")
        weights = path
    if not hasattr(weights, "sha256"):
        weights = load_weights(weights)
    compiled = bool(options.pop("compiled", False))  # only the token/2 codec has a compiled encoder
    if isinstance(weights, MetaAEWeights):
        return MetaAutoEncoderCodec(weights, model_sha256=model_sha256, **options)
    if model_sha256 is not None:
        check_sha256(model_sha256, weights)
    if isinstance(weights, TokenWeights):
        return TokenMetaAECodec(weights, **options)
    return PlaneMetaAECodec(weights, compiled=compiled, **options)


class MetaAutoEncoderCodec:
    """metaae/1: progressive codec of tokens [N, 1280] through the trained Meta AutoEncoder (numpy)."""

    codec_id = CODEC_ID

    def __init__(
        self,
        weights: str | Path | MetaAEWeights | None = None,
        layers: int | None = None,
        coder_id: str = DEFAULT_CODER_ID,
        model_sha256: str | None = None,
    ) -> None:
        """model_sha256: the hash a file header names; CodecError unless the loaded weights have it."""
        self.weights = weights if isinstance(weights, MetaAEWeights) else load_weights(weights)
        if not isinstance(self.weights, MetaAEWeights):
            raise CodecError(f"{self.weights.path} holds per-token weights; build the codec with make_metaae")
        count = self.weights.layer_count
        if layers is not None and not 1 <= int(layers) <= count:
            raise CodecError(f"metaae/1 with these weights codes 1..{count} layers, got {layers}")
        self.layers = int(layers) if layers is not None else count
        self.coder = coder_for_id(coder_id)
        if model_sha256 is not None:
            self.check_sha256(model_sha256)

    def check_sha256(self, expected: Any) -> None:
        """CodecError naming both hashes unless expected is the loaded weights' sha256."""
        check_sha256(expected, self.weights)

    def describe(self) -> dict[str, Any]:
        return {
            "codec": {"id": self.codec_id, "model_sha256": self.weights.sha256},  # the rest is in the weights
            "entropy": {"id": self.coder.coder_id},
        }

    # --- encoding --------------------------------------------------------------------------------------

    def symbols(self, tokens: np.ndarray) -> np.ndarray:
        """Integer autoencoder symbols [N, L] (int64) of tokens [N, D] float32 ([1, L] of their mean if pooled)."""
        w = self.weights
        x = check_tokens(tokens, w.token_dim)
        if w.pooled:
            x = np.clip(x, *w.clip).mean(axis=0, keepdims=True, dtype=np.float64).astype(np.float32)
        if w.variant == "nested":
            return self._quantise(mlp(w.encoders[0], x), 0, w.levels[-1])
        state = np.zeros_like(x)
        out = np.empty((x.shape[0], w.levels[-1]), dtype=np.int64)
        for k, (start, stop) in enumerate(zip(w.starts, w.levels)):
            residual = x - np.clip(state, *w.clip) if k else x
            out[:, start:stop] = self._quantise(mlp(w.encoders[k], residual), start, stop)
            if k + 1 < len(w.levels):
                state += mlp(w.decoders[k], out[:, start:stop].astype(np.float32) + w.mean[start:stop])
        return out

    def _classes(self, start: int, stop: int) -> list[tuple[int, np.ndarray]]:
        """(table class, latent channels start..stop-1 of that class) in class order: one coder group each."""
        klass = self.weights.table_class[start:stop]
        classes = sorted(set(klass.tolist()))  # not np.unique: it imports numpy.ma, 10-20 ms of an edge cold start
        return [(c, start + np.flatnonzero(klass == c)) for c in classes]

    def _quantise(self, y: np.ndarray, start: int, stop: int) -> np.ndarray:
        w = self.weights
        radius = w.radius[start:stop]
        return np.clip(np.rint(y - w.mean[start:stop]), -radius, radius).astype(np.int64)

    def encode(self, tokens: np.ndarray) -> EncodedTokens:
        """Compress tokens [N, D] float32 into self.layers layers, coarse to fine."""
        w = self.weights
        x = check_tokens(tokens, w.token_dim)
        symbols = self.symbols(x)
        layers = []
        for start, stop in list(zip(w.starts, w.levels))[: self.layers]:
            groups = [(symbols[:, columns].ravel(), w.tables[c]) for c, columns in self._classes(start, stop)]
            layers.append(self.coder.encode(groups))
        if self.layers > len(w.levels):
            state = RefinementState(self, symbols, x.shape[0])
            target = np.clip(x.astype(np.float64), *w.clip)
            for k in range(self.layers - len(w.levels)):
                q = state.quantise(target, k)
                layers.append(self.coder.encode(state.groups(q, k)))
                state.apply(q, k)
        return EncodedTokens(params={"layers": self.layers}, layers=layers)

    # --- decoding --------------------------------------------------------------------------------------

    def _stream_layers(self, params: dict[str, Any]) -> int:
        """The layer count of a stream with these params (CodecError for params these weights cannot decode)."""
        return stream_layer_count(params, self.weights)

    def _layer_symbols(self, rows: int) -> list[int]:
        """Symbols each layer codes for tokens [rows, D]: autoencoder latents, then per refinement level every
        coefficient and channel peak (at most)."""
        w = self.weights
        latent_rows = 1 if w.pooled else rows
        refinement = len(w.refine.steps) if w.refine is not None else 0
        return [latent_rows * (stop - start) for start, stop in zip(w.starts, w.levels)] + \
            [rows * w.token_dim + w.token_dim] * refinement

    def max_layer_bytes(self, params: dict[str, Any], shape: tuple[int, int]) -> list[int]:
        """The most payload bytes each layer of such a stream can hold (its ANS words)."""
        count = self._stream_layers(params)
        rows = check_shape(shape, self.weights.token_dim)
        return [ans_payload_bytes(symbols) for symbols in self._layer_symbols(rows)[:count]]

    def decode(self, params: dict[str, Any], layers: Sequence[bytes], shape: tuple[int, int]) -> np.ndarray:
        """Reconstruct tokens [N, D] float32 from the first len(layers) >= 1 layers."""
        coarse, state, _ = self._decode_state(params, layers, shape)
        if state is None:
            return coarse
        return state.tokens(coarse if self.weights.pooled else None)

    def quality_estimate(self, params: dict[str, Any], layers: Sequence[bytes], shape: tuple[int, int]) -> float:
        """Predicted mean per-token cosine between the tokens decoded from these layers and the full,
        uncompressed tokens, in [0, 1].

        Analytic (prosemc.codec.quality), for pooled weights: level 1 gives every token the mean m', whose
        cosine to sparse tokens is sqrt(POOLED_ENERGY_RATIO); refinement levels add significant values
        (error s²/12 each), the dead-zone energy extrapolated from the octave counts, and the fill, whose
        per-channel value restores m'_c and so explains that much of the not-yet-significant values.
        NotImplementedError for dense (per-token) autoencoder weights, which have no such model.
        """
        w = self.weights
        if not w.pooled or w.refine is None:
            raise NotImplementedError("metaae/1 estimates quality only for pooled weights with refinement levels")
        coarse, state, new_counts = self._decode_state(params, layers, shape)
        mean = coarse[0].astype(np.float64)  # m' [D]
        rows = coarse.shape[0]
        if state is None:
            significant = np.zeros(coarse.shape, dtype=bool)
            values, error_per_value, fill_weight, dead_zone = np.zeros(coarse.shape), 0.0, 1.0, 0.0
            threshold = w.clip[1] - w.clip[0]  # every value lies in the clip range
        else:
            refine, k = w.refine, state.applied - 1
            significant = state.significant
            values = np.where(significant, state.reconstruction, 0.0)
            step = refine.steps[k]
            error_per_value, threshold, fill_weight = step**2 / 12.0, (1.0 - refine.deadzone) * step, refine.fill[k]
            free_total = int((~significant).sum())
            previous = new_counts[-2] if len(new_counts) > 1 else None
            dead_zone = dead_zone_energy(new_counts[-1], previous, threshold, free_total, FIRST_REFINEMENT_GROWTH)
            dead_zone /= max(free_total, 1)
        free = ~significant
        missing = np.maximum(mean * rows - values.sum(axis=0), 0.0)  # [D] mass of the not-yet-significant values
        free_mean = np.minimum(missing / np.maximum(free.sum(axis=0), 1), threshold)  # [D]
        fill = fill_weight * free_mean
        fill_energy = np.minimum(fill**2 / POOLED_ENERGY_RATIO, fill * threshold)  # [D] per free value
        decoded = (values**2).sum(axis=1)
        cross = decoded + free @ (fill * free_mean)
        true = decoded + significant.sum(axis=1) * error_per_value + free @ fill_energy + free.sum(axis=1) * dead_zone
        return mean_cosine(cross, true, decoded + free @ (fill**2))

    def _decode_state(self, params: dict[str, Any], layers: Sequence[bytes], shape: tuple[int, int]
                      ) -> tuple[np.ndarray, RefinementState | None, list[int]]:
        """Tokens' [N, D] of the autoencoder levels, the refinement state (None before level 2) and the values
        each refinement level made newly significant."""
        w = self.weights
        rows = check_stream(params, layers, shape, w)
        for k, (payload, coded) in enumerate(zip(layers, self._layer_symbols(rows))):
            updated = rows * w.token_dim if k >= len(w.levels) else 0  # a refinement level updates every value
            try:
                check_layer_work(self.codec_id, coded + updated, len(payload))
            except CodecError as error:
                raise CodecError(f"layer {k + 1}: {error}") from error
        latent_rows = 1 if w.pooled else rows
        symbols = np.zeros((latent_rows, w.levels[-1]), dtype=np.int64)
        ae_layers = min(len(layers), len(w.levels))
        for k, payload in enumerate(layers[:ae_layers]):
            start, stop = w.starts[k], w.levels[k]
            try:
                reader = self.coder.reader(bytes(payload))
                for c, columns in self._classes(start, stop):
                    values = reader.read(w.tables[c], latent_rows * len(columns))
                    symbols[:, columns] = values.reshape(latent_rows, len(columns))
                reader.finish()
            except CodecError as error:
                raise CodecError(f"layer {k + 1}: {error}") from error
        coarse = self.reconstruct(symbols, ae_layers, rows)
        if len(layers) == ae_layers:
            return coarse, None, []
        state = RefinementState(self, symbols, rows)
        new_counts = []
        for k, payload in enumerate(layers[ae_layers:]):
            try:
                q = state.read(self.coder.reader(bytes(payload)), k)
            except CodecError as error:
                raise CodecError(f"layer {ae_layers + k + 1}: {error}") from error
            before = int(state.significant.sum())
            state.apply(q, k)
            new_counts.append(int(state.significant.sum()) - before)
        return coarse, state, new_counts

    def reconstruct(self, symbols: np.ndarray, levels: int, rows: int | None = None) -> np.ndarray:
        """Tokens' [N, D] float32 from symbols [N, L] using the first `levels` autoencoder levels.

        Pooled weights: symbols [1, L] decode to the mean token, repeated for `rows` tokens.
        """
        w = self.weights
        if w.pooled:
            mean = self._reconstruct(symbols[:1], levels)
            return np.repeat(mean, rows or 1, axis=0)
        return self._reconstruct(symbols, levels)

    def _reconstruct(self, symbols: np.ndarray, levels: int) -> np.ndarray:
        w = self.weights
        stop = w.levels[levels - 1]
        if w.variant == "nested":
            latent = np.zeros((symbols.shape[0], w.levels[-1]), dtype=np.float32)
            latent[:, :stop] = symbols[:, :stop].astype(np.float32) + w.mean[:stop]
            return np.clip(mlp(w.decoders[0], latent), *w.clip)
        state = np.zeros((symbols.shape[0], w.token_dim), dtype=np.float32)
        for k in range(levels):
            start, end = w.starts[k], w.levels[k]
            state += mlp(w.decoders[k], symbols[:, start:end].astype(np.float32) + w.mean[start:end])
        return np.clip(state, *w.clip)


def bits_estimate(weights: MetaAEWeights, symbols: np.ndarray) -> np.ndarray:
    """Ideal code length in bits of each level's symbols [N, L] under the integer tables (for reports)."""
    total = float(1 << 24)
    out = []
    for start, stop in zip(weights.starts, weights.levels):
        bits = 0.0
        for c in range(start, stop):
            table = weights.tables[int(weights.table_class[c])]
            probabilities = table.weights[symbols[:, c] - table.offset] / total
            bits += float(-np.log2(probabilities).sum())
        out.append(bits)
    return np.asarray(out)


__all__ = ["MetaAutoEncoderCodec", "MetaAEWeights", "load_weights", "make_metaae", "weights_by_sha256",
           "default_weights_path", "mlp"]
