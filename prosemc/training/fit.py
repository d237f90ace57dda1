"""Training the Meta AutoEncoder (torch): one model, every level of the progressive metaae/1 codec.

    photos --augment, frozen edge half in a child process (training.photos)--> tokens x [B, 49, 1280] (cached)
    shipped (pooled, diagonal):  m = mean_n clip(x)  [B, 1, D];  y = m * a + c;  m' = clamp((y' ) * a' + c', 0, 6)
    dense variants:  nested  y = E(x) [B, N, L]; level k sends channels m_{k-1}..m_k; x'_k = clamp(D(y'[:m_k]))
                     residual  y_k = E_k(x - x'_{k-1});  x'_k = clamp(s_k),  s_k = s_{k-1} + D_k(y'_k)
    y' = mean + round(y - mean): straight-through rounding for the decoder, additive uniform noise for the rate
    loss = sum_k [ relMSE_k + (1 - cos_k) + KL(softmax(head(x)) || softmax(head(x'_k)))
                   + |P(x'_k - x)|^2 / |P x|^2 (per token and pooled; P: the head's top singular directions)
                   + lambda_k * bytes_k ]
    lambda_k follows a dual update that steers each level's bytes to its target; rate = -log2 P(symbol) under a
    per-channel discretised Laplace(0, b_c), exported as integer counts (FrequencyTable) with the weights.
    then (numpy, fit_refinement): integer context tables and fill weights of the refinement levels.

`fit` extracts (cached) tokens, trains with a progress line on stderr, checkpoints every epoch (and at max_steps)
so an interrupted run resumes, and is deterministic for a seed on one machine. `export_weights` writes the
safetensors file that `prosemc.codec.metaae` (numpy, no torch) loads.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from prosemc.errors import InputError, ModelError

FORMAT = "prosemc-metaae/1"
TABLE_PRECISION_BITS = 22  # exported counts: floor(P * 2**22) + 1 per symbol
TAIL_MASS = 2.0**-24  # alphabet radius r_c: P(|s| > r_c) below this under the channel's Laplace
MAX_RADIUS = 2047  # alphabet -r..r stays within entropy.MAX_ALPHABET
MIN_SCALE, MAX_SCALE = 0.05, 200.0
SUPPORTED_MODELS = ("lite",)


@dataclass
class MetaAEConfig:
    """Architecture and training settings; stored in the weights file's metadata."""

    variant: str = "nested"  # "nested" (Matryoshka latents) or "residual" (each level codes the residual)
    levels: tuple[int, ...] = (1280,)  # cumulative latent channels after each autoencoder level
    token_dim: int = 1280
    pooled: bool = True  # the autoencoder codes the mean token (what the pooled classifier sees), not each token
    transform: str = "diagonal"  # "diagonal": learned per-channel steps; "linear": dense maps (encoder_hidden...)
    initial_step: float = 0.15  # diagonal transform: starting quantiser step of every channel
    encoder_hidden: int = 0  # 0: linear encoder
    decoder_hidden: int = 0  # 0: clamp(linear) decoder
    clip: tuple[float, float] = (0.0, 6.0)
    target_bytes: tuple[float, ...] = (330.0,)  # cumulative payload bytes per autoencoder level (rate controller)
    refine_steps: tuple[float, ...] = (4.0, 2.0, 1.0, 0.5, 0.25)  # scalar refinement levels after the autoencoder's
    kl_weight: float = 1.0
    logit_weight: float = 1.0  # relative error of every token's (and the pooled) classifier logits, all classes
    cos_weight: float = 1.0
    epochs: int = 60
    batch: int = 64
    lr: float = 2e-3
    views: int = 48
    seed: int = 0

    def validate(self) -> None:
        if self.transform == "diagonal" and self.variant == "residual":
            self.transform = "linear"  # residual levels need dense maps
        if self.variant not in ("nested", "residual"):
            raise InputError(f"variant must be 'nested' or 'residual', got {self.variant!r}")
        levels = tuple(int(m) for m in self.levels)
        if not levels or any(m < 1 for m in levels) or any(b <= a for a, b in zip(levels, levels[1:])):
            raise InputError(f"--levels must be increasing positive channel counts such as 32,64,128, got {levels}")
        if len(levels) > 16 or levels[-1] > 2048:
            raise InputError(f"--levels allows at most 16 levels and 2048 channels, got {levels}")
        if self.transform not in ("diagonal", "linear"):
            raise InputError(f"transform must be 'diagonal' or 'linear', got {self.transform!r}")
        if len(self.target_bytes) != len(levels):
            self.target_bytes = default_targets(len(levels))
        self.levels = levels
        self.refine_steps = tuple(float(v) for v in self.refine_steps)
        if any(not 0 < b < a for a, b in zip(self.refine_steps, self.refine_steps[1:])) or len(self.refine_steps) > 15:
            raise InputError(f"refine steps must be positive and shrinking, got {self.refine_steps}")


def default_targets(count: int) -> tuple[float, ...]:
    """Cumulative byte targets for count levels: 430 B for level 1 growing to 2900 B for the last."""
    if count == 1:
        return (430.0,)
    return tuple(float(430.0 * (2900.0 / 430.0) ** (k / (count - 1))) for k in range(count))


class Decoder(nn.Module):
    """Latent [.., m] -> [.., D]: linear (or MLP with one ReLU hidden layer); clamping happens outside."""

    def __init__(self, width: int, hidden: int, dim: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            [nn.Linear(width, hidden), nn.Linear(hidden, dim)] if hidden else [nn.Linear(width, dim)]
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        for index, layer in enumerate(self.layers):
            z = layer(z)
            if index < len(self.layers) - 1:
                z = torch.relu(z)
        return z


class Encoder(Decoder):
    """Tokens [.., D] -> latent [.., m]: linear (or MLP with one ReLU hidden layer)."""


class Diagonal(nn.Module):
    """Per-channel scale and offset, [.., D] -> [.., D]: learned quantiser step sizes (y = x * weight + bias)."""

    def __init__(self, dim: int, scale: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.full((dim,), float(scale)))
        self.bias = nn.Parameter(torch.zeros(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.weight + self.bias


class DiagonalMap(nn.Module):
    """A one-layer map holding a Diagonal (so encoders and decoders share the `layers` structure)."""

    def __init__(self, dim: int, scale: float) -> None:
        super().__init__()
        self.layers = nn.ModuleList([Diagonal(dim, scale)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers[0](x)


class MetaAE(nn.Module):
    """The Meta AutoEncoder (see module docstring); forward gives every level's reconstruction and rate."""

    def __init__(self, config: MetaAEConfig) -> None:
        super().__init__()
        config.validate()
        self.config = config
        levels, dim = config.levels, config.token_dim
        widths = [levels[0]] + [b - a for a, b in zip(levels, levels[1:])]
        if config.transform == "diagonal":
            if config.variant != "nested" or levels != (dim,):
                raise InputError(f"the diagonal transform codes all {dim} channels in one nested level, got {levels}")
            self.encoders = nn.ModuleList([DiagonalMap(dim, 1.0 / config.initial_step)])
            self.decoders = nn.ModuleList([DiagonalMap(dim, config.initial_step)])
        elif config.variant == "nested":
            self.encoders = nn.ModuleList([Encoder(dim, config.encoder_hidden, levels[-1])])
            self.decoders = nn.ModuleList([Decoder(levels[-1], config.decoder_hidden, dim)])
        else:
            self.encoders = nn.ModuleList([Encoder(dim, config.encoder_hidden, w) for w in widths])
            self.decoders = nn.ModuleList([Decoder(w, config.decoder_hidden, dim) for w in widths])
        self.latent_mean = nn.Parameter(torch.zeros(levels[-1]))
        self.latent_log_scale = nn.Parameter(torch.zeros(levels[-1]))

    @property
    def scales(self) -> torch.Tensor:
        return self.latent_log_scale.exp().clamp(MIN_SCALE, MAX_SCALE)

    def clamp(self, x: torch.Tensor) -> torch.Tensor:
        return x.clamp(*self.config.clip)

    def quantise(self, y: torch.Tensor, channels: slice, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """(y' for the decoder, rate bits [B]) of latents y [B, N, m] on channels of the shared entropy model."""
        mean, scale = self.latent_mean[channels], self.scales[channels]
        centred = y - mean
        rounded = torch.round(centred)
        hard = mean + centred + (rounded - centred).detach()
        noisy = centred + torch.empty_like(centred).uniform_(-0.5, 0.5) if train else rounded
        bits = laplace_bits(noisy, scale).sum(dim=(1, 2))
        return hard, bits

    def forward(self, x: torch.Tensor, train: bool = True) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """x [B, N, D] -> (reconstructions x'_k [B, N, D], rate bits_k [B]) for every level k."""
        levels = self.config.levels
        starts = (0,) + levels[:-1]
        outputs, rates = [], []
        if self.config.variant == "nested":
            y = self.encoders[0](x)
            centred = y - self.latent_mean
            rounded = torch.round(centred)
            hard = self.latent_mean + centred + (rounded - centred).detach()
            noisy = centred + torch.empty_like(centred).uniform_(-0.5, 0.5) if train else rounded
            channel_bits = laplace_bits(noisy, self.scales).sum(dim=1)  # [B, L]
            rates = [channel_bits[:, start:stop].sum(dim=1) for start, stop in zip(starts, levels)]
            decoder = self.decoders[0]
            if isinstance(decoder.layers[0], nn.Linear) and len(decoder.layers) == 1:  # linear: level k's output is the running sum of per-level blocks
                linear = decoder.layers[0]
                running = linear.bias
                for start, stop in zip(starts, levels):
                    running = running + hard[..., start:stop] @ linear.weight[:, start:stop].T
                    outputs.append(self.clamp(running))
            else:
                for stop in levels:
                    mask = torch.zeros(levels[-1], dtype=x.dtype)
                    mask[:stop] = 1.0
                    outputs.append(self.clamp(decoder(hard * mask)))
        else:
            state = torch.zeros_like(x)
            for k, (start, stop) in enumerate(zip(starts, levels)):
                residual = x - self.clamp(state) if k else x
                hard, bits = self.quantise(self.encoders[k](residual), slice(start, stop), train)
                state = state + self.decoders[k](hard)
                outputs.append(self.clamp(state))
                rates.append(bits)
        return outputs, rates


def laplace_bits(value: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """-log2 P(round-interval of value) under Laplace(0, scale): the rate of integer symbols (noisy in training)."""
    magnitude = value.abs()
    upper = (0.5 - magnitude) / scale  # P = G(upper) - G(lower), lower = upper - 1/scale; G the standard CDF
    lower = (-0.5 - magnitude) / scale

    def cdf(t: torch.Tensor) -> torch.Tensor:
        return torch.where(t < 0, 0.5 * torch.exp(t.clamp(max=0)), 1 - 0.5 * torch.exp(-t.clamp(min=0)))

    probability = (cdf(upper) - cdf(lower)).clamp(min=1e-9)
    return -torch.log2(probability)


# --- integer tables --------------------------------------------------------------------------------------


SCALE_CLASSES = 32  # latent channels share this many Laplace tables (log-spaced scales): few coder groups


def laplace_tables(scales: np.ndarray, observed: np.ndarray | None = None
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Scale classes: class of each channel [L], alphabet radius per class [C] and counts [C, 2 * max(r) + 1].

    Channel scales snap to SCALE_CLASSES log-spaced values (a ratio of ~1.2 between neighbours costs well under
    1 % of rate) so a layer codes one group per class, not per channel. counts[s + r] = floor(P(s) * 2**22) + 1
    for s in -r..r, tails folded into the end symbols (the encoder clips symbols to the alphabet). Only these
    integers travel with the weights.
    """
    scales = np.asarray(scales, dtype=np.float64)
    logs = np.log(scales)
    low, high = float(logs.min()), float(logs.max())
    grid = np.linspace(low, high, SCALE_CLASSES) if high > low else np.array([low])
    klass = np.abs(logs[:, None] - grid[None, :]).argmin(axis=1)
    used = np.unique(klass)
    klass = np.searchsorted(used, klass)  # drop empty classes
    class_scales = np.exp(grid[used])
    needed = np.ceil(scales * math.log(1.0 / TAIL_MASS)).astype(np.int64)
    if observed is not None:  # the data's own tails: symbols seen in training stay codable with room to spare
        needed = np.maximum(needed, 2 * np.asarray(observed, dtype=np.int64) + 2)
    radius = np.ones(len(used), dtype=np.int64)
    np.maximum.at(radius, klass, np.minimum(needed, MAX_RADIUS))
    width = int(2 * radius.max() + 1)
    counts = np.zeros((len(used), width), dtype=np.int64)
    for c, (b, r) in enumerate(zip(class_scales.tolist(), radius.tolist())):
        s = np.arange(-r, r + 1, dtype=np.float64)
        cdf_hi = np.where(s + 0.5 < 0, 0.5 * np.exp(np.minimum(s + 0.5, 0) / b), 1 - 0.5 * np.exp(-np.maximum(s + 0.5, 0) / b))
        cdf_lo = np.where(s - 0.5 < 0, 0.5 * np.exp(np.minimum(s - 0.5, 0) / b), 1 - 0.5 * np.exp(-np.maximum(s - 0.5, 0) / b))
        p = cdf_hi - cdf_lo
        p[0] += cdf_lo[0]
        p[-1] += 1 - cdf_hi[-1]
        counts[c, : 2 * r + 1] = np.floor(p * 2.0**TABLE_PRECISION_BITS).astype(np.int64) + 1
    return klass.astype(np.int32), radius.astype(np.int32), counts.astype(np.int32)


# --- export -----------------------------------------------------------------------------------------------


def state_tensors(model: MetaAE, observed: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Numpy tensors of the inference model: weights as [in, out] float32 and the integer tables."""
    tensors: dict[str, np.ndarray] = {}
    for kind, modules in (("enc", model.encoders), ("dec", model.decoders)):
        for k, module in enumerate(modules):
            for i, layer in enumerate(module.layers):
                name = "scale" if isinstance(layer, Diagonal) else "weight"
                tensors[f"{kind}.{k}.{i}.{name}"] = layer.weight.detach().double().numpy().T.astype(np.float32).copy()
                tensors[f"{kind}.{k}.{i}.bias"] = layer.bias.detach().numpy().astype(np.float32).copy()
    scales = model.scales.detach().double().numpy()
    klass, radius, counts = laplace_tables(scales, observed)
    tensors["tables.class"] = klass
    tensors["latent.mean"] = model.latent_mean.detach().numpy().astype(np.float32).copy()
    tensors["latent.scale"] = scales.astype(np.float32)
    tensors["tables.radius"] = radius
    tensors["tables.counts"] = counts
    return tensors


def weights_bytes(
    model: MetaAE, model_name: str, extra: dict[str, Any] | None = None,
    refine: tuple[dict[str, np.ndarray], dict[str, str]] | None = None,
    observed: np.ndarray | None = None,
) -> bytes:
    """The safetensors bytes of the inference model (and its refinement tables, when given)."""
    config = model.config
    metadata = {
        "format": FORMAT,
        "model": model_name,
        "variant": config.variant,
        "levels": ",".join(str(m) for m in config.levels),
        "token_dim": str(config.token_dim),
        "clip": f"{config.clip[0]!r},{config.clip[1]!r}",
        "pooled": "1" if config.pooled else "0",
        "config": json.dumps(asdict(config), sort_keys=True),
        "training": json.dumps(extra or {}, sort_keys=True),
    }
    tensors = state_tensors(model, observed)
    if refine is not None:
        tensors.update(refine[0])
        metadata.update(refine[1])
    return safetensors_bytes(tensors, metadata)


_DTYPES = {np.dtype("float32"): "F32", np.dtype("int32"): "I32", np.dtype("int64"): "I64"}


def safetensors_bytes(tensors: dict[str, np.ndarray], metadata: dict[str, str]) -> bytes:
    """A safetensors file with keys, metadata and JSON in sorted order, so equal weights give equal bytes.

    (safetensors' own writer orders the metadata by a per-process hash, so the same weights hashed differently.)
    """
    header: dict[str, Any] = {"__metadata__": dict(sorted(metadata.items()))}
    blobs, offset = [], 0
    for name in sorted(tensors):
        array = np.ascontiguousarray(tensors[name])
        if array.dtype not in _DTYPES:
            raise ValueError(f"tensor {name} has dtype {array.dtype}, not one of {list(_DTYPES)}")
        blob = array.astype(array.dtype.newbyteorder("<"), copy=False).tobytes()
        header[name] = {"dtype": _DTYPES[array.dtype], "shape": list(array.shape), "data_offsets": [offset, offset + len(blob)]}
        blobs.append(blob)
        offset += len(blob)
    text = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    return len(text).to_bytes(8, "little") + text + b"".join(blobs)


def export_weights(
    model: MetaAE, path: Path, model_name: str, extra: dict[str, Any] | None = None,
    refine: tuple[dict[str, np.ndarray], dict[str, str]] | None = None,
    observed: np.ndarray | None = None,
) -> str:
    """Write the safetensors weights file atomically; return its sha256 (hex)."""
    data = weights_bytes(model, model_name, extra, refine, observed)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    partial.write_bytes(data)
    os.replace(partial, path)
    return hashlib.sha256(data).hexdigest()


PRED_BITS = 10  # fixed-point scale of the refinement context predictor
BUCKET_EDGES = (0.0, 0.3, 0.8, 1.5, 2.5)  # predicted token value buckets (6 contexts per channel group)
CHANNEL_GROUPS = 4
DEADZONE, OFFSET = 0.4, 0.5


def observed_symbols(model: MetaAE, tokens: np.ndarray) -> np.ndarray:
    """Per latent channel [L]: the largest |symbol| the trained encoder gives on the training tokens."""
    found = torch.zeros(model.config.levels[-1], dtype=torch.int64)
    inputs = pooled_tokens(tokens) if model.config.pooled else tokens
    model.eval()
    with torch.no_grad():
        for start in range(0, inputs.shape[0], 64):
            x = torch.from_numpy(inputs[start : start + 64].astype(np.float32)).clone()
            if model.config.variant == "nested":
                centred = model.encoders[0](x) - model.latent_mean
                found = torch.maximum(found, torch.round(centred).abs().amax(dim=(0, 1)).long())
    return found.numpy()


def fit_refinement(model: MetaAE, model_name: str, tokens: np.ndarray, max_views: int = 256,
                   observed: np.ndarray | None = None) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Learn the refinement levels' context tables from training tokens [S, N, D]: integer counts per context."""
    from prosemc.codec.metaae import (
        ACTIVITY_STATES, NEIGHBOUR_STATES, PEAK_CAP, MetaAEWeights, MetaAutoEncoderCodec, Refinement, RefinementState,
    )

    config = model.config
    if any(len(d.layers) != 1 for d in model.decoders):  # linear or diagonal single layers only
        raise InputError("refinement levels need linear decoders (decoder_hidden = 0)")
    steps = tuple(float(v) for v in config.refine_steps)
    low, high = config.clip
    weights = MetaAEWeights.from_bytes(weights_bytes(model, model_name, observed=observed), "<training>")
    # fixed-point predictor: pred = (s + mean) @ W + b, W stacked over levels for the residual variant
    if config.variant == "nested":
        weight = weights.decoders[0][0][0].astype(np.float64)
        bias = weights.decoders[0][0][1].astype(np.float64)
    else:
        weight = np.concatenate([d[0][0] for d in weights.decoders]).astype(np.float64)
        bias = np.sum([d[0][1] for d in weights.decoders], axis=0).astype(np.float64)
    if weight.ndim == 2:
        bias = bias + weights.mean.astype(np.float64) @ weight
    scale = float(1 << PRED_BITS)
    if weight.ndim == 1:  # diagonal decoder: pred = s * w + b elementwise
        bias = weights.decoders[0][0][1].astype(np.float64) + weights.mean.astype(np.float64) * weight
    pred_weight = np.rint(weight * scale).astype(np.int32)
    pred_bias = np.rint(bias * scale).astype(np.int64)
    edges = np.rint(np.asarray(BUCKET_EDGES) * scale).astype(np.int64)
    sample = tokens[:: max(1, tokens.shape[0] // max_views)].astype(np.float32)
    active = (np.clip(sample, low, high) >= (1 - DEADZONE) * steps[-1]).mean(axis=(0, 1))
    quantiles = np.quantile(active, np.linspace(0, 1, CHANNEL_GROUPS + 1)[1:-1])
    group = np.searchsorted(quantiles, active, side="right").astype(np.int32)
    buckets = len(edges) + 1
    peak_tables = 2 * CHANNEL_GROUPS * buckets
    coefficient_tables = PEAK_CAP * buckets * NEIGHBOUR_STATES * ACTIVITY_STATES
    contexts = peak_tables + coefficient_tables  # then one table for significant coefficients
    span = high - low
    insig_size = [int(math.floor(span / s + DEADZONE)) + 1 for s in steps]
    sig_radius = [int(math.floor(span / s + 0.5)) for s in steps]
    width = max(max(insig_size), max(2 * r + 1 for r in sig_radius), 4)
    offsets = np.zeros((len(steps), contexts + 1), dtype=np.int32)
    sizes = np.zeros((len(steps), contexts + 1), dtype=np.int32)
    for k in range(len(steps)):
        sizes[k, :peak_tables] = 4  # peaks 0..3
        sizes[k, peak_tables:contexts] = insig_size[k]
        offsets[k, contexts], sizes[k, contexts] = -sig_radius[k], 2 * sig_radius[k] + 1
    counts = np.zeros((len(steps), contexts + 1, width), dtype=np.int64)
    placeholder = Refinement(steps, DEADZONE, OFFSET, (1.0,) * len(steps), pred_weight.astype(np.float64), pred_bias.astype(np.float64),
                             edges.astype(np.float64), group.astype(np.int64), ())
    object.__setattr__(weights, "refine", placeholder)
    codec = MetaAutoEncoderCodec(weights)
    fill_dot, fill_norm = np.zeros(len(steps)), np.zeros(len(steps))
    for x in sample:
        symbols = codec.symbols(x)
        state = RefinementState(codec, symbols, x.shape[0])
        coarse = codec.reconstruct(symbols, len(config.levels), x.shape[0]) if config.pooled else None
        target = np.clip(x.astype(np.float64), low, high)
        for k in range(len(steps)):
            q = state.quantise(target, k)
            for keys, symbols, base in state.streams(q):
                table = keys + base
                index = table * width + (symbols - offsets[k][table])
                counts[k] += np.bincount(index, minlength=(contexts + 1) * width).reshape(contexts + 1, width)
            state.apply(q, k)
            if coarse is not None:  # least-squares weight of the fill: <x - sparse, F> / <F, F>
                sparse = state.tokens(None).astype(np.float64)
                filled = state.tokens(coarse, k).astype(np.float64) - sparse
                fill_dot[k] += float(((target - sparse) * filled).sum())
                fill_norm[k] += float((filled * filled).sum())
    fill = np.clip(fill_dot / np.maximum(fill_norm, 1e-12), 0.0, 1.0)
    # smooth (every symbol of the alphabet stays codable) and scale to at most 2**24 per table
    table_counts = np.zeros_like(counts, dtype=np.int64)
    for k in range(len(steps)):
        for c in range(contexts + 1):
            row = counts[k, c, : sizes[k, c]] * 64 + 1
            table_counts[k, c, : sizes[k, c]] = np.maximum(row * (1 << 24) // int(row.sum()), 1)
    tensors = {
        "refine.pred.weight": pred_weight, "refine.pred.bias": pred_bias, "refine.edges": edges,
        "refine.group": group, "refine.counts": table_counts.astype(np.int32), "refine.offsets": offsets,
        "refine.sizes": sizes,
    }
    metadata = {"refine_steps": ",".join(repr(v) for v in steps), "refine_deadzone": repr(DEADZONE),
                "refine_offset": repr(OFFSET), "refine_fill": ",".join(f"{v:.3f}" for v in fill)}
    return tensors, metadata


# --- training ---------------------------------------------------------------------------------------------


def classifier_head(model_name: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The frozen classifier (weight [C, D], bias [C]) of the model whose tokens are coded."""
    if model_name not in SUPPORTED_MODELS:
        raise ModelError(f"prosemc fit knows the models {', '.join(SUPPORTED_MODELS)}, not {model_name!r}")
    from prosemc.models.lite import LiteModel

    weight, bias = LiteModel().head
    return torch.from_numpy(weight).float().clone(), torch.from_numpy(bias).float().clone()


def logit_projection(weight: torch.Tensor, rank: int = 256) -> torch.Tensor:
    """[rank, D]: S_k V_k^T of the classifier weight, so ||P r|| ~ ||W r|| for token errors r (cheaper)."""
    _, singular, vh = torch.linalg.svd(weight.double(), full_matrices=False)
    return (singular[:rank, None] * vh[:rank]).float()


@dataclass
class LevelMetrics:
    """Per level: mean payload bytes (from the entropy model), token cosine, relative MSE, top-1 agreement."""

    bytes: list[float] = field(default_factory=list)
    cosine: list[float] = field(default_factory=list)
    rel_mse: list[float] = field(default_factory=list)
    top1: list[float] = field(default_factory=list)


def token_cosine(x: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    """Cosine per token [B, N] (an all-zero token against all-zero scores 1)."""
    dot = (x * r).sum(-1)
    norms = x.norm(dim=-1) * r.norm(dim=-1)
    both_zero = (x.abs().sum(-1) == 0) & (r.abs().sum(-1) == 0)
    return torch.where(norms > 0, dot / norms.clamp(min=1e-12), both_zero.to(x.dtype))


def level_losses(
    model: MetaAE, x: torch.Tensor, head: tuple[torch.Tensor, torch.Tensor], config: MetaAEConfig, train: bool
) -> tuple[list[torch.Tensor], list[torch.Tensor], list[dict[str, float]]]:
    """Distortion loss and rate (bytes per image) for each level on a batch x [B, N, D]."""
    weight, bias = head[0], head[1]
    projection = head[2] if len(head) > 2 else None
    teacher = torch.log_softmax(x.mean(1) @ weight.T + bias, dim=-1)
    if projection is not None and config.logit_weight:
        x_logits = x @ projection.T  # [B, N, k]
        x_logit_energy = (x_logits * x_logits).sum(dim=(1, 2)).clamp(min=1e-6)
        pooled = x_logits.mean(1)
        pooled_energy = (pooled * pooled).sum(-1).clamp(min=1e-6)
    outputs, rates = model(x, train=train)
    x_sq = torch.linalg.vecdot(x, x, dim=-1)  # per-token sums; avoids [B, N, D] temporaries per level
    energy = x_sq.sum(1).clamp(min=1e-6)
    distortions, byte_rates, stats = [], [], []
    for output, bits in zip(outputs, rates):
        r_sq = torch.linalg.vecdot(output, output, dim=-1)
        cross = torch.linalg.vecdot(output, x, dim=-1)
        rel_mse = ((x_sq + r_sq - 2 * cross).sum(1) / energy).mean()
        cosine = (cross / torch.sqrt(x_sq * r_sq + 1e-12)).mean()
        student = torch.log_softmax(output.mean(1) @ weight.T + bias, dim=-1)
        kl = (teacher.exp() * (teacher - student)).sum(-1).mean()
        loss = rel_mse + config.cos_weight * (1 - cosine) + config.kl_weight * kl
        if projection is not None and config.logit_weight:
            error = output @ projection.T - x_logits
            token_term = ((error * error).sum(dim=(1, 2)) / x_logit_energy).mean()
            pooled_error = error.mean(1)
            pooled_term = ((pooled_error * pooled_error).sum(-1) / pooled_energy).mean()
            loss = loss + config.logit_weight * (token_term + pooled_term)
        distortions.append(loss)
        byte_rates.append(bits.mean() / 8.0)
        top1 = (student.argmax(-1) == teacher.argmax(-1)).float().mean()
        stats.append({"mse": rel_mse.item(), "cos": cosine.item(), "kl": kl.item(), "top1": top1.item()})
    return distortions, byte_rates, stats


def pooled_tokens(tokens: np.ndarray) -> np.ndarray:
    """The mean token of each view, [S, 1, D] float32 (computed in float64, clipped like the codec does)."""
    out = np.empty((tokens.shape[0], 1, tokens.shape[2]), dtype=np.float32)
    for start in range(0, tokens.shape[0], 256):
        chunk = np.clip(tokens[start : start + 256].astype(np.float32), 0.0, 6.0)
        out[start : start + 256, 0] = chunk.mean(axis=1, dtype=np.float64)
    return out


def evaluate(model: MetaAE, tokens: np.ndarray, head: tuple[torch.Tensor, torch.Tensor]) -> LevelMetrics:
    """Metrics per level on tokens [S, N, D] with hard rounding (bytes from the entropy model)."""
    if model.config.pooled and tokens.shape[1] != 1:
        tokens = pooled_tokens(tokens)
    metrics = LevelMetrics()
    model.eval()
    sums: dict[str, list[float]] = {}
    count = 0
    with torch.no_grad():
        for start in range(0, tokens.shape[0], 64):
            x = torch.from_numpy(tokens[start : start + 64].astype(np.float32))
            _, byte_rates, stats = level_losses(model, x, head, model.config, train=False)
            running = 0.0
            for k, (rate, stat) in enumerate(zip(byte_rates, stats)):
                running += rate.item()
                for key, value in (("bytes", running), ("cos", stat["cos"]), ("mse", stat["mse"]), ("top1", stat["top1"])):
                    sums.setdefault(f"{key}{k}", []).append(value * x.shape[0])
            count += x.shape[0]
    for k in range(len(model.config.levels)):
        metrics.bytes.append(sum(sums[f"bytes{k}"]) / count)
        metrics.cosine.append(sum(sums[f"cos{k}"]) / count)
        metrics.rel_mse.append(sum(sums[f"mse{k}"]) / count)
        metrics.top1.append(sum(sums[f"top1{k}"]) / count)
    return metrics


class ProgressLine:
    """A one-line progress display on stderr (rewritten in place on a terminal, printed every epoch otherwise)."""

    def __init__(self, stream=sys.stderr, quiet: bool = False) -> None:
        self.stream = stream
        self.quiet = quiet
        self.tty = hasattr(stream, "isatty") and stream.isatty()

    def update(self, text: str, final: bool = False) -> None:
        if self.quiet:
            return
        if self.tty:
            self.stream.write("\r\x1b[2K" + text + ("\n" if final else ""))
            self.stream.flush()
        elif final:
            self.stream.write(text + "\n")
            self.stream.flush()

    def log(self, text: str) -> None:
        self.update(text, final=True)


@dataclass
class FitReport:
    """What `fit` did: output path and sha256, steps, seconds, and held-out metrics if measured."""

    out_path: str
    sha256: str
    steps: int
    seconds: float
    resumed_from_step: int
    train_views: int
    config: dict[str, Any]
    heldout: dict[str, list[float]] | None = None


def _checkpoint_path(out_path: Path, checkpoint_dir: Path | None) -> Path:
    folder = checkpoint_dir if checkpoint_dir is not None else out_path.parent
    return Path(folder) / f".{out_path.name}.ckpt.pt"


def _fingerprint(config: MetaAEConfig, tokens: np.ndarray) -> str:
    digest = hashlib.sha256(json.dumps(asdict(config), sort_keys=True).encode())
    digest.update(str(tokens.shape).encode())
    digest.update(np.ascontiguousarray(tokens[:: max(1, tokens.shape[0] // 16)]).tobytes())
    return digest.hexdigest()


def train(
    config: MetaAEConfig,
    tokens: np.ndarray,
    head: tuple[torch.Tensor, torch.Tensor],
    checkpoint: Path | None = None,
    max_steps: int | None = None,
    progress: ProgressLine | None = None,
) -> tuple[MetaAE, int, int, bool]:
    """Train on tokens [S, N, D] (float16/32); return (model, steps done, step resumed from, finished)."""
    progress = progress or ProgressLine(quiet=True)
    if config.pooled:
        tokens = pooled_tokens(tokens)
    torch.manual_seed(config.seed)
    model = MetaAE(config)
    steps_per_epoch = max(1, tokens.shape[0] // config.batch)
    total = config.epochs * steps_per_epoch
    optimiser = torch.optim.Adam(model.parameters(), lr=config.lr)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimiser, lambda step: min(1.0, (step + 1) / 50) * 0.5 * (1 + math.cos(math.pi * min(step, total) / total))
    )
    log_lambda = torch.full((len(config.levels),), math.log(0.3), dtype=torch.float64)
    targets = torch.tensor([config.target_bytes[0]] + [b - a for a, b in zip(config.target_bytes, config.target_bytes[1:])], dtype=torch.float64)
    step = 0
    fingerprint = _fingerprint(config, tokens)
    if checkpoint is not None and checkpoint.is_file():
        state = torch.load(checkpoint, map_location="cpu", weights_only=True)
        if state.get("fingerprint") == fingerprint:
            model.load_state_dict(state["model"])
            optimiser.load_state_dict(state["optimiser"])
            schedule.load_state_dict(state["schedule"])
            log_lambda = state["log_lambda"]
            torch.set_rng_state(state["rng"])
            step = int(state["step"])
            progress.log(f"fit: resuming from step {step}/{total} ({checkpoint})")
    resumed_from = step

    def save_checkpoint() -> None:
        if checkpoint is None:
            return
        state = {
            "model": model.state_dict(), "optimiser": optimiser.state_dict(), "schedule": schedule.state_dict(),
            "log_lambda": log_lambda, "rng": torch.get_rng_state(), "step": step, "fingerprint": fingerprint,
        }
        partial = checkpoint.with_name(checkpoint.name + f".{os.getpid()}.tmp")
        torch.save(state, partial)
        os.replace(partial, checkpoint)

    model.train()
    started = time.perf_counter()
    while step < total:
        epoch, offset = divmod(step, steps_per_epoch)
        order = np.random.default_rng([config.seed, epoch]).permutation(tokens.shape[0])
        index = order[offset * config.batch : (offset + 1) * config.batch]
        # clone: torch's allocator aligns to 64 bytes; numpy's does not, and BLAS kernels (so float rounding) can
        # depend on alignment -- cloning keeps a seed's weights bit-identical from run to run
        x = torch.from_numpy(tokens[np.sort(index)].astype(np.float32)).clone()
        distortions, byte_rates, stats = level_losses(model, x, head, config, train=True)
        lambdas = log_lambda.exp().float()
        loss = sum(distortions) + sum(l * r / 1000.0 for l, r in zip(lambdas, byte_rates))
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        schedule.step()
        with torch.no_grad():
            ratio = torch.tensor([r.item() for r in byte_rates], dtype=torch.float64) / targets
            log_lambda = (log_lambda + 0.1 * (ratio - 1.0)).clamp(math.log(1e-3), math.log(1e3))
        step += 1
        cumulative = np.cumsum([r.item() for r in byte_rates])
        text = f"fit {step}/{total} ep {epoch + 1}/{config.epochs} " + " ".join(
            f"L{k + 1}:{b:.0f}B cos{s['cos']:.3f} kl{s['kl']:.3f}" for k, (b, s) in enumerate(zip(cumulative, stats))
        ) + f" {time.perf_counter() - started:.0f}s"
        progress.update(text, final=(step % steps_per_epoch == 0))
        if step % steps_per_epoch == 0:
            save_checkpoint()
        if max_steps is not None and step >= max_steps and step < total:
            save_checkpoint()
            return model, step, resumed_from, False
    return model, step, resumed_from, True


def fit(
    model_name: str,
    images: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    out_path: str | os.PathLike[str],
    levels: Sequence[int] | None = None,
    epochs: int | None = None,
    seed: int = 0,
    *,
    variant: str = "nested",
    views: int | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    checkpoint_dir: str | os.PathLike[str] | None = None,
    max_steps: int | None = None,
    threads: int | None = None,
    evaluate_heldout: bool = False,
    quiet: bool = False,
    config_overrides: dict[str, Any] | None = None,
) -> FitReport:
    """Train a Meta AutoEncoder for model_name's tokens on images ("builtin", a folder or paths); write out_path.

    With max_steps the run stops there after saving its checkpoint (out_path is not written); calling fit again
    with the same arguments resumes and ends with the same weights as an uninterrupted run.
    """
    from prosemc.training.photos import builtin_sources, extract_tokens, missing_photos, sources_from

    if model_name not in SUPPORTED_MODELS:
        raise ModelError(f"prosemc fit knows the models {', '.join(SUPPORTED_MODELS)}, not {model_name!r}")
    config = MetaAEConfig(variant=variant, seed=int(seed))
    if levels is not None:
        config.levels = tuple(int(m) for m in levels)
        if config.levels != (config.token_dim,):  # explicit latent widths: a dense (linear) autoencoder
            config.transform = "linear"
            config.target_bytes = default_targets(len(config.levels))
    if epochs is not None:
        if int(epochs) < 1:
            raise InputError(f"--epochs must be at least 1, got {epochs}")
        config.epochs = int(epochs)
    if views is not None:
        config.views = int(views)
    for key, value in (config_overrides or {}).items():
        setattr(config, key, tuple(value) if isinstance(value, list) else value)
    config.validate()
    # one thread by default: the pooled model is tiny, and a fixed thread count keeps float sums (so the
    # weights sha) identical across machines; the child that runs the vision encoder may use more
    torch.set_num_threads(int(threads or os.environ.get("PROSEMC_FIT_THREADS", "1")))
    torch.use_deterministic_algorithms(True)
    progress = ProgressLine(quiet=quiet)
    started = time.perf_counter()
    sources = sources_from(images)
    cache = Path(cache_dir) if cache_dir is not None else None
    threads = int(os.environ.get("PROSEMC_THREADS", "2"))  # vision encoder threads (child process)
    # The vision encoder runs in a child process: running it here changes which CPU kernels torch picks later,
    # and with them the float rounding of training -- a seed must give the same weights cached or not.
    _fill_cache_in_child(images, missing_photos(sources, config.views, config.seed, cache), config.views, config.seed,
                         cache, threads, heldout=False)
    tokens = extract_tokens(None, sources, config.views, config.seed, cache)
    weight, bias = classifier_head(model_name)
    head = (weight, bias, logit_projection(weight))
    out_path = Path(out_path)
    checkpoint = _checkpoint_path(out_path, Path(checkpoint_dir) if checkpoint_dir is not None else None)
    model, steps, resumed, finished = train(config, tokens, head, checkpoint, max_steps, progress)
    heldout = None
    if finished and evaluate_heldout:
        held_sources = builtin_sources("heldout")
        _fill_cache_in_child("builtin", missing_photos(held_sources, 16, 1000, cache), 16, 1000, cache, threads,
                             heldout=True)
        held = extract_tokens(None, held_sources, 16, 1000, cache)
        metrics = evaluate(model, held, head)
        heldout = asdict(metrics)
        progress.log("held-out: " + " ".join(
            f"L{k + 1} {b:.0f}B cos {c:.4f} top1 {t:.3f}"
            for k, (b, c, t) in enumerate(zip(metrics.bytes, metrics.cosine, metrics.top1))
        ))
    sha = ""
    if finished:
        extra = {"images": str(images) if isinstance(images, (str, os.PathLike)) else "list", "photos": len(sources),
                 "train_views": int(tokens.shape[0]), "steps": steps}
        observed = observed_symbols(model, tokens)
        refine = fit_refinement(model, model_name, tokens, observed=observed) if config.refine_steps else None
        sha = export_weights(model, out_path, model_name, extra, refine, observed)
        if checkpoint.is_file():
            checkpoint.unlink()
    return FitReport(str(out_path), sha, steps, time.perf_counter() - started, resumed, int(tokens.shape[0]),
                     asdict(config), heldout)


def _fill_cache_in_child(images: Any, indices: list[int], views: int, seed: int, cache: Path | None, threads: int,
                         heldout: bool) -> None:
    """Run photos.fill_cache in a spawned child process (no-op when nothing is missing)."""
    if not indices:
        return
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    from prosemc.training.photos import fill_cache

    images_arg = str(images) if isinstance(images, (str, os.PathLike)) else [str(p) for p in images]
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        pool.submit(fill_cache, images_arg, indices, views, seed, str(cache) if cache else None, threads, heldout).result()


def load_model(path: str | os.PathLike[str]) -> MetaAE:
    """The torch MetaAE of a weights file written by export_weights (for tests and further training)."""
    from safetensors.numpy import load

    from prosemc.codec.metaae import _metadata

    data = Path(path).read_bytes()
    tensors, metadata = load(data), _metadata(data)
    fields = json.loads(metadata["config"])
    config = MetaAEConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in fields.items()})
    model = MetaAE(config)
    with torch.no_grad():
        for kind, modules in (("enc", model.encoders), ("dec", model.decoders)):
            for k, module in enumerate(modules):
                for i, layer in enumerate(module.layers):
                    name = "scale" if isinstance(layer, Diagonal) else "weight"
                    layer.weight.copy_(torch.from_numpy(tensors[f"{kind}.{k}.{i}.{name}"].T.copy()))
                    layer.bias.copy_(torch.from_numpy(tensors[f"{kind}.{k}.{i}.bias"]))
        model.latent_mean.copy_(torch.from_numpy(tensors["latent.mean"]))
        model.latent_log_scale.copy_(torch.from_numpy(np.log(tensors["latent.scale"])))
    return model.eval()
