"""Training the per-token Meta AutoEncoder (token/2 weights): transform, layer schedule, integer tables, error head.

    tokens x [S, N, D] (cached views of unlabeled photos), the model's token grid R x C (or none)
      --mean, 2-D DCT of each grid tile, PCA of each band group's frequencies (float64)--> GridTransform
      optional (--steps): per-channel gains g trained by gradient (Adam, straight-through rounding) on
          relMSE(x, x'_j) + (1 - per-token cosine) + w * KL(cloud(x) || cloud(x'_j)) at random step levels j,
          + lambda * R (a Laplace rate, held at its start by a dual variable); cloud = the layers after the split
      --coefficients c [S, N, D]--> blocks (band group x channel group): for each block and step level, the
          zero-order entropy and squared error of its dead-zone quantisation; the lower convex hull of each block's
          (rate, distortion) points gives its level increments, all blocks' increments sorted by slope (distortion
          saved per bit) and cut into layers at geometrically growing sizes --> schedule [K, B]
      export (numpy, through prosemc.codec.metaae_planes itself): alphabets from the clip limits, integer context
          tables counted on the training views, the error head's statistics and per-layer calibration.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from typing import Any, Callable, Iterator

import numpy as np
import torch

from prosemc.codec import metaae_weights
from prosemc.codec.metaae_planes import PlaneState, PlaneWeights, block_map, finest_magnitudes, layer_symbols
from prosemc.codec.metaae_transform import GridTransform, dct_basis, zigzag_index
from prosemc.codec.metaae_weights import MAX_HALVINGS, PLANE_CONTEXTS, SIGNIFICANCE_CONTEXTS
from prosemc.codec.quality import token_cosines


@dataclass
class TokenConfig:
    """Per-token model and training settings; stored in the weights file's metadata."""

    layers: int = 11  # layers of the schedule (fewer if the blocks run out of increments)
    first_layer_share: float = 0.011  # the first layer's size as a share of all layers' (estimated rate)
    levels: int = 10  # step levels: step0 = 2 ** ceil(log2(first_step_sigmas x the largest deviation)), halving
    first_step_sigmas: float = 2.0
    delta: float = 0.5  # a significant coefficient decodes to (m + delta) x step
    pca_bands: tuple[int, ...] = (0, 1, 3, 7)  # grid models: first u + v of each rotation's band group
    block_bands: tuple[int, ...] = (0, 1, 2, 3, 4, 6, 8, 11, 15, 20)  # first u + v of each block band group
    block_channels: tuple[float, ...] = (0.0, 1 / 28, 3 / 28, 1 / 4, 1 / 2)  # block channel groups, share of D
    steps: int = 0  # training steps of per-channel gains (0: the transform as fitted; see docs/metaae-token.md)
    batch: int = 16  # views per step
    levels_per_step: int = 2  # step levels whose distortion each training step measures (chosen at random)
    cloud_batch: int = 4  # views per step that also go through the cloud layers
    cloud_weight: float = 1.0  # weight of the cloud layers' label KL in the training loss (steps > 0)
    lr: float = 1e-2
    views: int = 24
    seed: int = 0
    rd_views: int = 128  # views the schedule's rates and distortions are measured on
    table_views: int = 256  # views the tables and the error head are fitted on


def config_of(metadata: dict[str, str]) -> TokenConfig:
    """The TokenConfig a token/2 weights file was fitted with (its `config` metadata; settings it lacks default)."""
    known = TokenConfig.__dataclass_fields__
    stored = json.loads(metadata.get("config", "{}"))
    return TokenConfig(**{key: tuple(value) if isinstance(value, list) else value
                          for key, value in stored.items() if key in known})


def check_config(config: TokenConfig) -> str | None:
    """What is wrong with a config (one line), or None."""
    if config.views < 1 or config.steps < 0 or config.layers < 1:
        return "views and layers must be at least 1 and steps at least 0"
    if not 2 <= config.levels <= MAX_HALVINGS + 1:
        return f"levels must be in 2..{MAX_HALVINGS + 1}"
    if not 0 < config.first_layer_share <= 1 or config.first_step_sigmas <= 0 or not 0 <= config.delta <= 1:
        return "first_layer_share must be in (0, 1], first_step_sigmas positive and delta in [0, 1]"
    return None


def fit_transform(tokens: np.ndarray, grid: tuple[int, int] | None, config: TokenConfig) -> GridTransform:
    """Mean, DCT of each tile of the grid (none without a grid) and the PCA rotation of each band group, gains 1."""
    dim = tokens.shape[-1]
    flat = tokens.reshape(-1, dim)[:: max(1, tokens.shape[0] * tokens.shape[1] // 40000)].astype(np.float64)
    mean = flat.mean(axis=0)
    rows, cols = grid if grid else (0, 0)
    starts = (0,)
    if rows:
        top = int(zigzag_index(rows, cols).max())
        starts = tuple(sorted({s for s in config.pca_bands if 0 <= s <= top} | {0}))
    sample = tokens[:: max(1, tokens.shape[0] // 256)].astype(np.float64) - mean  # [S, N, D]
    if rows:
        row_basis, col_basis = dct_basis(rows), dct_basis(cols)
        tiles = sample.reshape(-1, rows, cols, dim)
        sample = np.einsum("ui,vj,sijc->suvc", row_basis, col_basis, tiles).reshape(-1, rows * cols, dim)
        group = np.searchsorted(np.array(starts[1:]), zigzag_index(rows, cols), side="right")
        starts = merged_band_groups(starts, np.bincount(group, minlength=len(starts)) * sample.shape[0], 2 * dim)
        group = np.searchsorted(np.array(starts[1:]), zigzag_index(rows, cols), side="right")
    else:
        sample, group = sample.reshape(-1, 1, dim), np.zeros(1, dtype=np.int64)
    rotations = []
    for g in range(len(starts)):
        values = sample[:, group == g].reshape(-1, dim)
        variances, vectors = np.linalg.eigh(values.T @ values / max(1, len(values)))
        vectors = vectors[:, np.argsort(variances)[::-1]]
        vectors *= np.where(vectors[np.abs(vectors).argmax(axis=0), np.arange(dim)] < 0, -1.0, 1.0)  # fixed signs
        rotations.append(vectors)
    return GridTransform(mean.astype(np.float32), np.array(rotations, dtype=np.float32), np.ones(dim, np.float32),
                         rows, cols, starts)


def merged_band_groups(starts: tuple[int, ...], samples: np.ndarray, minimum: int) -> tuple[int, ...]:
    """Band group starts with every group that has fewer than `minimum` training samples [P] merged into the next
    finer one (the last into the one before): a PCA of fewer samples than channels leaves directions with no
    training variance, which the schedule would never code, capping the finest layer on new photos."""
    merged: list[list[int]] = []
    for start, count in zip(starts, samples.tolist()):
        if merged and merged[-1][1] < minimum:
            merged[-1][1] += count
        else:
            merged.append([start, count])
    if len(merged) > 1 and merged[-1][1] < minimum:
        merged[-2][1] += merged.pop()[1]
    return tuple(start for start, _ in merged)


def train_gains(tokens: np.ndarray, transform: GridTransform, config: TokenConfig,
                cloud: Callable[[torch.Tensor], torch.Tensor] | None, progress: Callable[[int, str], None],
                losses: list[float] | None = None) -> GridTransform:
    """Per-channel gains learned by gradient for config.steps steps (the decoder stays the exact inverse)."""
    if not config.steps:
        return transform
    torch.manual_seed(config.seed)
    dim = tokens.shape[-1]
    spatial = _torch_spatial(transform)
    rotation = torch.from_numpy(transform.rotation.astype(np.float32))
    group = torch.from_numpy(np.tile(transform.position_group, tokens.shape[1] // transform.positions))
    mean = torch.from_numpy(transform.mean.astype(np.float32))
    coefs = np.stack([transform.forward(x) for x in tokens[:: max(1, len(tokens) // 64)].astype(np.float32)])
    deviation = np.sqrt((coefs.reshape(-1, dim) ** 2).mean(axis=0)) + 1e-6
    step0 = 2.0 ** math.ceil(math.log2(config.first_step_sigmas * float(deviation.max())))
    steps = [step0 * 2.0 ** -j for j in range(config.levels)]
    log_gain = torch.nn.Parameter(torch.zeros(dim))
    log_scale = torch.nn.Parameter(torch.from_numpy(np.log(deviation / math.sqrt(2))).float())
    optimiser = torch.optim.Adam([log_gain, log_scale], lr=config.lr)
    multiplier, reference_rate = 0.0, None

    def to_coefficients(x: torch.Tensor) -> torch.Tensor:
        frequencies = spatial(x - mean, False)  # [B, N, D]
        return torch.einsum("bnd,nde->bne", frequencies, rotation[group])

    def to_tokens(c: torch.Tensor) -> torch.Tensor:
        return spatial(torch.einsum("bne,nde->bnd", c, rotation[group]), True) + mean

    for step in range(config.steps):
        rng = np.random.default_rng([config.seed, step])
        index = np.sort(rng.choice(tokens.shape[0], size=min(config.batch, tokens.shape[0]), replace=False))
        x = torch.from_numpy(tokens[index].astype(np.float32)).clone()
        g = log_gain.exp()
        z = to_coefficients(x) * g
        chosen = min(config.levels_per_step, config.levels)
        levels = sorted(rng.choice(config.levels, size=chosen, replace=False).tolist())
        loss = torch.zeros(())
        teacher = None
        if cloud is not None and config.cloud_weight:
            with torch.no_grad():
                teacher = torch.log_softmax(cloud(x[: config.cloud_batch]), dim=-1)
        for j in levels:
            rebuilt = to_tokens(deadzone_quantise(z, steps[j], config.delta) / g)
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
    gain = log_gain.detach().double().exp().numpy().astype(np.float32)
    return GridTransform(transform.mean, transform.rotation, gain, transform.rows, transform.cols,
                         transform.group_start)


def fit_token_weights(tokens: np.ndarray, grid: tuple[int, int] | None, config: TokenConfig, model_name: str,
                      extra: dict[str, Any], cloud: Callable[[torch.Tensor], torch.Tensor] | None = None,
                      progress: Callable[[int, str], None] = lambda step, note: None,
                      losses: list[float] | None = None) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """The token/2 weights file's (tensors, metadata) fitted on token views [S, N, D]: the transform (+ gains with
    config.steps, the cloud's labels in the loss where `cloud` is given), the layer schedule, tables, error head."""
    transform = train_gains(tokens, fit_transform(tokens, grid, config), config, cloud, progress, losses)
    progress(config.steps, "layer schedule, integer tables and error head")
    return export_tensors(tokens, transform, config, model_name, extra)


def _torch_spatial(transform: GridTransform) -> Callable[[torch.Tensor, bool], torch.Tensor]:
    """[B, N, D] -> [B, N, D]: the DCT of each tile (or its inverse), identity without a grid."""
    if not transform.rows:
        return lambda values, inverse: values
    rows, cols = transform.rows, transform.cols
    row_basis, col_basis = (torch.from_numpy(dct_basis(n)).float() for n in (rows, cols))

    def spatial(values: torch.Tensor, inverse: bool) -> torch.Tensor:
        r, c = (row_basis.T, col_basis.T) if inverse else (row_basis, col_basis)
        tiles = values.reshape(values.shape[0], -1, rows, cols, values.shape[-1])
        return torch.einsum("ui,vj,btijd->btuvd", r, c, tiles).reshape(values.shape)

    return spatial


def deadzone_quantise(z: torch.Tensor, step: float, delta: float) -> torch.Tensor:
    """z' of the embedded dead-zone quantiser at `step`: (floor(|z| / step) + delta) * step (straight-through)."""
    magnitude = torch.floor(z.abs() / step)
    hard = torch.where(magnitude > 0, torch.sign(z) * (magnitude + delta) * step, torch.zeros_like(z))
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


def block_map_of(transform: GridTransform, config: TokenConfig) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(band group starts, channel group starts) of the blocks, fitted to the grid and the token width."""
    dim = transform.mean.shape[0]
    bands = (0,)
    if transform.rows:
        top = int(zigzag_index(transform.rows, transform.cols).max())
        bands = tuple(sorted({b for b in config.block_bands if 0 <= b <= top} | {0}))
    channels = tuple(sorted({min(dim - 1, max(0, round(dim * f))) for f in config.block_channels} | {0}))
    return bands, channels


def schedule(coefs: np.ndarray, blocks: np.ndarray, count: int, step0: float, config: TokenConfig) -> np.ndarray:
    """Level [K, B] of every block after each layer, from coefficients [S, R, D] and their blocks [R, D]."""
    points = []  # per block: (bits, squared error) when not coded, then at each level
    for b in range(count):
        values = coefs[:, blocks == b].ravel()
        block = [(0.0, float((values ** 2).sum()))]
        for j in range(config.levels):
            step = step0 * 2.0 ** -j
            q = np.floor(np.abs(values) / step)
            rebuilt = np.where(q > 0, (q + config.delta) * step, 0.0) * np.sign(values)
            _, counts = np.unique(q * np.sign(values), return_counts=True)
            bits = float(-(counts * np.log2(counts / counts.sum())).sum())
            block.append((bits, float(((values - rebuilt) ** 2).sum())))
        points.append(block)
    increments = []  # (slope, block, level reached, bits added): the lower convex hull of each block's points
    for b, block in enumerate(points):
        here = 0
        while here < len(block) - 1:
            slopes = [((block[here][1] - block[n][1]) / (block[n][0] - block[here][0]), n)
                      for n in range(here + 1, len(block)) if block[n][0] > block[here][0]]
            if not slopes or max(slopes)[0] <= 0:
                break
            slope, reach = max(slopes)
            increments.append((slope, b, reach - 1, block[reach][0] - block[here][0]))
            here = reach
    increments.sort(key=lambda item: (-item[0], item[1], item[2]))
    total = sum(item[3] for item in increments)
    ratio = config.first_layer_share ** (1.0 / max(1, config.layers - 1))
    targets = [total * ratio ** (config.layers - 1 - k) for k in range(config.layers)]
    level, previous = np.full(count, -1), np.full(count, -1)
    layers, spent, target = [], 0.0, 0
    for _, b, reach, bits in increments:
        if previous[b] >= 0 and reach - previous[b] > MAX_HALVINGS:  # keep each layer's jump codable
            layers.append(level.copy())
            previous = level.copy()
        level[b] = reach
        spent += bits
        if target < len(targets) - 1 and spent >= targets[target]:
            layers.append(level.copy())
            previous = level.copy()
            while target < len(targets) - 1 and spent >= targets[target]:
                target += 1
    level = np.where(level < 0, config.levels - 1, level)  # the last layer codes every block, even one silent in training
    if not layers or not np.array_equal(layers[-1], level):
        layers.append(level.copy())
    return np.array(layers, dtype=np.int32)


def export_tensors(tokens: np.ndarray, transform: GridTransform, config: TokenConfig, model_name: str,
                   extra: dict[str, Any]) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """The token/2 weights file's tensors and metadata: transform, schedule, counted tables, error head."""
    dim = tokens.shape[-1]
    bands, channels = block_map_of(transform, config)
    metadata = {"format": metaae_weights.FORMAT_PLANES, "model": model_name, "token_dim": str(dim),
                "grid_rows": str(transform.rows), "grid_cols": str(transform.cols), "delta": repr(config.delta),
                "config": json.dumps(asdict(config), sort_keys=True), "training": json.dumps(extra, sort_keys=True)}
    sample = np.stack([transform.forward(x) for x in tokens[:: max(1, len(tokens) // config.rd_views)]
                       .astype(np.float32)]).reshape(-1, transform.positions, dim)  # [S * tiles, F, D]
    deviation = np.sqrt((sample ** 2).mean(axis=0))  # [F, D]
    blocks = block_map(transform.rows, transform.cols, bands, channels, dim)
    block_count = len(bands) * len(channels)
    step0 = 2.0 ** math.ceil(math.log2(config.first_step_sigmas * float(deviation.max()) + 1e-30))
    peak = np.zeros(block_count)
    np.maximum.at(peak, blocks.ravel(), np.abs(sample).max(axis=0).ravel())
    tensors = {
        "transform.mean": transform.mean, "transform.rotation": transform.rotation, "transform.gain": transform.gain,
        "transform.group_start": np.array(transform.group_start, dtype=np.int32),
        "coef.log_sigma": np.round(2 * np.log2(np.maximum(deviation, 1e-30))).astype(np.int32),
        "block.band_start": np.array(bands, dtype=np.int32), "block.channel_start": np.array(channels, dtype=np.int32),
        "block.limit": (2.0 * peak + step0 * 2.0 ** -(config.levels - 1)).astype(np.float32),
        "schedule.level": schedule(sample, blocks, block_count, step0, config),
        "schedule.step0": np.array([step0], dtype=np.float32),
    }
    layers = len(tensors["schedule.level"])
    tensors.update({"tables.counts": np.ones((PLANE_CONTEXTS, 2), np.int32),  # until counted
                    "tables.offset": np.zeros(PLANE_CONTEXTS, np.int32),
                    "tables.size": np.full(PLANE_CONTEXTS, 2, np.int32),
                    "quality.insignificant": np.ones((layers, block_count), np.float32),
                    "quality.calibration": np.tile(np.array([0.0, 1.0], np.float32), (layers, 1))})
    views = tokens[:: max(1, len(tokens) // config.table_views)].astype(np.float32)
    tensors.update(count_tables(PlaneWeights.build("<training>", "", tensors, metadata), views))
    tensors["quality.insignificant"] = insignificant_energy(PlaneWeights.build("<training>", "", tensors, metadata),
                                                            views)
    tensors["quality.calibration"] = calibrate(PlaneWeights.build("<training>", "", tensors, metadata), views[:64])
    return tensors, metadata


def decoded_states(weights: PlaneWeights, x: np.ndarray) -> Iterator[PlaneState]:
    """The decoder's state after each layer of tokens x [N, D] (the encoder's symbols, without entropy coding)."""
    fine, sign = finest_magnitudes(weights, x)
    state = PlaneState(weights, x.shape[0])
    for k in range(weights.layer_count):
        state.apply(layer_symbols(weights.plan(k, x.shape[0]), fine, sign)[1], k)
        yield state


def count_tables(weights: PlaneWeights, views: np.ndarray) -> dict[str, np.ndarray]:
    """Integer tables [C, A] counted on token views [S, N, D] (the codec's own states), each symbol <= 1 - 2**-9."""
    bound = np.maximum(weights.symbol_reach, 1)  # every context's table spans at least -1..1
    refinement = np.arange(PLANE_CONTEXTS) >= SIGNIFICANCE_CONTEXTS
    offsets = np.where(refinement, 0, -bound)
    sizes = np.where(refinement, bound + 1, 2 * bound + 1)
    counts = np.zeros((PLANE_CONTEXTS, int(sizes.max())), dtype=np.int64)
    for x in views:
        fine, sign = finest_magnitudes(weights, x)
        for k in range(weights.layer_count):
            keys, q = layer_symbols(weights.plan(k, x.shape[0]), fine, sign)
            np.add.at(counts, (keys, q - offsets[keys]), 1)
    tables = np.zeros_like(counts)
    for c in range(PLANE_CONTEXTS):
        row = counts[c, : sizes[c]] * 64 + 1
        top = int(np.argmax(row))
        rest = int(row.sum()) - int(row[top])
        row[top] = min(int(row[top]), rest * 511)  # no symbol above 1 - 2**-9 of the mass (bounded decoding)
        tables[c, : sizes[c]] = np.maximum(row * (1 << 22) // int(row.sum()), 1)
    return {"tables.counts": tables.astype(np.int32), "tables.offset": offsets.astype(np.int32),
            "tables.size": sizes.astype(np.int32)}


def insignificant_energy(weights: PlaneWeights, views: np.ndarray) -> np.ndarray:
    """[K, B] mean c^2 of each block's coefficients still insignificant after each layer (the error head's guess for
    what the decoder does not know yet); a block's mean c^2 where none is left."""
    layers, block_count = weights.levels.shape
    total, count = np.zeros((layers, block_count)), np.zeros((layers, block_count))
    square, size = np.zeros(block_count), np.zeros(block_count)
    for x in views:
        blocks = np.tile(weights.block_of_position, (x.shape[0] // weights.transform.positions, 1)).ravel()
        c2 = np.minimum(weights.transform.forward(x).ravel() ** 2, weights.limit[blocks] ** 2)
        square += np.bincount(blocks, weights=c2, minlength=block_count)
        size += np.bincount(blocks, minlength=block_count)
        for k, state in enumerate(decoded_states(weights, x)):
            still = state.magnitude == 0
            total[k] += np.bincount(blocks, weights=c2 * still, minlength=block_count)
            count[k] += np.bincount(blocks, weights=still, minlength=block_count)
    mean_square = square / np.maximum(size, 1)
    return np.where(count > 0, total / np.maximum(count, 1), mean_square[None, :]).astype(np.float32)


def calibrate(weights: PlaneWeights, views: np.ndarray) -> np.ndarray:
    """[K, 2] (a, b): the least-squares line from the analytic estimate to the true per-token cosine, per layer."""
    layers = weights.layer_count
    analytic: list[list[np.ndarray]] = [[] for _ in range(layers)]
    truth: list[list[np.ndarray]] = [[] for _ in range(layers)]
    for x in views:
        for k, state in enumerate(decoded_states(weights, x)):
            analytic[k].append(state.quality(calibrated=False))
            truth[k].append(token_cosines(x, state.tokens()))
    calibration = np.zeros((layers, 2), dtype=np.float32)
    for k in range(layers):
        a, t = np.concatenate(analytic[k]), np.concatenate(truth[k])
        slope, intercept = np.polyfit(a, t, 1) if np.ptp(a) > 1e-9 else (0.0, float(t.mean()))
        calibration[k] = (intercept, slope)
    return calibration
