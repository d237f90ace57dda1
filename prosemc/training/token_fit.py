"""Training the per-token Meta AutoEncoder (torch) and exporting its integer tables and error head (numpy).

    tokens x [S, N, D] (cached views of unlabeled photos) --PCA (optionally in the cloud's Fisher metric)-->
        E = B * g, P = B^-1 / g: channels by variance, one step scale g (the first step = 4 x the largest deviation)
    optional training of per-channel gains g_c (--steps; Adam, straight-through rounding):
        z = x @ E + e;  z'_j = deadzone_quantise(z, s_j) for step levels j
        loss = sum_j [ relMSE(x, x'_j) + (1 - mean per-token cosine) + w * KL(cloud(x) || cloud(x'_j)) ] + lambda * R
        x'_j = z'_j @ P + p;  cloud = the model's own layers after the split (label logits), where it has one;
        R = Laplace rate of the latents at every step, lambda (a dual variable) keeps R at its PCA value
    export (numpy, through prosemc.codec.metaae_token itself): the schedule of layers (each step level split into
        channel ranges), integer context tables counted on the training tokens, the error head's statistics
        (mean z^2 of still-insignificant coefficients per layer) and per-layer calibration by least squares.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from typing import Any, Callable

import numpy as np
import torch

from prosemc.codec import metaae_weights
from prosemc.codec.metaae_token import LatentState, TokenMetaAECodec, TokenWeights
from prosemc.evaluate import token_cosines


@dataclass
class TokenConfig:
    """Per-token model and training settings; stored in the weights file's metadata."""

    ordering: str = "bitplane"  # "bitplane": every layer halves a channel range's step; "nested": channel chunks
    step_levels: int = 7  # step halvings; the first step is first_step_sigmas x the largest latent deviation
    channel_groups: int = 3  # each step level after the first is sent as this many channel ranges
    first_step_sigmas: float = 4.0
    deadzone: float = 0.4  # not yet significant: q = floor(|r| / step + deadzone)
    offset: float = 0.5  # newly significant value = sign(q) * (|q| - deadzone + offset) * step
    steps: int = 0  # training steps of the quantiser gains (0: the PCA transform; see docs/metaae-token.md)
    batch: int = 16  # views per step
    levels_per_step: int = 2  # step levels whose distortion each training step measures (chosen at random)
    cloud_batch: int = 4  # views per step that also go through the cloud layers
    cloud_weight: float = 1.0  # weight of the cloud layers' label KL in the training loss (steps > 0)
    fisher_weight: float = 0.0  # share of the cloud's Fisher metric in the transform (0: plain PCA; measured best)
    fisher_views: int = 64
    fisher_labels: int = 4
    lr: float = 1e-2
    views: int = 24
    seed: int = 0
    table_views: int = 256  # views the tables and the error head are fitted on


def cloud_fisher(tokens: np.ndarray, cloud: Callable[[torch.Tensor], torch.Tensor], config: TokenConfig) -> np.ndarray:
    """Per-token Fisher information [D, D] of the cloud's label distribution: E[g g^T] over views, tokens and labels
    y drawn from the cloud's own softmax, g = d log p(y | x) / d x_n -- the Hessian of KL(cloud(x) || cloud(x')) at
    x' = x, i.e. the cloud-output loss to second order, per token."""
    generator = torch.Generator().manual_seed(config.seed)
    sample = tokens[:: max(1, len(tokens) // config.fisher_views)][: config.fisher_views]
    dim = tokens.shape[-1]
    fisher = np.zeros((dim, dim))
    for start in range(0, len(sample), 4):
        x = torch.from_numpy(sample[start : start + 4].astype(np.float32)).requires_grad_(True)
        log_p = torch.log_softmax(cloud(x), dim=-1)
        for _ in range(config.fisher_labels):
            label = torch.multinomial(log_p.detach().exp(), 1, generator=generator)
            (grad,) = torch.autograd.grad(log_p.gather(1, label).sum(), x, retain_graph=True)
            flat = grad.double().reshape(-1, dim).numpy()
            fisher += flat.T @ flat
    return fisher / (len(sample) * tokens.shape[1] * config.fisher_labels)


def metric_init(tokens: np.ndarray, config: TokenConfig, fisher: np.ndarray | None = None
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """(mean [D], encoder basis [D, D], decoder basis [D, D] = its inverse, latent gain g) of tokens [S, N, D].

    The basis decorrelates the tokens in the metric M = (1 - w) I / (tr S / D) + w F / (tr F S / D) (S the token
    covariance, F the cloud's Fisher information, w = config.fisher_weight): z = (x - mean) @ M^1/2 R with R the
    eigenvectors of M^1/2 S M^1/2, channels by variance. Equal quantiser steps on z then cost equal M-distortion.
    w = 0 (or no cloud) is plain PCA.
    """
    flat = tokens.reshape(-1, tokens.shape[-1])[:: max(1, tokens.shape[0] * tokens.shape[1] // 40000)]
    flat = flat.astype(np.float64)
    mean = flat.mean(axis=0)
    covariance = np.cov(flat - mean, rowvar=False)
    dim = covariance.shape[0]
    metric = np.eye(dim) * dim / np.trace(covariance)
    if fisher is not None and config.fisher_weight:
        weight = min(max(config.fisher_weight, 0.0), 1.0)
        metric = (1 - weight) * metric + weight * fisher * dim / np.trace(fisher @ covariance)
    values, vectors = np.linalg.eigh(metric)
    root = (vectors * np.sqrt(values)) @ vectors.T
    inverse_root = (vectors / np.sqrt(values)) @ vectors.T
    variances, rotation = np.linalg.eigh(root @ covariance @ root)
    order = np.argsort(variances)[::-1]
    rotation, variances = rotation[:, order], variances[order]
    top = float(np.sqrt(max(variances[0], 1e-24)))
    gain = 2.0 ** (config.step_levels - 1) / (config.first_step_sigmas * top)  # finest step = 1
    return mean, root @ rotation, rotation.T @ inverse_root, gain


def schedule(config: TokenConfig, latent: int) -> list[tuple[float, int, int]]:
    """Layers (step, first channel, stop channel).

    bitplane: step level 0 over every channel, each later (halved) step split into channel ranges;
    nested (Matryoshka): the finest step at once, on growing chunks of channels (as many layers as bitplane).
    """
    if config.ordering == "nested":
        count = 1 + (config.step_levels - 1) * config.channel_groups
        edges = sorted(set(round(latent * (g / count) ** 2) for g in range(count + 1)))
        return [(1.0, a, b) for a, b in zip(edges, edges[1:]) if b > a]
    out = [(2.0 ** (config.step_levels - 1), 0, latent)]
    edges = [round(latent * (g / config.channel_groups) ** 2) for g in range(config.channel_groups + 1)]
    edges = sorted(set(min(max(e, 0), latent) for e in edges))
    for level in range(1, config.step_levels):
        step = 2.0 ** (config.step_levels - 1 - level)
        out += [(step, a, b) for a, b in zip(edges, edges[1:]) if b > a]
    return out


def deadzone_quantise(z: torch.Tensor, step: float, config: TokenConfig) -> torch.Tensor:
    """z' of one dead-zone quantiser at `step` (straight-through gradient)."""
    magnitude = torch.floor(z.abs() / step + config.deadzone)
    hard = torch.where(magnitude > 0, torch.sign(z) * (magnitude - config.deadzone + config.offset) * step,
                       torch.zeros_like(z))
    return z + (hard - z).detach()


def laplace_rate_bits(z: torch.Tensor, step: float, log_scale: torch.Tensor) -> torch.Tensor:
    """Bits of z's step-wide bins under a zero-mean Laplace of per-channel scale exp(log_scale) (noisy z)."""
    scale = log_scale.exp()
    noisy = z.abs() + torch.empty_like(z).uniform_(-0.5, 0.5) * step

    def cdf(t: torch.Tensor) -> torch.Tensor:
        return torch.where(t < 0, 0.5 * torch.exp(t.clamp(max=0)), 1 - 0.5 * torch.exp(-t.clamp(min=0)))

    probability = cdf((noisy + step / 2) / scale) - cdf((noisy - step / 2) / scale)
    return -torch.log2(probability.clamp(min=1e-9)).sum()


def per_token_cosine(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean cosine per token of [B, N, D] tensors."""
    dot = (x * y).sum(-1)
    return (dot / (x.norm(dim=-1) * y.norm(dim=-1)).clamp(min=1e-12)).mean()


def train_transform(tokens: np.ndarray, config: TokenConfig, cloud: Callable[[torch.Tensor], torch.Tensor] | None,
                    progress: Callable[[int, str], None], losses: list[float] | None = None) -> tuple[np.ndarray, ...]:
    """The transform: the metric basis (metric_init: PCA, or PCA in the cloud's Fisher metric), then optionally
    per-channel quantiser gains learned by gradient (the decoder stays the encoder's exact inverse, so the finest
    level loses nothing); return (enc_weight [D, L], enc_bias [L], dec_weight [L, D], dec_bias [D]).

    progress(steps done, note) is called after every step; losses, when given, receives each step's distortion loss."""
    torch.manual_seed(config.seed)
    fisher = cloud_fisher(tokens, cloud, config) if cloud is not None and config.fisher_weight else None
    mean, basis, inverse, gain = metric_init(tokens, config, fisher)
    mean_t, basis_t, inverse_t = (torch.from_numpy(a).float() for a in (mean, basis, inverse))
    log_gain = torch.nn.Parameter(torch.full((basis.shape[1],), math.log(gain)))
    sample = tokens[:: max(1, len(tokens) // 64)].astype(np.float64).reshape(-1, len(mean))
    latent_std = np.sqrt(((sample - mean) @ basis).var(axis=0)) * gain + 1e-3
    log_scale = torch.nn.Parameter(torch.from_numpy(np.log(latent_std / math.sqrt(2))).float())
    optimiser = torch.optim.Adam([log_gain, log_scale], lr=config.lr)
    steps = [2.0 ** (config.step_levels - 1 - j) for j in range(config.step_levels)]
    multiplier, reference_rate = 0.0, None
    for step in range(config.steps):
        rng = np.random.default_rng([config.seed, step])
        index = np.sort(rng.choice(tokens.shape[0], size=min(config.batch, tokens.shape[0]), replace=False))
        x = torch.from_numpy(tokens[index].astype(np.float32)).clone()
        g = log_gain.exp()
        z = ((x - mean_t) @ basis_t) * g
        chosen = min(config.levels_per_step, config.step_levels)
        levels = sorted(rng.choice(config.step_levels, size=chosen, replace=False).tolist())
        loss = torch.zeros(())
        teacher = None
        if cloud is not None and config.cloud_weight:
            with torch.no_grad():
                teacher = torch.log_softmax(cloud(x[: config.cloud_batch]), dim=-1)
        for j in levels:
            rebuilt = (deadzone_quantise(z, steps[j], config) / g) @ inverse_t + mean_t
            error = ((rebuilt - x) ** 2).sum(dim=(1, 2)) / (x ** 2).sum(dim=(1, 2)).clamp(min=1e-9)
            loss = loss + error.mean() + (1 - per_token_cosine(x, rebuilt))
            if teacher is not None:  # KL of the cloud's labels (weight cloud_weight)
                student = torch.log_softmax(cloud(rebuilt[: config.cloud_batch]), dim=-1)
                loss = loss + config.cloud_weight * (teacher.exp() * (teacher - student)).sum(-1).mean()
        rate = sum(laplace_rate_bits(z, s, log_scale) for s in steps) / (8.0 * x.shape[0])
        reference_rate = reference_rate or float(rate.item())
        if losses is not None:
            losses.append(float(loss.item()))
        optimiser.zero_grad(set_to_none=True)
        (loss + multiplier * rate / reference_rate).backward()
        optimiser.step()
        multiplier = max(0.0, multiplier + 0.5 * (float(rate.item()) / reference_rate - 1.0))  # dual: rate stays put
        progress(step + 1, f"loss {loss.item():.4f} rate {rate.item():.0f} B (start {reference_rate:.0f} B)")
    g = log_gain.detach().double().exp().numpy()
    return ((basis * g[None, :]).astype(np.float32), (-(mean @ basis) * g).astype(np.float32),
            (inverse / g[:, None]).astype(np.float32), mean.astype(np.float32))


def table_bounds(config: TokenConfig, layers: list[tuple[float, int, int]], limit: np.ndarray) -> list[tuple[int, int]]:
    """(insignificant radius, refinement radius) per layer: the alphabets that symbols of clipped latents need."""
    previous = np.zeros(limit.shape[0])
    out = []
    for step, a, b in layers:
        before = previous[a:b]
        first = limit[a:b][before == 0]
        reach = max([float(first.max()) if first.size else 0.0, float(((1 - config.deadzone) * before).max())])
        insignificant = int(math.floor(reach / step + config.deadzone)) + 1
        refinement = int(math.ceil(float(before.max()) / step)) + 1
        out.append((insignificant, refinement))
        previous = previous.copy()
        previous[a:b] = step
    return out


def export_tensors(tokens: np.ndarray, transform: tuple[np.ndarray, ...], config: TokenConfig, model_name: str,
                   extra: dict[str, Any]) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """The per-token weights file's tensors and metadata: transform, schedule, counted tables, error head."""
    enc, enc_bias, dec, dec_bias = transform
    dim, latent = enc.shape
    sample = tokens[:: max(1, tokens.shape[0] // config.table_views)].astype(np.float32)
    z = sample.reshape(-1, dim) @ enc + enc_bias
    limit = (2.0 * np.abs(z).max(axis=0) + 2.0 ** (config.step_levels - 1)).astype(np.float32)  # room for new photos
    layers = schedule(config, latent)
    bounds = table_bounds(config, layers, limit.astype(np.float64))
    contexts = metaae_weights.TOKEN_CONTEXTS
    width = max(2 * max(r) + 1 for r in bounds)
    offsets = np.array([[-r_ins] * contexts + [-r_ref] for r_ins, r_ref in bounds], dtype=np.int32)
    sizes = np.array([[2 * r_ins + 1] * contexts + [2 * r_ref + 1] for r_ins, r_ref in bounds], dtype=np.int32)
    tensors = {
        "enc.weight": enc, "enc.bias": enc_bias, "enc.limit": limit, "dec.weight": dec, "dec.bias": dec_bias,
        "schedule.step": np.array([s for s, _, _ in layers], dtype=np.float32),
        "schedule.start": np.array([a for _, a, _ in layers], dtype=np.int32),
        "schedule.stop": np.array([b for _, _, b in layers], dtype=np.int32),
        "tables.counts": np.ones((len(layers), contexts + 1, width), dtype=np.int32),
        "tables.offset": offsets, "tables.size": sizes,
        "quality.insignificant": np.ones((len(layers), latent), dtype=np.float32),
        "quality.calibration": np.tile(np.array([0.0, 1.0], dtype=np.float32), (len(layers), 1)),
    }
    metadata = {"format": metaae_weights.FORMAT_TOKEN, "model": model_name, "token_dim": str(dim),
                "latent_dim": str(latent), "deadzone": repr(config.deadzone), "offset": repr(config.offset),
                "config": json.dumps(asdict(config), sort_keys=True), "training": json.dumps(extra, sort_keys=True)}
    weights = TokenWeights.build("<training>", "", tensors, metadata)
    codec = TokenMetaAECodec(weights)
    counts = np.zeros((len(layers), contexts + 1, width), dtype=np.int64)
    insignificant_sum = np.zeros((len(layers), latent))
    insignificant_count = np.zeros((len(layers), latent))
    for x in sample:
        latent_x = codec.latent(x)
        state = LatentState(weights, x.shape[0])
        for k in range(len(layers)):
            q = state.quantise(latent_x, k)
            keys = state.keys(k)
            np.add.at(counts[k], (keys.ravel(), (q.ravel() - offsets[k][keys.ravel()])), 1)
            state.apply(q, k)
            still = ~state.significant
            insignificant_sum[k] += (latent_x ** 2 * still).sum(axis=0)
            insignificant_count[k] += still.sum(axis=0)
    tables = np.zeros_like(counts)
    for k in range(len(layers)):
        for c in range(contexts + 1):
            row = counts[k, c, : sizes[k, c]] * 64 + 1
            top = int(np.argmax(row))
            rest = int(row.sum()) - int(row[top])
            row[top] = min(int(row[top]), rest * 511)  # no symbol above 1 - 2**-9 of the mass (bounded decoding)
            tables[k, c, : sizes[k, c]] = np.maximum(row * (1 << 22) // int(row.sum()), 1)
    tensors["tables.counts"] = tables.astype(np.int32)
    mean_square = (z.astype(np.float64) ** 2).mean(axis=0)
    tensors["quality.insignificant"] = np.where(insignificant_count > 0, insignificant_sum
                                                / np.maximum(insignificant_count, 1), mean_square).astype(np.float32)
    weights = TokenWeights.build("<training>", "", tensors, metadata)
    calibration = np.zeros((len(layers), 2), dtype=np.float32)
    for k in range(len(layers)):
        analytic, truth = [], []
        for x in sample[:64]:  # the views the calibration is fitted on
            state = codec_state(weights, x, k + 1)
            analytic.append(state.quality(calibrated=False))
            truth.append(token_cosines(x, state.tokens()))
        a, t = np.concatenate(analytic), np.concatenate(truth)
        slope, intercept = np.polyfit(a, t, 1) if np.ptp(a) > 1e-9 else (0.0, float(t.mean()))
        calibration[k] = (intercept, slope)
    tensors["quality.calibration"] = calibration
    return tensors, metadata


def codec_state(weights: TokenWeights, x: np.ndarray, layers: int) -> LatentState:
    """The decoder's state after `layers` layers of tokens x (without entropy coding: same symbols)."""
    codec = TokenMetaAECodec(weights)
    latent_x = codec.latent(x)
    state = LatentState(weights, x.shape[0])
    for k in range(layers):
        state.apply(state.quantise(latent_x, k), k)
    return state
