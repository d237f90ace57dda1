"""The pooled (`lite`) Meta AutoEncoder's tables for numpy inference: integer Laplace tables, refinement context
tables, and the tensors of its weights file (layout and writer: prosemc.codec.metaae_weights).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from prosemc.codec import metaae_weights
from prosemc.errors import InputError
from prosemc.training.model import (
    pooled_tokens,
    Diagonal,
    MAX_RADIUS,
    MetaAE,
    TABLE_PRECISION_BITS,
    TAIL_MASS,
)


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


def weights_tensors(
    model: MetaAE, model_name: str, extra: dict[str, Any] | None = None,
    refine: tuple[dict[str, np.ndarray], dict[str, str]] | None = None,
    observed: np.ndarray | None = None,
) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Tensors and metadata of the inference model's weights file (and its refinement tables, when given)."""
    config = model.config
    metadata = {
        "format": metaae_weights.FORMAT_POOLED,
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
    return tensors, metadata


def export_weights(
    model: MetaAE, path: Path, model_name: str, extra: dict[str, Any] | None = None,
    refine: tuple[dict[str, np.ndarray], dict[str, str]] | None = None,
    observed: np.ndarray | None = None,
) -> str:
    """Write the safetensors weights file atomically; return its sha256 (hex)."""
    tensors, metadata = weights_tensors(model, model_name, extra, refine, observed)
    return metaae_weights.write(path, tensors, metadata)


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
    from prosemc.codec.metaae import MetaAEWeights, MetaAutoEncoderCodec, Refinement
    from prosemc.codec.metaae_refine import RefinementState

    config = model.config
    if any(len(d.layers) != 1 for d in model.decoders):  # linear or diagonal single layers only
        raise InputError("refinement levels need linear decoders (decoder_hidden = 0)")
    steps = tuple(float(v) for v in config.refine_steps)
    low, high = config.clip
    weights = MetaAEWeights.from_bytes(metaae_weights.to_bytes(*weights_tensors(model, model_name, observed=observed)),
                                       "<training>")
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
    contexts = metaae_weights.pooled_refine_contexts(CHANNEL_GROUPS, buckets)  # then one for significant ones
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
