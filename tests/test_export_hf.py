"""Edge halves of Hugging Face VLM families exported on the tiny random checkpoints: fp32 ONNX = torch, the int8
graph runs, an edge-encoded .psem is answered by the cloud half, and an unexportable model is named precisely."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
import tiny_vlms  # noqa: E402
from tiny_vlms import one_torch_thread  # noqa: E402,F401 - autouse fixture

from prosemc import format as psem  # noqa: E402
from prosemc.cli import cli  # noqa: E402
from prosemc.errors import InputError, ModelError  # noqa: E402
from prosemc.export.build import export_bundle  # noqa: E402
from prosemc.export.bundle import EdgeBundle, inference_session  # noqa: E402
from prosemc.export.onnx_export import export_onnx  # noqa: E402
from prosemc.export.parity import cosine  # noqa: E402
from prosemc.export.quantise import quantise  # noqa: E402
from prosemc.export.sources import edge_source  # noqa: E402
from prosemc.export.targets import load_target  # noqa: E402
from prosemc.models.hf import load_hf_model  # noqa: E402

# family -> (token shape the bundle sends, info the cloud half reads) at the bundle's static size
EXPECTED = {
    "llava": ((16, 32), {"pixel_hw": [32, 32]}),  # CLIP crop 32 px / patch 8, CLS dropped
    "idefics3": ((16, 48), {"rows": 0, "cols": 0}),  # one 32 px view, pixel shuffle x2
    "qwen2_vl": ((64, 48), {"image_grid_thw": [1, 16, 16]}),  # 64 px square (the processor's maximum), merge 2x2
}


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(5)
    for index, (height, width) in enumerate([(40, 56), (64, 48), (30, 30)]):
        Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(folder / f"p{index}.png")
    return folder


@pytest.fixture(scope="module", params=sorted(EXPECTED))
def exported(request, tmp_path_factory, photos) -> tuple[str, Path, Path]:
    """(family, checkpoint folder, fp32 bundle for the cpu target)."""
    root = tmp_path_factory.mktemp(request.param)
    checkpoint = getattr(tiny_vlms, f"build_tiny_{request.param}")(root / "checkpoint")
    bundle = root / "edge"
    export_bundle(bundle, target="cpu", model=str(checkpoint), check_images=str(photos))
    return request.param, checkpoint, bundle


def test_fp32_graph_matches_torch(exported, photos):
    family, checkpoint, bundle = exported
    manifest = json.loads((bundle / "manifest.json").read_text())
    shape, info = EXPECTED[family]
    assert manifest["tokens"]["shape"] == list(shape) and manifest["model"]["info"] == info
    assert manifest["model"]["id"] == load_hf_model(str(checkpoint)).model_id
    assert manifest["codec"] == {"name": "baseline", "id": "sr-baseline/1"}
    assert manifest["parity"]["images"] == 3 and manifest["parity"]["max_abs_diff"] <= 1e-4
    assert manifest["parity"]["top1_agreement"] is None  # no label head outside lite
    source = edge_source(str(checkpoint))
    image = Image.open(photos / "p0.png").convert("RGB")
    pixels = source.recipe.pixels(image)
    tokens = EdgeBundle.load(bundle).vision.encode_image(image).tokens
    assert tokens.shape == shape and np.abs(tokens - source.tokens(pixels)).max() <= 1e-4


def test_int8_graph_runs(exported, photos):
    family, checkpoint, bundle = exported
    import onnx

    source = edge_source(str(checkpoint))
    pixels = [source.recipe.pixels(Image.open(p).convert("RGB")) for p in sorted(photos.iterdir())]
    graph = quantise(onnx.load(str(bundle / "encoder.onnx")), pixels, load_target("imx95").quantisation)
    assert any(node.op_type == "QuantizeLinear" for node in graph.graph.node)
    (tokens,) = inference_session(graph.SerializeToString()).run(["tokens"], {"pixels": pixels[0]})
    assert tokens.shape == EXPECTED[family][0] and np.isfinite(tokens).all()
    assert cosine(tokens, source.tokens(pixels[0])) >= 0.8


def test_cloud_half_answers_an_edge_encoded_psem(exported, photos, tmp_path):
    family, checkpoint, bundle = exported
    out = tmp_path / "x.psem"
    encoded = CliRunner().invoke(cli, ["encode", "--bundle", str(bundle), str(photos / "p1.png"), "-o", str(out),
                                       "--json"])
    assert encoded.exit_code == 0, encoded.output
    header = psem.loads(out.read_bytes()).header
    assert header.encoder == json.loads(encoded.stdout)["model"] and header.codec_id == "sr-baseline/1"
    answered = CliRunner().invoke(cli, ["query", str(out), "what is shown?", "--model", str(checkpoint), "--json"])
    assert answered.exit_code == 0, answered.output
    reply = json.loads(answered.stdout)
    assert reply["model"] == header.encoder and isinstance(reply["answer"], str)


def test_image_size_only_for_qwen2_vl(exported):
    family, checkpoint, _ = exported
    if family == "qwen2_vl":
        with pytest.raises(InputError, match="use a multiple of 8 between 16 and 64"):
            edge_source(str(checkpoint), image_size=60)
        assert edge_source(str(checkpoint), image_size=32).info == {"image_grid_thw": [1, 8, 8]}
    else:
        with pytest.raises(InputError, match="--image-size applies to Qwen2-VL models only"):
            edge_source(str(checkpoint), image_size=32)


class _Decomposition(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.linalg.svd(x.flatten(2))[1]


def test_unexportable_model_names_operator_and_layer():
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), _Decomposition())
    with pytest.raises(ModelError, match=r"operator aten::linalg_svd in layer '1' has no ONNX equivalent"):
        export_onnx(model, torch.rand(1, 3, 8, 8), 17, "the test model")
