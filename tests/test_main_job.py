"""The main job with the built-in `lite` model: encode / decode / query, sizes, labels, and every bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image
from safetensors.numpy import load_file

from prosemc import format as psem
from prosemc.cli import cli
from prosemc.models.images import load_image
from prosemc.models.lite import LiteModel

CAT_LABELS = {"tabby cat", "tiger cat", "Persian cat", "Siamese cat", "Egyptian Mau", "lynx"}


def invoke(*args: str, input: bytes | None = None):
    result = CliRunner().invoke(cli, list(args), input=input)
    return result


@pytest.fixture(scope="module")
def encoded(tmp_path_factory, chelsea) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("enc") / "cat.psem"
    result = invoke("encode", str(chelsea), "-o", str(out), "--json")
    assert result.exit_code == 0, result.output
    return out, json.loads(result.stdout)


@pytest.fixture(scope="module")
def reference_tokens(chelsea) -> np.ndarray:
    return LiteModel().encode_image(load_image(str(chelsea))).tokens


def test_encode_report_and_file_agree(encoded, valid_report):
    path, report = encoded
    valid_report(report, "encode")
    assert report["model"] == "lite" and report["tokens"] == {"shape": [49, 1280], "dtype": "float32"}
    assert report["codec"]["id"] == "metaae/1" and report["codec"]["name"] == "metaae"
    assert len(report["layers"]) == report["layers_declared"] >= 4
    sizes = [layer["bytes"] for layer in report["layers"]]
    assert report["bytes"] == path.stat().st_size == report["header_bytes"] + sum(sizes)
    assert report["layers"][-1]["cumulative_bytes"] == report["bytes"]
    assert set(report["timings_ms"]) == {"load_image", "vision_encoder", "codec"}
    parsed = psem.loads(path.read_bytes())
    assert parsed.header.encoder == "lite" and parsed.header.token_shape == (49, 1280)
    assert parsed.end.status == "complete"


def test_query_json_answers_from_all_layers_with_cat_labels(encoded, valid_report):
    path, report = encoded
    result = invoke("query", str(path), "what is shown?", "--json")
    assert result.exit_code == 0, result.output
    answer = valid_report(result.stdout, "query")
    assert answer["layers"] == report["layers"] and answer["bytes"] == report["bytes"]
    assert answer["codec"] == report["codec"] and answer["question"] == "what is shown?"
    assert answer["model"] == "lite" and answer["status"] == "complete"
    assert answer["labels"][0]["label"] in CAT_LABELS
    assert answer["labels"][0]["probability"] > 0.2
    assert len(answer["answer"]) > 10 and "cat" in answer["answer"].lower()


def test_layer_one_alone_keeps_the_label(encoded):
    path, _ = encoded
    answer = json.loads(invoke("query", str(path), "what is shown?", "--layers", "1", "--json").stdout)
    assert len(answer["layers"]) == 1
    assert answer["labels"][0]["label"] in CAT_LABELS


def test_decoded_tokens_improve_with_every_layer(encoded, reference_tokens, tmp_path):
    path, report = encoded
    errors = []
    for k in range(1, len(report["layers"]) + 1):
        out = tmp_path / f"t{k}.safetensors"
        result = invoke("decode", str(path), "-o", str(out), "--layers", str(k))
        assert result.exit_code == 0, result.output
        tokens = load_file(str(out))["tokens"]
        assert tokens.shape == (49, 1280) and tokens.dtype == np.float32
        errors.append(float(np.mean((tokens - reference_tokens) ** 2)))
    assert all(later < earlier for earlier, later in zip(errors, errors[1:])), errors
    full = load_file(str(tmp_path / f"t{len(report['layers'])}.safetensors"))["tokens"]
    cosine = np.sum(full * reference_tokens) / (np.linalg.norm(full) * np.linalg.norm(reference_tokens))
    assert cosine > 0.99


def test_encode_max_bytes_keeps_the_largest_prefix(chelsea, tmp_path, encoded):
    _, report = encoded
    budget = report["layers"][1]["cumulative_bytes"] + 5
    out = tmp_path / "small.psem"
    result = invoke("encode", str(chelsea), "-o", str(out), "--max-bytes", str(budget), "--json")
    assert result.exit_code == 0, result.output
    assert len(json.loads(result.stdout)["layers"]) == 2
    assert out.stat().st_size == budget - 5


@pytest.mark.parametrize("mode, suffix", [("RGBA", "png"), ("P", "gif"), ("L", "webp"), ("RGB", "bmp"), ("I;16", "png")])
def test_encode_accepts_image_formats_and_modes(chelsea, tmp_path, mode, suffix):
    image = Image.open(chelsea)
    converted = image.convert("L").convert(mode) if mode == "I;16" else image.convert(mode)
    source = tmp_path / f"in.{suffix}"
    converted.save(source)
    out = tmp_path / "x.psem"
    result = invoke("encode", str(source), "-o", str(out))
    assert result.exit_code == 0, result.output
    assert psem.loads(out.read_bytes()).end.status == "complete"


def run_cli(args: list[str], stdin: bytes = b"", cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "prosemc", *args], input=stdin, capture_output=True, timeout=300,
                          cwd=cwd)


def assert_user_error(result: subprocess.CompletedProcess, message: str) -> None:
    err = result.stderr.decode()
    assert result.returncode == 2, err
    assert err.startswith("prosemc: error: ") and message in err, err
    assert "Traceback" not in err and err.count("\n") == 1


def test_bad_images_exit_2_and_leave_no_output(tmp_path):
    (tmp_path / "notes.txt").write_text("hello, not an image\n")
    (tmp_path / "empty.jpg").write_bytes(b"")
    assert_user_error(run_cli(["encode", "notes.txt", "-o", "x.psem"], cwd=tmp_path), "not an image")
    assert_user_error(run_cli(["encode", "empty.jpg", "-o", "x.psem"], cwd=tmp_path), "empty")
    assert_user_error(run_cli(["encode", "-", "-o", "x.psem"], cwd=tmp_path), "empty")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty.jpg", "notes.txt"]


def test_bad_psem_inputs_exit_2(encoded, tmp_path):
    path, _ = encoded
    data = path.read_bytes()
    corrupt = bytearray(data)
    corrupt[-5] ^= 0xFF
    (tmp_path / "corrupt.psem").write_bytes(bytes(corrupt))
    (tmp_path / "cut.psem").write_bytes(data[:100])
    assert_user_error(run_cli(["query", "corrupt.psem", "what?"], cwd=tmp_path), "corrupt.psem: layer 6 ")
    assert_user_error(run_cli(["query", "cut.psem", "what?"], cwd=tmp_path), "cut.psem: input ends inside the header")
    assert_user_error(run_cli(["query", "-", "what?"]), "<stdin>: empty input")
    assert_user_error(run_cli(["decode", "corrupt.psem", "-o", "t.safetensors"], cwd=tmp_path),
                      "corrupt.psem: layer 6 ")
    assert "fails its checksum" in run_cli(["info", "corrupt.psem"], cwd=tmp_path).stderr.decode()
    assert not (tmp_path / "t.safetensors").exists()


def test_psem_of_another_model_is_refused_by_name(encoded, tmp_path):
    path, _ = encoded
    parsed = psem.loads(path.read_bytes())
    header = parsed.header
    other = psem.PsemHeader("llava-hf/llava-1.5-7b-hf", header.token_shape, header.codec, header.entropy,
                            header.layers, metadata=header.metadata)
    (tmp_path / "other.psem").write_bytes(psem.dumps(other, parsed.layers))
    assert_user_error(run_cli(["query", "other.psem", "what?", "--model", "lite"], cwd=tmp_path),
                      "other.psem: this .psem was made by model 'llava-hf/llava-1.5-7b-hf', not 'lite'")


def test_empty_question_is_refused(encoded):
    result = invoke("query", str(encoded[0]), "   ")
    assert result.exit_code == 2 and "the question is empty" in result.output


def test_query_max_bytes_uses_the_longest_prefix_within_budget(encoded):
    path, report = encoded
    budget = report["layers"][1]["cumulative_bytes"]
    answer = json.loads(invoke("query", str(path), "what is shown?", "--max-bytes", str(budget + 3), "--json").stdout)
    assert (len(answer["layers"]), answer["bytes"]) == (2, budget)
    too_small = invoke("query", str(path), "what is shown?", "--max-bytes", "50")
    need = report["layers"][0]["cumulative_bytes"]
    assert too_small.exit_code == 2
    assert f"a budget of 50 bytes holds no layer: the header and layer 1 need {need} bytes" in too_small.output


def test_compact_encode_fits_layer_one_in_384_bytes_and_decodes_like_the_full_file(chelsea, encoded, tmp_path):
    path, full = encoded
    out = tmp_path / "cat.psem"
    result = invoke("encode", str(chelsea), "-o", str(out), "--compact", "--json")
    assert result.exit_code == 0, result.output
    compact = json.loads(result.stdout)
    assert (compact["form"], compact["profile"]["id"], compact["header_bytes"]) == ("compact", "6094ba00f9a244a6", 18)
    assert compact["profile"] == {"id": "6094ba00f9a244a6", "known": True, "name": "lite-metaae", "source": "built-in"}
    assert (full["form"], full["profile"]) == ("full", None)
    full_sizes, compact_sizes = ([layer["bytes"] for layer in r["layers"]] for r in (full, compact))
    assert [f - c for f, c in zip(full_sizes, compact_sizes)] == [10] * 6  # 16 -> 6 bytes framing
    payload = full_sizes[0] - 16
    assert compact["header_bytes"] + compact_sizes[0] - payload == 24  # the target: <= 24
    assert compact["bytes"] == out.stat().st_size == full["bytes"] - (full["header_bytes"] - 18) - 60
    expanded = tmp_path / "expanded.psem"
    assert invoke("expand", str(out), "-o", str(expanded)).exit_code == 0
    assert expanded.read_bytes() == path.read_bytes()
    tokens = []
    for source in (path, out):
        target = tmp_path / f"{source.stem}-{len(tokens)}.safetensors"
        assert invoke("decode", str(source), "-o", str(target), "--layers", "2").exit_code == 0
        tokens.append(load_file(str(target))["tokens"])
    np.testing.assert_array_equal(tokens[0], tokens[1])
    small = tmp_path / "small.psem"
    report = json.loads(invoke("encode", str(chelsea), "-o", str(small), "--compact", "--max-bytes", "384",
                               "--json").stdout)
    assert len(report["layers"]) == 1 and small.stat().st_size == report["bytes"] <= 384
    answer = json.loads(invoke("query", str(small), "what is shown?", "--json").stdout)
    assert len(answer["layers"]) == 1 and answer["labels"][0]["label"] in CAT_LABELS
