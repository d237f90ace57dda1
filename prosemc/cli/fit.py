"""`prosemc fit`: train the Meta AutoEncoder (metaae/1 codec weights) on unlabeled images' tokens."""

from __future__ import annotations

from pathlib import Path

import click

from prosemc.cli import cli
from prosemc.cli.console import emit
from prosemc.cli.io import writable_folder
from prosemc.cli.options import threads_option
from prosemc.errors import InputError
from prosemc.report import codec_object, document


def _levels(value: str | None) -> list[int] | None:
    if value is None:
        return None
    try:
        levels = [int(part) for part in value.split(",") if part.strip()]
    except ValueError:
        raise InputError(f"--levels must be comma-separated channel counts such as 24,48,96,160,256, got {value!r}") from None
    if not levels:
        raise InputError("--levels is empty; give channel counts such as 24,48,96,160,256")
    return levels


def _check_outputs(out_path: Path, cache_dir: Path | None) -> None:
    """Refuse outputs that cannot be written now, not after minutes of token extraction and training."""
    from prosemc.training.photos import default_cache_dir

    folder = out_path.parent  # (click refuses an -o that is a folder)
    if not folder.is_dir():
        raise InputError(f"the folder {folder} of -o {out_path} does not exist; create it or choose another path")
    writable_folder(folder)  # the weights and the resume checkpoint go there
    writable_folder(cache_dir if cache_dir is not None else default_cache_dir())


@cli.command()
@click.option("--model", "model_name", default="lite", show_default=True,
              help="Model whose tokens are coded: 'lite' (pooled mean-token codec), 'lite-dense' or a Hugging Face "
                   "VLM id / folder (per-token codec).")
@click.option("--images", "images", required=True, multiple=True,
              help="Folder of training images, or 'builtin' for the packaged photos; repeat to train on several.")
@click.option("-o", "--output", "out_path", required=True, type=click.Path(dir_okay=False),
              help="Weights file to write (safetensors).")
@click.option("--levels", default=None, help="Cumulative latent channels per level, e.g. 24,48,96,160,256.")
@click.option("--epochs", type=int, default=None, help="Passes over the augmented views (default 60).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of augmentation, init and data order.")
@click.option("--variant", type=click.Choice(["nested", "residual"]), default="nested", show_default=True,
              help="Matryoshka latents, or residual refinement per level.")
@click.option("--views", type=int, default=None, help="Augmented views per photo (default 48).")
@click.option("--cache-dir", type=click.Path(file_okay=False), default=None,
              help="Token cache folder (default: $PROSEMC_CACHE/metaae-tokens).")
@click.option("--max-steps", type=int, default=None,
              help="lite: stop after this many steps (checkpointed; rerun to resume).")
@click.option("--steps", type=click.IntRange(min=0), default=None,
              help="Per-token models: gradient steps of per-channel quantiser gains with the cloud-output loss "
                   "(default 0: the fitted transform; see docs/metaae-token.md).")
@click.option("--eval/--no-eval", "evaluate", default=True, show_default=True,
              help="Report held-out metrics (builtin photos never trained on).")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON report on stdout (docs/json.md).")
@threads_option
def fit(model_name: str, images: tuple[str, ...], out_path: str, levels: str | None, epochs: int | None, seed: int,
        variant: str, views: int | None, cache_dir: str | None, max_steps: int | None, steps: int | None,
        evaluate: bool, as_json: bool) -> None:
    """Train metaae/1 weights for MODEL's tokens on unlabeled images (progress on stderr).

    lite gets the pooled mean-token codec (what its label head reads); every other model -- lite-dense and any
    Hugging Face VLM -- a per-token Meta AutoEncoder: a DCT over the model's token grid (where it has one) and
    learned principal directions per frequency band, bit-plane layers ordered by the distortion each byte saves,
    integer context tables and an error head (optionally, --steps trains per-channel steps with a loss on the
    cloud layers' label logits).

    \b
      prosemc fit --model lite --images builtin -o metaae-lite.safetensors --seed 0
      make photos   # the 86 Debian wallpaper photos, into photos/debian
      prosemc fit --model lite-dense --images builtin --images photos/debian -o metaae-lite-dense.safetensors \
        --seed 0 --threads 1
      prosemc fit --model HuggingFaceTB/SmolVLM-256M-Instruct --images photos/ -o smolvlm.safetensors

    The lite and lite-dense examples reproduce the shipped weights (compare their sha256 with `prosemc models`).
    Every output path is checked before any work. An interrupted run resumes from its checkpoint (beside the output) when
    started again with the same options. --threads sets the vision encoder's threads (token extraction);
    training itself uses $PROSEMC_FIT_THREADS threads (default 1: the same seed then gives the same weights).
    """
    from prosemc.training.photos import sources_from

    sources_from(images)  # user errors (missing folder, no images) before torch loads
    if model_name == "lite" and steps is not None:
        raise InputError("--steps applies to per-token models (lite-dense, Hugging Face VLMs), not lite")
    _check_outputs(Path(out_path), Path(cache_dir) if cache_dir is not None else None)
    from prosemc.training.fit import fit as run_fit
    report = run_fit(model_name, list(images), out_path, _levels(levels), epochs, seed, variant=variant, views=views,
                     cache_dir=cache_dir, max_steps=max_steps, evaluate_heldout=evaluate and images == ("builtin",),
                     config_overrides={"steps": steps} if steps is not None else None)
    finished = bool(report.sha256)
    emit(document("fit", model=model_name, output=report.out_path if finished else None,
                  codec=_trained_codec(report.out_path, model_name) if finished else None, finished=finished,
                  steps=report.steps, resumed_from_step=report.resumed_from_step, seconds=round(report.seconds, 1),
                  train_views=report.train_views, config=report.config, heldout=_heldout_layers(report.heldout)),
         as_json, f"wrote {report.out_path} (sha256 {report.sha256}) in {report.seconds:.0f} s" if finished else
         f"stopped at step {report.steps}; run the same command again to resume")


def _trained_codec(weights: str, model_name: str) -> dict | None:
    """The codec object of the weights just written (they name themselves by sha256)."""
    from prosemc.codec import make_codec

    described = make_codec("metaae", weights=weights, model=model_name).describe()
    return codec_object(described["codec"], described["entropy"])


def _heldout_layers(heldout: dict[str, list[float]] | None) -> list[dict[str, float]] | None:
    """Held-out metrics per level ({"bytes": [...], "cosine": [...], ...}) as one object per layer."""
    if not heldout:
        return None
    levels = len(heldout["bytes"])
    return [{"index": k + 1, **{metric: round(float(values[k]), 4) for metric, values in heldout.items()}}
            for k in range(levels)]
