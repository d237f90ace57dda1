"""`prosemc export` of the built-in `lite` model and `prosemc encode --bundle`, the torch-free edge runner.

Bundles are exported once per test session (two calibration photos, two check photos) and copied where a test
edits one.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from prosemc import format as psem
from prosemc.cli import cli
from prosemc.codec.metaae import load_weights
from prosemc.export.build import export_bundle
from prosemc.export.bundle import EdgeBundle
from prosemc.models.images import load_image
from prosemc.models.lite import LiteModel
from prosemc.pipeline import read_tokens
from serving import ServerProcess

ROOT = Path(__file__).resolve().parents[1]
# Runs `prosemc ARGS...` in a fresh interpreter where importing these packages raises, as on a board without them.
BLOCKED_RUN = """
import runpy, sys
BLOCKED = set(sys.argv[1].split(","))
class Blocker:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"{name} is not installed on this edge")
sys.meta_path.insert(0, Blocker())
sys.argv = ["prosemc", *sys.argv[2:]]
runpy.run_module("prosemc", run_name="__main__")
"""
EDGE_ONLY = "torch,transformers,rich,constriction,matplotlib,sklearn,skimage"


def run_edge(*args: str, blocked: str = EDGE_ONLY) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", BLOCKED_RUN, blocked, *args], capture_output=True, timeout=120)


@pytest.fixture(scope="session")
def calibration(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("calibration")
    for name in ("chelsea.jpg", "coffee.jpg"):
        shutil.copy(ROOT / "examples" / name, folder / name)
    return folder


@pytest.fixture(scope="session")
def int8_bundle(tmp_path_factory, calibration) -> Path:
    out = tmp_path_factory.mktemp("bundles") / "edge"
    export_bundle(out, target="imx95", calibration=str(calibration), check_images=str(ROOT / "examples"))
    return out


@pytest.fixture(scope="session")
def fp32_export(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("bundles") / "edge-fp32"
    result = CliRunner().invoke(cli, ["export", "--target", "cpu", "-o", str(out), "--check-images",
                                      str(ROOT / "examples"), "--json"])
    assert result.exit_code == 0, result.output
    return out, json.loads(result.stdout)


@pytest.fixture(scope="session")
def fp32_bundle(fp32_export) -> Path:
    return fp32_export[0]


@pytest.fixture(scope="module")
def torch_tokens(chelsea) -> np.ndarray:
    return LiteModel().encode_image(load_image(str(chelsea))).tokens


def test_int8_manifest_describes_the_bundle(int8_bundle):
    manifest = json.loads((int8_bundle / "manifest.json").read_text())
    assert manifest["format"] == "prosemc-edge-bundle/1"
    assert manifest["model"] == {"id": "lite", "family": "lite", "source": "lite", "info": {}}
    assert manifest["input"]["shape"] == [1, 3, 224, 224] and manifest["input"]["range"] == [0, 255]
    assert manifest["input"]["recipe"] == {"height": 224, "width": 224, "resize": "short-side-crop",
                                           "resample": "bicubic", "short_side": 224}
    assert manifest["tokens"]["shape"] == [49, 1280]
    assert manifest["graph"]["precision"] == "int8" and manifest["graph"]["opset"] == 17
    assert manifest["quantisation"]["weights"] == "int8 symmetric per-channel"
    assert manifest["quantisation"]["bias_correction"] == "one-pass"
    assert manifest["calibration"]["images"] == 2 and len(manifest["calibration"]["sha256"]) == 64
    assert manifest["codec"] == {"name": "metaae", "id": "metaae/1", "file": "metaae.safetensors",
                                 "sha256": load_weights().sha256}
    assert sorted(manifest["files"]) == ["encoder.onnx", "metaae.safetensors"]
    placement = {row["operator"]: row["runs_on"] for row in manifest["graph"]["placement"]}
    assert placement["Conv"] == "npu" and placement["Sub"] == "cpu" and placement["QuantizeLinear"] == "folded"
    assert (int8_bundle / "encoder.onnx").stat().st_size <= 4_000_000
    parity = manifest["parity"]
    assert parity["images"] == 2 and parity["top1_agreement"] == 1.0
    assert parity["token_cosine_min"] >= 0.97, parity  # two calibration photos only; the benchmark uses 34
    assert not list(int8_bundle.parent.glob(".*part"))  # built aside, renamed into place


def test_fp32_bundle_matches_torch(fp32_bundle, chelsea, torch_tokens):
    manifest = json.loads((fp32_bundle / "manifest.json").read_text())
    assert manifest["graph"]["precision"] == "fp32" and manifest["quantisation"] is None
    assert manifest["parity"]["max_abs_diff"] <= 1e-4 and manifest["parity"]["top1_agreement"] == 1.0
    tokens = EdgeBundle.load(fp32_bundle).vision.encode_image(load_image(str(chelsea))).tokens
    assert tokens.shape == (49, 1280) and np.abs(tokens - torch_tokens).max() <= 1e-4


def test_int8_tokens_keep_the_label(int8_bundle, chelsea, torch_tokens):
    tokens = EdgeBundle.load(int8_bundle).vision.encode_image(load_image(str(chelsea))).tokens
    cosine = float((tokens * torch_tokens).sum() / np.linalg.norm(tokens) / np.linalg.norm(torch_tokens))
    assert cosine >= 0.98
    model = LiteModel()
    assert model.classify(tokens, 1)[0][0] == model.classify(torch_tokens, 1)[0][0]


def test_edge_encode_runs_without_torch_and_writes_the_library_bytes(int8_bundle, chelsea, tmp_path, valid_report):
    out = tmp_path / "edge.psem"
    result = run_edge("encode", "--bundle", str(int8_bundle), str(chelsea), "-o", str(out), "--json")
    assert result.returncode == 0, result.stderr.decode()
    report = valid_report(result.stdout, "encode")
    assert report["runtime"] == {"vision": "onnxruntime", "coder": "portable"}
    assert report["model"] == "lite" and report["codec"]["id"] == "metaae/1" and len(report["layers"]) == 6
    with open(tmp_path / "library.psem", "wb") as sink:  # constriction in this process: the same bytes
        library = EdgeBundle.load(int8_bundle).encode_image(load_image(str(chelsea)), sink)
    assert library.entropy_coder == "constriction"
    assert out.read_bytes() == (tmp_path / "library.psem").read_bytes()
    header = psem.loads(out.read_bytes()).header
    assert header.encoder == "lite" and header.token_shape == (49, 1280)


def test_edge_encode_to_stdout_with_budget(int8_bundle, chelsea):
    result = run_edge("encode", "--bundle", str(int8_bundle), str(chelsea), "-o", "-", "--max-bytes", "1000")
    assert result.returncode == 0, result.stderr.decode()
    parsed = psem.loads(result.stdout)
    assert len(result.stdout) <= 1000 and parsed.end.status == "prefix" and len(parsed.layers) == 1


def test_cloud_answers_an_edge_psem(int8_bundle, chelsea, tmp_path, torch_tokens):
    out = tmp_path / "cat.psem"
    result = CliRunner().invoke(cli, ["encode", "--bundle", str(int8_bundle), str(chelsea), "-o", str(out)])
    assert result.exit_code == 0, result.output
    with open(out, "rb") as stream:
        decoded = read_tokens(stream)
    model = LiteModel()
    assert model.classify(decoded.edge.tokens, 1)[0][0] == model.classify(torch_tokens, 1)[0][0]
    answered = CliRunner().invoke(cli, ["query", str(out), "what is shown?", "--json"])
    assert answered.exit_code == 0, answered.output
    reply = json.loads(answered.stdout)
    assert reply["model"] == "lite" and len(reply["layers"]) == 6 and "cat" in reply["answer"].lower()


def test_send_bundle_without_torch_gets_the_torch_edges_answer(int8_bundle, chelsea, cli_env, valid_report):
    """`send --bundle` in a process where torch cannot be imported, to a real label-only `prosemc serve` on
    127.0.0.1: the torch edge's top-1 label, and the bytes of the bundle's own .psem layers."""
    from prosemc.serve.send import SendOptions, frame_tokens, send

    image = load_image(str(chelsea))
    bundle = EdgeBundle.load(int8_bundle)
    layers = frame_tokens(bundle.vision.encode_image(image), bundle.model_id, bundle.codec)
    server = ServerProcess(["--port", "0", "--no-llm"], cli_env)
    try:
        result = run_edge("send", "--bundle", str(int8_bundle), str(chelsea), server.url, "what is shown?",
                          "--no-llm", "--json")
        torch_edge = send(image, SendOptions(url=server.url, question="what is shown?", llm=False), lambda _: None)
    finally:
        server.stop()
    assert result.returncode == 0, result.stderr.decode()
    reply = valid_report(result.stdout, "send")
    assert reply["model"] == "lite" and len(reply["layers"]) == 6 and reply["stopped_by"] == "end"
    assert [layer["bytes"] for layer in reply["send"]["layers"]] == [len(chunk) for chunk in layers.chunks]
    assert reply["send"]["bytes"] == reply["bytes"] == layers.layer_ends()[-1]
    top1 = reply["labels"][0]["label"]
    assert top1 == torch_edge["labels"][0]["label"] and top1 in reply["answer"]
    assert b"prosemc: sent 6 of 6 layers" in result.stderr


def test_send_bundle_refuses_model_and_codec_before_connecting(int8_bundle, chelsea):
    for extra in (["--model", "lite"], ["--codec", "baseline"]):
        result = CliRunner().invoke(cli, ["send", "--bundle", str(int8_bundle), str(chelsea), "http://127.0.0.1:9",
                                          "what is shown?", *extra])
        assert result.exit_code == 2 and f"{extra[0]} cannot be combined with --bundle" in result.output, result.output


def test_optimised_graph_cache_gives_the_same_tokens(int8_bundle, chelsea, tmp_path, monkeypatch):
    """The first load keeps onnxruntime's optimised graph in the cache, the next runs it; a damaged entry or a link is
    replaced."""
    monkeypatch.setenv("PROSEMC_CACHE", str(tmp_path))
    image = load_image(str(chelsea))
    plain = EdgeBundle.load(int8_bundle, cache=False).vision.encode_image(image).tokens
    assert not (tmp_path / "onnx-optimised").exists()
    first = EdgeBundle.load(int8_bundle).vision.encode_image(image).tokens
    [entry] = (tmp_path / "onnx-optimised").iterdir()
    kept = entry.stat().st_mtime_ns
    second = EdgeBundle.load(int8_bundle).vision.encode_image(image).tokens
    assert [p.name for p in entry.parent.iterdir()] == [entry.name] and entry.stat().st_mtime_ns == kept
    assert np.array_equal(first, plain) and np.array_equal(second, plain)
    entry.write_bytes(b"damaged")
    third = EdgeBundle.load(int8_bundle).vision.encode_image(image).tokens
    [redone] = (tmp_path / "onnx-optimised").iterdir()
    assert np.array_equal(third, plain) and redone.read_bytes() != b"damaged"
    redone.unlink()
    redone.symlink_to("/dev/zero")  # never read: a link is not a cache entry
    fourth = EdgeBundle.load(int8_bundle).vision.encode_image(image).tokens
    [plain_file] = (tmp_path / "onnx-optimised").iterdir()
    assert np.array_equal(fourth, plain) and not plain_file.is_symlink()
    listed = CliRunner().invoke(cli, ["cache", "list", "--json"])
    assert [(e["name"], e["kind"]) for e in json.loads(listed.stdout)["entries"]] == [("onnx-optimised", "onnx")]


@pytest.mark.parametrize("damage, message", [
    ("graph", "encoder.onnx was changed after export"),
    ("weights", "metaae.safetensors is missing"),
    ("manifest", "manifest.json was edited after export"),
    ("no-manifest", "has no manifest.json"),
])
def test_damaged_bundle_is_refused_naming_the_file(int8_bundle, chelsea, tmp_path, damage, message):
    bundle = tmp_path / "edge"
    shutil.copytree(int8_bundle, bundle)
    if damage == "graph":
        data = bytearray((bundle / "encoder.onnx").read_bytes())
        data[-100] ^= 1
        (bundle / "encoder.onnx").write_bytes(bytes(data))
    elif damage == "weights":
        (bundle / "metaae.safetensors").unlink()
    elif damage == "manifest":
        manifest = json.loads((bundle / "manifest.json").read_text())
        manifest["model"]["id"] = "other"
        (bundle / "manifest.json").write_text(json.dumps(manifest))
    else:
        (bundle / "manifest.json").unlink()
    out = tmp_path / "x.psem"
    result = run_edge("encode", "--bundle", str(bundle), str(chelsea), "-o", str(out))
    stderr = result.stderr.decode()
    assert result.returncode == 2 and message in stderr and "Traceback" not in stderr, stderr
    assert len(stderr.strip().splitlines()) == 1 and not out.exists()


def test_edge_encode_bad_inputs(int8_bundle, chelsea, tmp_path):
    not_image = tmp_path / "notes.jpg"
    not_image.write_text("not a photo")
    cases = [
        (["encode", "--bundle", str(int8_bundle), str(not_image), "-o", str(tmp_path / "a.psem")], "is not an image"),
        (["encode", "--bundle", str(int8_bundle), str(chelsea), "-o", str(tmp_path / "b.psem"), "--model", "lite"],
         "--model cannot be combined with --bundle"),
        (["encode", "--bundle", str(tmp_path / "nowhere"), str(chelsea), "-o", str(tmp_path / "c.psem")],
         "is not a folder"),
        (["encode", "--bundle", str(int8_bundle), str(chelsea), "-o", str(tmp_path / "d.psem"), "--codec-weights",
          str(int8_bundle / "metaae.safetensors")], "--codec-weights cannot be combined with --bundle"),
    ]
    for args, message in cases:
        result = CliRunner().invoke(cli, args)
        assert result.exit_code == 2 and message in result.output, (args, result.output)
    assert not list(tmp_path.glob("*.psem"))


def test_export_bad_inputs_exit_2_before_any_work(tmp_path, calibration, int8_bundle):
    empty = tmp_path / "empty"
    empty.mkdir()
    existing = tmp_path / "existing"
    existing.mkdir()
    (existing / "keep.txt").write_text("user data")
    cases = [
        (["--target", "imx96"], "unknown target 'imx96'; choose one of: cpu, imx95"),
        (["--calibration", str(empty)], f"calibration folder {empty} holds no images"),
        (["--calibration", str(tmp_path / "missing")], "does not exist"),
        (["--precision", "int4"], "Invalid value for '--precision'"),
    ]
    for extra, message in cases:
        result = CliRunner().invoke(cli, ["export", "-o", str(tmp_path / "out"), *extra])
        assert result.exit_code == 2 and message in result.output, (extra, result.output)
    result = CliRunner().invoke(cli, ["export", "-o", str(int8_bundle)])
    assert result.exit_code == 2 and "already exists; pass --force" in result.output
    result = CliRunner().invoke(cli, ["export", "-o", str(existing), "--force"])
    assert result.exit_code == 2 and "is not an edge bundle; refusing to replace it" in result.output
    assert (existing / "keep.txt").read_text() == "user data" and not (tmp_path / "out").exists()


def test_export_json_reports_parity_and_force_replaces(fp32_export, tmp_path, valid_report):
    out, report = fp32_export
    valid_report(report, "export")
    assert report["output"] == str(out) and report["parity"]["images"] == 2
    assert report["parity"]["token_cosine_mean"] >= 0.9999 and report["parity"]["top1_agreement"] == 1.0
    assert report["parity"]["check_images"] == str(ROOT / "examples")
    assert report["command"] == "export" and report["precision"] == "fp32"
    assert {row["runs_on"] for row in report["manifest"]["graph"]["placement"]} == {"cpu"}
    bundle = tmp_path / "edge"
    shutil.copytree(out, bundle)
    (bundle / "stale.txt").write_text("from the old bundle")
    again = CliRunner().invoke(cli, ["export", "--target", "cpu", "-o", str(bundle), "--check-images",
                                     str(ROOT / "examples"), "--force"])
    assert again.exit_code == 0 and "parity vs torch fp32 on 2 photos" in again.output
    assert sorted(p.name for p in bundle.iterdir()) == ["encoder.onnx", "manifest.json", "metaae.safetensors"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["edge"]  # the old bundle and the work folder are gone
