"""Training the Meta AutoEncoder (torch): one model, every level of the progressive metaae/1 codec.

`lite` gets the pooled codec below; every other model (lite-dense, Hugging Face VLMs) the per-token one
(`fit_per_token`, prosemc.training.token_fit).

    photos --augment, frozen edge half in a child process (training.photos)--> tokens x [B, N, D] (cached)
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
so an interrupted run resumes, and is deterministic for a seed on one machine. `training.pooled_tables` builds the
tensors of the weights file (schema and writer: prosemc.codec.metaae_weights) that `prosemc.codec.metaae` loads.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from prosemc.errors import InputError, ModelError
from prosemc.progress import Progress
from prosemc.training.model import (
    pooled_tokens,
    Diagonal,
    MetaAE,
    MetaAEConfig,
    SUPPORTED_MODELS,
    default_targets,
)
from prosemc.training.pooled_tables import (
    export_weights,
    fit_refinement,
    observed_symbols,
)


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
    loss: list[float] | None = None  # per-token models: each training step's distortion loss


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
    progress: Progress | None = None,
) -> tuple[MetaAE, int, int, bool]:
    """Train on tokens [S, N, D] (float16/32); return (model, steps done, step resumed from, finished)."""
    progress = progress or Progress("prosemc: fit", quiet=True)
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
    progress.restart(done=step, total=total)  # the ETA counts only this run's steps

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
        progress.update(step, f"epoch {epoch + 1}/{config.epochs} " + " ".join(
            f"L{k + 1}:{b:.0f}B cos{s['cos']:.3f} kl{s['kl']:.3f}" for k, (b, s) in enumerate(zip(cumulative, stats))))
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
    """Train a Meta AutoEncoder for model_name's tokens on images (one source or several: "builtin", a folder, an
    image file); write out_path.

    With max_steps the run stops there after saving its checkpoint (out_path is not written); calling fit again
    with the same arguments resumes and ends with the same weights as an uninterrupted run.
    """
    if model_name not in SUPPORTED_MODELS:
        if levels is not None or variant != "nested" or max_steps is not None:
            raise InputError("--levels, --variant and --max-steps apply to the pooled `lite` codec only; per-token "
                             "models take --steps")
        return fit_per_token(model_name, images, out_path, seed, views=views, cache_dir=cache_dir, threads=threads,
                             evaluate_heldout=evaluate_heldout, quiet=quiet, config_overrides=config_overrides)
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
    progress = Progress("prosemc: fit", quiet=quiet)
    started = time.perf_counter()
    cache = Path(cache_dir) if cache_dir is not None else None
    sources, tokens = training_tokens(model_name, images, config.views, config.seed, cache, threads)
    weight, bias = classifier_head(model_name)
    head = (weight, bias, logit_projection(weight))
    out_path = Path(out_path)
    checkpoint = _checkpoint_path(out_path, Path(checkpoint_dir) if checkpoint_dir is not None else None)
    model, steps, resumed, finished = train(config, tokens, head, checkpoint, max_steps, progress)
    progress.close(failed=not finished)
    heldout = None
    if finished and evaluate_heldout:
        held = heldout_tokens(model_name, cache)
        metrics = evaluate(model, held, head)
        heldout = asdict(metrics)
        progress.log("held-out: " + " ".join(
            f"L{k + 1} {b:.0f}B cos {c:.4f} top1 {t:.3f}"
            for k, (b, c, t) in enumerate(zip(metrics.bytes, metrics.cosine, metrics.top1))
        ))
    sha = ""
    if finished:
        extra = extra_info(images, sources, tokens, steps)
        observed = observed_symbols(model, tokens)
        refine = fit_refinement(model, model_name, tokens, observed=observed) if config.refine_steps else None
        sha = export_weights(model, out_path, model_name, extra, refine, observed)
        if checkpoint.is_file():
            checkpoint.unlink()
    return FitReport(str(out_path), sha, steps, time.perf_counter() - started, resumed, int(tokens.shape[0]),
                     asdict(config), heldout)


def extra_info(images: Any, sources: list[Any], tokens: np.ndarray, steps: int) -> dict[str, Any]:
    """The weights file's `training` metadata: which images, how many photos and views, how many steps."""
    from prosemc.training.photos import images_label

    return {"images": images_label(images), "photos": len(sources),
            "train_views": int(tokens.shape[0]), "steps": steps}


def training_tokens(model_name: str, images: Any, views: int, seed: int, cache: Path | None,
                    threads: int | None) -> tuple[list[Any], np.ndarray]:
    """(photo sources, token views [S, N, D] float16) for training, with torch set up for reproducible training.

    One training thread by default: a fixed thread count keeps float sums (so the weights sha) identical across
    machines. The vision encoder runs in a spawned child process (PROSEMC_THREADS threads): running it here changes
    which CPU kernels torch picks later, and with them the float rounding of training -- a seed must give the same
    weights cached or not.
    """
    from prosemc.training.photos import extract_tokens, missing_photos, sources_from

    torch.set_num_threads(int(threads or os.environ.get("PROSEMC_FIT_THREADS", "1")))
    torch.use_deterministic_algorithms(True)
    sources = sources_from(images)
    _fill_cache_in_child(model_name, images, missing_photos(model_name, sources, views, seed, cache), views, seed,
                         cache, int(os.environ.get("PROSEMC_THREADS", "2")), heldout=False)
    return sources, extract_tokens(model_name, sources, views, seed, cache)


def heldout_tokens(model_name: str, cache: Path | None) -> np.ndarray:
    """Token views [128, N, D] of the held-out photos (8 photos x 16 views, seed 1000), cached."""
    from prosemc.training.photos import builtin_sources, extract_tokens, missing_photos

    sources = builtin_sources("heldout")
    _fill_cache_in_child(model_name, "builtin", missing_photos(model_name, sources, 16, 1000, cache), 16, 1000, cache,
                         int(os.environ.get("PROSEMC_THREADS", "2")), heldout=True)
    return extract_tokens(model_name, sources, 16, 1000, cache)


def _fill_cache_in_child(model_name: str, images: Any, indices: list[int], views: int, seed: int, cache: Path | None,
                         threads: int, heldout: bool) -> None:
    """Run photos.fill_cache in a spawned child process (no-op when nothing is missing)."""
    if not indices:
        return
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    from prosemc.training.photos import fill_cache

    images_arg = str(images) if isinstance(images, (str, os.PathLike)) else [str(p) for p in images]
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        pool.submit(fill_cache, model_name, images_arg, indices, views, seed, str(cache) if cache else None, threads, heldout).result()


def fit_per_token(model_name: str, images: Any, out_path: str | os.PathLike[str], seed: int = 0, *,
                  views: int | None = None, cache_dir: str | os.PathLike[str] | None = None, threads: int | None = None,
                  evaluate_heldout: bool = False, quiet: bool = False,
                  config_overrides: dict[str, Any] | None = None) -> FitReport:
    """Train the per-token Meta AutoEncoder for any model's tokens (prosemc.training.token_fit); write out_path.

    The model's token grid (`token_grid`) gives the DCT's tiles (none: every token coded on its own). With steps > 0,
    per-channel gains are trained with a loss that adds the cloud layers' label logits (KL) where the model has them
    (`cloud_logits`: the built-ins).
    """
    from prosemc.codec import metaae_weights
    from prosemc.models import BUILTIN_MODELS, load_model as load_split_model
    from prosemc.training.token_fit import TokenConfig, check_config, fit_token_weights

    split_model = load_split_model(model_name)  # ModelError for an unknown model or checkpoint, before any work
    config = TokenConfig(seed=int(seed))
    if views is not None:
        config.views = int(views)
    for key, value in (config_overrides or {}).items():
        if not hasattr(config, key):
            raise InputError(f"unknown per-token training setting {key!r}")
        current = getattr(config, key)
        setattr(config, key, tuple(value) if isinstance(current, tuple) else type(current)(value))
    problem = check_config(config)
    if problem:
        raise InputError(problem)
    started = time.perf_counter()
    cache = Path(cache_dir) if cache_dir is not None else None
    sources, tokens = training_tokens(model_name, images, config.views, config.seed, cache, threads)
    losses: list[float] = []
    with Progress("prosemc: fit", total=config.steps or None, quiet=quiet) as progress:
        tensors, metadata = fit_token_weights(tokens, token_grid(split_model, tokens.shape[1]), config, model_name,
                                              extra_info(images, sources, tokens, config.steps),
                                              training_cloud(model_name, split_model, config), progress.update, losses)
    sha = metaae_weights.write(out_path, tensors, metadata)
    heldout = None
    if evaluate_heldout and model_name in BUILTIN_MODELS:
        held = heldout_tokens(model_name, cache)
        heldout = heldout_metrics(out_path, held[::4].astype(np.float32), load_split_model(model_name))
        levels = zip(heldout["bytes"], heldout["cosine"], heldout["top1"])
        Progress("prosemc: fit", quiet=quiet).log("held-out: " + " ".join(
            f"L{k + 1} {b:.0f}B cos {c:.3f} top1 {t:.2f}" for k, (b, c, t) in enumerate(levels)))
    return FitReport(str(out_path), sha, config.steps, time.perf_counter() - started, 0, int(tokens.shape[0]),
                     asdict(config), heldout, losses)


def token_grid(model: Any, rows: int) -> tuple[int, int] | None:
    """The model's token grid (rows, cols) of one tile if `rows` training tokens fill whole tiles of it, else None
    (then the per-token codec codes every token on its own)."""
    grid = getattr(model, "token_grid", None)
    if not grid or rows % (grid[0] * grid[1]):
        return None
    return int(grid[0]), int(grid[1])


def training_cloud(model_name: str, model: Any, config: Any) -> Any:
    """The cloud layers (tokens [B, N, D] torch -> logits [B, C]) whose labels the gain training's loss keeps, frozen:
    the built-in models' when config.steps and config.cloud_weight ask for them, else None."""
    from prosemc.models import BUILTIN_MODELS

    if model_name not in BUILTIN_MODELS or not config.cloud_weight or not config.steps:
        return None
    for parameter in model.encoder.parameters():
        parameter.requires_grad_(False)
    return model.cloud_logits


def layer_ladder(codec: Any, model: Any, x: np.ndarray) -> dict[str, np.ndarray]:
    """One token view x [N, D] through a layered codec: per layer [K] the cumulative payload bytes, the per-token
    cosine and the top-1 agreement (the cloud's label of the decoded tokens against that of x), each prefix decoded
    from its real bytes."""
    from prosemc.codec.quality import token_cosines

    encoded = codec.encode(x)
    label = int(np.argmax(model.logits(x)))
    decoded = [codec.decode(encoded.params, encoded.layers[:k], x.shape) for k in range(1, len(encoded.layers) + 1)]
    return {"bytes": np.cumsum([len(layer) for layer in encoded.layers]).astype(np.float64),
            "cosine": np.array([token_cosines(x, d).mean() for d in decoded]),
            "top1": np.array([float(int(np.argmax(model.logits(d))) == label) for d in decoded])}


def heldout_metrics(weights: str | os.PathLike[str], tokens: np.ndarray, model: Any) -> dict[str, list[float]]:
    """Per layer on token views [S, N, D]: mean cumulative payload bytes, per-token cosine, top-1 agreement."""
    from prosemc.codec.metaae import make_metaae

    codec = make_metaae(weights)
    ladders = [layer_ladder(codec, model, x) for x in tokens]
    return {key: np.mean([ladder[key] for ladder in ladders], 0).tolist() for key in ("bytes", "cosine", "top1")}


def load_model(path: str | os.PathLike[str]) -> MetaAE:
    """The torch MetaAE of a weights file written by export_weights (for tests and further training)."""
    from prosemc.codec.metaae_weights import parse, read_bytes

    tensors, metadata, _ = parse(read_bytes(path), str(path))
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
