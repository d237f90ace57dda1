"""`prosemc eval`: rate vs fidelity of every scheme and level over a folder of images."""

from __future__ import annotations

import json
from pathlib import Path

import click

from prosemc.cli import cli
from prosemc.cli.options import threads_option
from prosemc.report import document

def images_in(folder: Path) -> dict[str, object]:
    """name -> RGB PIL image for every image file directly in `folder` (sorted by name)."""
    from prosemc.errors import InputError
    from prosemc.models.images import image_files, load_image

    paths = image_files(folder)
    if not paths:
        raise InputError(f"no images in {folder}; put JPEG, PNG, WebP, BMP or GIF files there")
    return {p.name: load_image(str(p)) for p in paths}


def format_table(rows: list[dict]) -> str:
    def cell(value: object) -> str:
        return "-" if value is None else (f"{value:.4f}" if isinstance(value, float) else str(value))

    keys = ["scheme", "level", "bytes", "token_cosine", "per_token_cosine", "top1_agreement", "answer_consistency"]
    lines = ["  ".join(f"{k:>18}" for k in keys)]
    lines += ["  ".join(f"{cell(r[k]):>18}" for k in keys) for r in rows]
    return "\n".join(lines)


@cli.command(name="eval")
@click.option("--images", "folder", required=True, type=click.Path(file_okay=False, exists=True, path_type=Path),
              help="Folder of images to measure on.")
@click.option("-m", "--model", default="lite", show_default=True, help="Model whose tokens are coded.")
@click.option("--codec", "codecs", multiple=True,
              help="Codec(s) to measure at every level (repeatable); default: metaae and baseline where prosemc ships "
                   "metaae weights for the model (lite, lite-dense), else baseline.")
@click.option("--answers/--no-answers", default=False, show_default=True,
              help="Also measure answer consistency (runs the language model per scheme and level: slow).")
@click.option("--references/--no-references", default=True, show_default=True,
              help="Include raw float16, int8, the paper's JSON chunks, JPEG and WebP.")
@click.option("--compact/--no-compact", default=True, show_default=True,
              help="Also size each codec level in the compact .psem form (scheme '<codec>-compact').")
@click.option("--json", "as_json", is_flag=True, help="Print {model, images, rows: [...]} as JSON (docs/json.md).")
@threads_option
def evaluate_command(folder: Path, model: str, codecs: tuple[str, ...], answers: bool, references: bool,
                     compact: bool, as_json: bool) -> None:
    """Measure bytes, token cosine, per-token cosine, top-1 agreement and answer consistency per scheme and level.

    Every metric compares against the uncompressed tokens of the same image. JPEG and WebP send the
    encoder's 224 px input crop at the best quality within 256 B ... 4 KB; the cloud re-runs the encoder.
    A codec's "-compact" rows are the same levels in the compact form (header named by its profile).
    """
    from prosemc.evaluate import evaluate
    from prosemc.models import load_model
    from prosemc.progress import Progress

    from prosemc.pipeline import default_codec

    chosen = list(codecs) or list(dict.fromkeys([default_codec(model), "baseline"]))
    images = images_in(folder)
    vlm = load_model(model)
    with Progress("prosemc: evaluating", total=len(images), heartbeat=True) as progress:
        result = evaluate(images, vlm, chosen, answers=answers, references=references, compact=compact,
                          progress=lambda name: progress.advance(note=name))
    data = document("eval", **result.to_json(), codecs=chosen)
    click.echo(json.dumps(data) if as_json else format_table(data["rows"]))
