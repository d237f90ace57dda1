"""`prosemc models` and `prosemc cache`: what is installed and cached, sizes, and safe removal."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from prosemc.models.llm import converted_dir

LLM = converted_dir(Path("cache")).name  # the converted SmolLM2's folder name (wheel version, cache format)


def prosemc(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "prosemc", *args], capture_output=True, text=True, env=env, timeout=120)


@pytest.fixture()
def cache(tmp_path: Path, cli_env: dict[str, str]) -> tuple[Path, dict[str, str]]:
    """A prosemc cache with one entry of every kind, and an HF cache with one LLaVA and one other model."""
    root = tmp_path / "cache"
    (root / LLM).mkdir(parents=True)
    (root / LLM / "model.safetensors").write_bytes(b"w" * 1000)
    (root / f".{LLM}.tmp-abc").mkdir()
    (root / f".{LLM}.tmp-abc" / "part").write_bytes(b"p" * 10)
    (root / "metaae-tokens" / "sub").mkdir(parents=True)
    (root / "metaae-tokens" / "a.npy").write_bytes(b"t" * 300)
    (root / "metaae-tokens" / "sub" / "b.npy").write_bytes(b"t" * 200)
    (root / "checkpoint-hashes.json").write_text("{}")
    (root / "notes.txt").write_text("mine")
    hub = tmp_path / "hub"
    for repo, model_type in (("models--org--tiny-llava", "llava"), ("models--org--bert", "bert")):
        snapshot = hub / repo / "snapshots" / ("2" * 40)
        snapshot.mkdir(parents=True)
        (snapshot / "config.json").write_text(json.dumps({"model_type": model_type}))
        (hub / repo / "refs").mkdir()
        (hub / repo / "refs" / "main").write_text("2" * 40)
    return root, {**cli_env, "PROSEMC_CACHE": str(root), "HF_HUB_CACHE": str(hub)}


def test_cache_lists_every_entry_with_kind_and_bytes(cache, valid_report):
    root, env = cache
    listed = prosemc(env, "cache", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    data = valid_report(listed.stdout, "cache list")
    assert valid_report(prosemc(env, "cache", "--json").stdout, "cache list") == data
    kinds = {e["name"]: (e["kind"], e["bytes"]) for e in data["entries"]}
    assert kinds == {f".{LLM}.tmp-abc": ("partial", 10), "checkpoint-hashes.json": ("hashes", 2),
                     "metaae-tokens": ("tokens", 500), "notes.txt": ("other", 4),
                     LLM: ("llm", 1000)}
    assert data["bytes"] == 1516 and data["path"] == str(root)
    text = prosemc(env, "cache")
    assert text.returncode == 0 and text.stdout.splitlines()[0] == f"{root}: 1.5 KB in 5 entries"
    assert "  tokens       500 B  metaae-tokens" in text.stdout.splitlines()


def test_cache_remove_by_kind_or_name_and_all_leaves_foreign_files(cache, valid_report):
    root, env = cache
    removed = prosemc(env, "cache", "remove", "tokens", "--json")
    assert removed.returncode == 0, removed.stderr
    assert valid_report(removed.stdout, "cache remove")["bytes"] == 500 and not (root / "metaae-tokens").exists()
    by_name = prosemc(env, "cache", "remove", LLM)
    assert by_name.returncode == 0 and by_name.stderr.splitlines() == [
        f"prosemc: removed {root / LLM} (1.0 KB)", "prosemc: removed 1 entry, freed 1.0 KB"]
    assert sorted(p.name for p in root.iterdir()) == [f".{LLM}.tmp-abc",
                                                      "checkpoint-hashes.json", "notes.txt"]
    everything = prosemc(env, "cache", "remove", "--all", "--json")
    assert everything.returncode == 0 and json.loads(everything.stdout)["bytes"] == 12
    assert [p.name for p in root.iterdir()] == ["notes.txt"]  # not prosemc's: never removed
    refused = prosemc(env, "cache", "remove", "notes.txt")
    assert refused.returncode == 2 and "was not made by prosemc" in refused.stderr and (root / "notes.txt").exists()
    unknown = prosemc(env, "cache", "remove", "llm")
    assert unknown.returncode == 2 and "nothing in the cache is called 'llm'" in unknown.stderr
    nothing = prosemc(env, "cache", "remove")
    assert nothing.returncode == 2 and "say what to remove" in nothing.stderr


def test_models_lists_lite_codecs_families_and_what_is_present(cache, valid_report):
    root, env = cache
    shown = prosemc(env, "models", "--json")
    assert shown.returncode == 0, shown.stderr
    data = valid_report(shown.stdout, "models")
    lite = data["models"][0]
    assert lite["name"] == "lite" and lite["parts"]["encoder_weights"]["present"] is True
    assert lite["parts"]["answerer_gguf"]["present"] is True
    assert lite["parts"]["answerer_cache"] == {"path": str(root / LLM),
                                               "present": True, "bytes": 1000}
    assert [c["name"] for c in data["codecs"]] == ["metaae", "baseline", "raw-f32", "raw-f16", "int8"]
    assert data["codecs"][1]["id"] == "sr-baseline/1" and "weights" not in data["codecs"][1]
    metaae, dense = data["codecs"][0]["weights"]
    assert metaae["model"] == "lite" and dense["model"] == "lite-dense"
    assert metaae["present"] and len(metaae["sha256"]) == 64 and metaae["path"].endswith("metaae-lite.safetensors")
    assert data["models"][1]["name"] == "lite-dense"
    assert dense["present"] and dense["path"].endswith("metaae-lite-dense.safetensors") and len(dense["sha256"]) == 64
    assert [f["family"] for f in data["hf_families"]] == ["llava", "idefics3", "qwen2_vl"]
    assert [(c["id"], c["family"]) for c in data["hf_checkpoints"]] == [("org/tiny-llava", "llava")]  # not bert
    assert len(data["cache"]["entries"]) == 5 and data["cache"]["bytes"] == 1516
    text = prosemc(env, "models")
    assert "  org/tiny-llava (llava, " in text.stdout and "answerer cache: 1.0 KB" in text.stdout
