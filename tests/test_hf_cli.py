"""`prosemc encode/query --model FOLDER` end to end on tiny checkpoints of each supported VLM family."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from tiny_vlms import build_tiny_idefics3, build_tiny_llava, build_tiny_qwen2_vl  # noqa: E402

from prosemc import format as psem  # noqa: E402
from prosemc.cli import cli  # noqa: E402
from prosemc.models.hf import load_hf_model  # noqa: E402
from prosemc.models.images import load_image  # noqa: E402

BUILDERS = {"llava": build_tiny_llava, "idefics3": build_tiny_idefics3, "qwen2_vl": build_tiny_qwen2_vl}


@pytest.fixture(scope="module", params=sorted(BUILDERS))
def checkpoint(request, tmp_path_factory) -> Path:
    return BUILDERS[request.param](tmp_path_factory.mktemp(request.param))


@pytest.fixture(scope="module")
def photo(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("img") / "photo.png"
    rng = np.random.default_rng(3)
    Image.fromarray(rng.integers(0, 255, (40, 56, 3), dtype=np.uint8)).save(path)
    return path


@pytest.mark.parametrize("codec", ["raw-f32", "baseline"])
def test_encode_then_query_through_the_cli(checkpoint, photo, tmp_path, codec, valid_report):
    out = tmp_path / "x.psem"
    encoded = CliRunner().invoke(cli, ["encode", str(photo), "-o", str(out), "--model", str(checkpoint),
                                       "--codec", codec, "--json"])
    assert encoded.exit_code == 0, encoded.output
    model = load_hf_model(str(checkpoint))
    header = psem.loads(out.read_bytes()).header
    assert header.encoder == model.model_id == valid_report(encoded.stdout, "encode")["model"]
    edge = model.encode_image(load_image(str(photo)))
    assert list(header.token_shape) == list(edge.tokens.shape)

    unnamed = CliRunner().invoke(cli, ["query", str(out), "what is shown?"])
    assert unnamed.exit_code == 2
    assert "from a local folder; pass that checkpoint (hub id or folder) as the model to answer with" in unnamed.output
    answered = CliRunner().invoke(cli, ["query", str(out), "what is shown?", "--model", str(checkpoint), "--json"])
    assert answered.exit_code == 0, answered.output
    result = valid_report(answered.stdout, "query")
    assert result["model"] == model.model_id and result["labels"] is None
    assert isinstance(result["answer"], str)
    if codec == "raw-f32":  # lossless: the answer is the unsplit model's own answer on the image
        assert result["answer"] == model.answer(edge, "what is shown?").text

    refused = CliRunner().invoke(cli, ["query", str(out), "what is shown?", "--model", "lite"])
    assert refused.exit_code == 2 and f"made by model {model.model_id!r}, not 'lite'" in refused.output


def test_query_finds_the_hub_model_a_psem_names_in_the_local_cache(photo, tmp_path, monkeypatch):
    """encode --model org/name records the hub id; a plain `query` finds it in the HF cache; a copy elsewhere works."""
    import shutil

    from huggingface_hub import constants

    folder = build_tiny_llava(tmp_path / "built")
    revision = "1" * 40
    repo = tmp_path / "hub" / "models--tiny-org--llava"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(revision)
    shutil.copytree(folder, repo / "snapshots" / revision)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    out = tmp_path / "x.psem"

    def prosemc(*args: str):
        return CliRunner().invoke(cli, list(args))

    encoded = prosemc("encode", str(photo), "-o", str(out), "--model", "tiny-org/llava", "--codec", "raw-f32", "--json")
    assert encoded.exit_code == 0, encoded.output
    recorded = psem.loads(out.read_bytes()).header.encoder
    assert recorded.startswith("tiny-org/llava@") and json.loads(encoded.stdout)["model"] == recorded
    found = prosemc("query", str(out), "what is shown?", "--json")
    assert found.exit_code == 0, found.output
    assert json.loads(found.stdout)["model"] == recorded
    renamed = prosemc("query", str(out), "what is shown?", "--model", str(folder), "--json")
    assert renamed.exit_code == 0, renamed.output  # the same checkpoint in a folder of another name
    assert json.loads(renamed.stdout)["answer"] == json.loads(found.stdout)["answer"]
    shutil.rmtree(repo)
    missing = prosemc("query", str(out), "what is shown?")
    assert missing.exit_code == 2 and "not in the local Hugging Face cache" in missing.output
    assert "hf download tiny-org/llava" in missing.output
