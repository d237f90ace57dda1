"""`prosemc export`: a model's edge half as a checked, quantised ONNX bundle for a target board."""

from __future__ import annotations

import json
from typing import Any

import click

from prosemc.cli import cli
from prosemc.cli.options import threads_option


def _summary(manifest: dict[str, Any], output: str) -> str:
    """Human report: where the bundle went, its parity, and which operators run on the accelerator."""
    graph, parity = manifest["graph"], manifest["parity"]
    lines = [f"wrote {output}: {manifest['model']['id']} -> tokens {manifest['tokens']['shape']}, "
             f"{graph['precision']} opset {graph['opset']}, codec {manifest['codec']['id']}, "
             f"target {manifest['target']['name']}"]
    top1 = f", top-1 kept {parity['top1_agreement']:.0%}" if parity["top1_agreement"] is not None else ""
    lines.append(f"parity vs torch fp32 on {parity['images']} photos ({parity['check_images']}): token cosine mean "
                 f"{parity['token_cosine_mean']:.4f}, min {parity['token_cosine_min']:.4f}, "
                 f"max |diff| {parity['max_abs_diff']:.3g}{top1}")
    where = {"npu": [], "cpu": [], "folded": []}
    for row in graph["placement"]:
        where[row["runs_on"]].append(f"{row['operator']} x{row['count']}")
    accelerator = manifest["target"]["accelerator"]
    if accelerator:
        lines.append(f"on the {accelerator}: {', '.join(where['npu']) or 'nothing'}")
        lines.append(f"falls back to the CPU: {', '.join(where['cpu']) or 'nothing'}")
        if where["folded"]:
            lines.append(f"folded into int8 operators: {', '.join(where['folded'])}")
    else:
        lines.append(f"operators (all on the CPU): {', '.join(where['cpu'])}")
    return "\n".join(lines)


@cli.command()
@click.option("--target", default="imx95", show_default=True,
              help="Target profile: imx95, cpu (export/*.toml), or the path of a profile .toml.")
@click.option("-m", "--model", default="lite", show_default=True,
              help="'lite', or a Hugging Face VLM id / folder (LLaVA-1.5, SmolVLM / Idefics3, Qwen2-VL).")
@click.option("--codec", default=None,
              help="metaae (default for lite), baseline (default otherwise), or a metaae weights file from `prosemc fit`.")
@click.option("--calibration", default="builtin", show_default=True,
              help="Unlabeled photos for int8 calibration: a folder, or 'builtin' (the packaged training photos, "
                   "never the held-out ones).")
@click.option("--precision", type=click.Choice(["int8", "fp32"]), default=None,
              help="Default: the target's (int8 for imx95, fp32 for cpu).")
@click.option("--check-images", type=click.Path(file_okay=False), default=None,
              help="Photos to measure parity with torch on (default: the builtin held-out photos).")
@click.option("--image-size", type=click.IntRange(min=8), default=None,
              help="Square input side for Qwen2-VL models (a multiple of patch x merge; default 448).")
@click.option("-o", "--output", required=True, type=click.Path(file_okay=True, dir_okay=True),
              help="Bundle folder to write (built beside it, renamed into place when complete).")
@click.option("--force", is_flag=True, help="Replace an existing bundle folder.")
@click.option("--json", "as_json", is_flag=True, help="Print the bundle's manifest (parity, placement, ...) as JSON.")
@threads_option
def export(target: str, model: str, codec: str | None, calibration: str, precision: str | None,
           check_images: str | None, image_size: int | None, output: str, force: bool, as_json: bool) -> None:
    """Export MODEL's edge half as an ONNX bundle for a target board (progress on stderr).

    The bundle holds the vision encoder as ONNX (int8 QDQ for imx95: per-channel weights, bias-corrected),
    the codec's weights and manifest.json (model id, pixel recipe, token shape, codec, quantisation,
    calibration hash, parity with torch, sha256 of every file). It reports which operators the target's
    NPU runs and which fall back to its CPU. Copy the folder to the board and run
    `prosemc encode --bundle DIR` there with only `pip install 'prosemc[edge]'` (no torch).

    \b
      prosemc export --target imx95 -o edge/
      prosemc export --target cpu --precision fp32 -o edge-fp32/
      prosemc export --target imx95 -o edge/ --force --check-images photos/ --json
      scp -r edge/ board: && ssh board 'prosemc encode --bundle edge/ cam.jpg -o - | nc cloud 9000'
    """
    from prosemc.export.build import export_bundle
    from prosemc.progress import Progress

    with Progress("export", heartbeat=True) as progress:
        manifest = export_bundle(output, target=target, model=model, codec=codec, calibration=calibration,
                                 precision=precision, force=force, check_images=check_images, image_size=image_size,
                                 progress=lambda step: progress.advance(note=step))
    if as_json:
        click.echo(json.dumps(export_report(output, manifest)))
    else:
        click.echo(_summary(manifest, output), err=True)


def export_report(output: str, manifest: dict) -> dict:
    """The `export` report (docs/json.md): the vocabulary's keys, then the bundle's manifest.json as it is."""
    from prosemc.report import document, tokens_object

    codec = manifest["codec"]
    return document("export", output=output, model=manifest["model"]["id"],
                    codec={"id": codec["id"], "name": codec["name"], "weights_sha256": codec.get("sha256"),
                           "entropy": None},
                    tokens=tokens_object(manifest["tokens"]["shape"], manifest["tokens"]["dtype"]),
                    target=manifest["target"]["name"], precision=manifest["graph"]["precision"],
                    parity=manifest["parity"], manifest=manifest)
