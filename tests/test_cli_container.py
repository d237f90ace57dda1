"""`prosemc info` / `truncate` through click and through real processes and pipes: output, exit codes, messages."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from prosemc import format as psem
from prosemc.cli import cli
from prosemc.profiles import profile_of

VECTORS = Path(__file__).resolve().parents[1] / "formats" / "vectors"
MULTI = VECTORS / "multilayer.psem"
PROSEMC = [sys.executable, "-m", "prosemc"]


def run(args: list[str], stdin: bytes = b"") -> subprocess.CompletedProcess:
    return subprocess.run(PROSEMC + args, input=stdin, capture_output=True, timeout=60)


def test_info_json_has_stable_keys_and_values(valid_report):
    result = CliRunner().invoke(cli, ["info", str(MULTI), "--json"])
    assert result.exit_code == 0, result.output
    info = valid_report(result.output, "info")
    assert list(info) == [
        "schema", "command", "input", "psem_version", "form", "profile", "model", "codec", "tokens", "layers_declared",
        "header_bytes", "layers", "bytes", "status", "summary", "truncated_at", "extensions", "metadata"]
    assert (info["psem_version"], info["model"], info["status"], len(info["layers"])) == ("1.0", "lite", "complete", 4)
    assert info["codec"] == {"id": "sr-baseline/1", "name": "baseline", "weights_sha256": None,
                             "entropy": "constriction-ans/1", "params": {"step": 2.0}}
    assert info["tokens"] == {"shape": [49, 1280], "dtype": "float32"}
    assert (info["form"], info["profile"]) == ("full", None)
    assert [l["bytes"] for l in info["layers"]] == [8 + 16, 16 + 16, 32 + 16, 64 + 16]
    assert info["layers"][-1]["cumulative_bytes"] == info["bytes"] == MULTI.stat().st_size
    assert all(l["checksum"] == "ok" for l in info["layers"])


def test_info_text_from_stdin_of_a_cut_file_reports_complete_layers_and_cut():
    data = (VECTORS / "cut-mid-layer.psem").read_bytes()
    result = run(["info", "-"], data)
    assert result.returncode == 0
    text = result.stdout.decode()
    assert f"2 complete layers, then truncated at byte {len(data)}" in text
    assert "model     lite" in text and "tokens    49 x 1280 float32" in text


@pytest.mark.parametrize("name, message", [
    ("attacks/bad-magic.psem", "not a .psem file (bad magic bytes)"),
    ("attacks/unknown-major.psem", "file is PSEM 3.0, this prosemc reads PSEM 1.x and 2.x; upgrade prosemc"),
    ("attacks/compact-unknown-major.psem", "file is PSEM 3.0 in the compact form, this prosemc reads compact PSEM 2.x"),
    ("attacks/compact-bad-layer-checksum.psem", "layer 2 (chunk at byte 31"),
    ("attacks/bad-layer-checksum.psem", "layer 2 (chunk at byte"),
    ("attacks/empty.psem", "empty input"),
])
def test_info_on_bad_input_exits_2_with_one_line_and_no_traceback(name, message):
    result = run(["info", str(VECTORS / name)])
    assert result.returncode == 2
    err = result.stderr.decode()
    assert err.startswith(f"prosemc: error: {VECTORS / name}: ") and message in err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert result.stdout == b""


def test_info_empty_stdin_and_missing_file():
    assert run(["info", "-"]).stderr.decode().startswith("prosemc: error: <stdin>: empty input")
    missing = run(["info", "/nonexistent/x.psem"])
    assert missing.returncode == 2 and "cannot read /nonexistent/x.psem" in missing.stderr.decode()


def test_truncate_file_to_layers_is_a_byte_prefix(tmp_path):
    out = tmp_path / "two.psem"
    result = CliRunner().invoke(cli, ["truncate", str(MULTI), "-o", str(out), "--layers", "2"])
    assert result.exit_code == 0, result.output
    assert out.read_bytes() == (VECTORS / "multilayer.prefix2.psem").read_bytes()
    assert "kept 2 layers" in result.output


def test_truncate_stdin_to_stdout_by_byte_budget_through_a_real_pipe(valid_report, tmp_path):
    whole = MULTI.read_bytes()
    prefix3 = (VECTORS / "multilayer.prefix3.psem").read_bytes()
    result = run(["truncate", "-", "-o", "-", "--max-bytes", str(len(whole) - 1), "--json"], whole)
    assert result.returncode == 0
    assert result.stdout == prefix3  # the data; the report goes to stderr
    report = valid_report(result.stderr, "truncate")
    assert (report["input"], report["output"], report["form"], report["profile"]) == ("<stdin>", "<stdout>", "full",
                                                                                      None)
    assert [layer["bytes"] for layer in report["layers"]] == [24, 32, 48] and report["bytes"] == len(prefix3)
    assert report["layers"][-1]["cumulative_bytes"] == len(prefix3) and report["layers_declared"] == 4
    to_file = run(["truncate", str(MULTI), "-o", str(tmp_path / "x.psem"), "--layers", "3", "--json"])
    assert to_file.stderr == b"" and valid_report(to_file.stdout, "truncate")["bytes"] == len(prefix3)  # `| jq` works


def test_truncate_budget_too_small_fails_cleanly_and_leaves_no_file(tmp_path):
    out = tmp_path / "x.psem"
    result = run(["truncate", str(MULTI), "-o", str(out), "--max-bytes", "230"])
    assert result.returncode == 2
    assert ("a budget of 230 bytes holds no layer: the header and layer 1 need 231 bytes; raise the budget to at "
            "least 231") in result.stderr.decode()
    assert list(tmp_path.iterdir()) == []


def test_truncate_corrupt_input_leaves_no_partial_output(tmp_path):
    out = tmp_path / "x.psem"
    out.write_bytes(b"old")  # an existing file is not clobbered by a failed run
    result = run(["truncate", str(VECTORS / "attacks/bad-layer-checksum.psem"), "-o", str(out), "--layers", "4"])
    assert result.returncode == 2 and "fails its checksum" in result.stderr.decode()
    assert out.read_bytes() == b"old" and sorted(p.name for p in tmp_path.iterdir()) == ["x.psem"]


def test_truncate_needs_a_rule():
    result = CliRunner().invoke(cli, ["truncate", str(MULTI), "-o", "-"])
    assert result.exit_code == 2 and "pass --layers K or --max-bytes N (or both), or --compact" in result.output


def test_help_teaches_the_main_commands():
    result = CliRunner().invoke(cli, ["--help"])
    assert result.exit_code == 0
    for word in ("info", "truncate", "prosemc encode img.jpg -o x.psem"):
        assert word in result.output


def test_bench_container_writes_its_results(tmp_path, valid_report):
    result = CliRunner().invoke(cli, ["bench", "container", "--out", str(tmp_path), "--json"])
    assert result.exit_code == 0, result.output
    data = valid_report(result.stdout, "bench container")
    assert data["layer_count"] == 10 and data["file_bytes"] > 10_000_000 and data["read_verify_mb_per_s"] > 0
    assert data["file_bytes"] - data["compact_file_bytes"] == (134 - 18) + 10 * (16 - 8)  # 1 MB layers: 4-byte tags
    assert data["compact_read_verify_mb_per_s"] > 0 and data["compact_info_cold_s_best"] > 0
    small = {row["profile_name"]: row for row in data["small_files"]}
    assert small["lite-metaae"]["full_bytes"] - small["lite-metaae"]["compact_bytes"] == 246 - 18 + 6 * 10
    assert all(row["full_us"] > 0 and row["compact_us"] > 0 for row in small.values())
    saved = valid_report((tmp_path / "container.json").read_text(), "bench container")
    assert saved == data and "prosemc threads" in saved["machine"]
    assert "read + verify every CRC" in (tmp_path / "container.md").read_text()


COMPACT = VECTORS / "compact.psem"
VECTOR_PROFILE = VECTORS / "profiles" / "vectors.json"
VECTOR_PROFILE_ID = "ca8db0d6e1b36bca"


def test_compact_file_without_its_profile_is_refused_in_one_line_naming_the_id_and_the_way_out(tmp_path):
    out = tmp_path / "full.psem"
    for args in (["expand", str(COMPACT), "-o", str(out)], ["truncate", str(COMPACT), "-o", str(out), "--layers", "1"],
                 ["decode", str(COMPACT), "-o", str(tmp_path / "t.safetensors")]):
        result = run(args)
        err = result.stderr.decode()
        assert result.returncode == 2 and err.count("\n") == 1 and "Traceback" not in err, err
        assert f"this compact .psem needs profile {VECTOR_PROFILE_ID}, which this install does not know" in err
        assert "`prosemc expand FILE -o FULL.psem`" in err and f"`prosemc profiles show {VECTOR_PROFILE_ID}`" in err
    assert list(tmp_path.iterdir()) == []


def test_info_on_a_compact_file_names_its_profile_known_or_not(valid_report):
    unknown = valid_report(run(["info", str(COMPACT), "--json"]).stdout, "info")
    assert unknown["form"] == "compact" and unknown["psem_version"] == "2.0" and unknown["header_bytes"] == 18
    assert unknown["profile"] == {"id": VECTOR_PROFILE_ID, "known": False, "name": None, "source": None}
    assert (unknown["model"], unknown["codec"], unknown["tokens"]) == (None, None, None)
    assert (unknown["layers_declared"], unknown["status"]) == (None, "needs-profile")
    assert [l["checksum"] for l in unknown["layers"]] == ["ok"] * 4  # verified without the header
    text = run(["info", str(COMPACT)]).stdout.decode()
    assert f"profile   {VECTOR_PROFILE_ID}  not known to this install" in text and "model " not in text


def test_profiles_add_then_info_decodes_and_expand_gives_the_full_vector(tmp_path, monkeypatch, valid_report):
    monkeypatch.setenv("PROSEMC_PROFILES", str(tmp_path / "profiles"))
    added = CliRunner().invoke(cli, ["profiles", "add", str(VECTOR_PROFILE), "--json"])
    assert added.exit_code == 0, added.output
    assert valid_report(added.stdout, "profiles add") == {
        "schema": 1, "command": "profiles add", "id": VECTOR_PROFILE_ID, "name": "vectors", "added": True,
        "path": str(tmp_path / "profiles" / "vectors.json")}
    again = CliRunner().invoke(cli, ["profiles", "add", str(VECTOR_PROFILE), "--json"])
    assert json.loads(again.stdout)["added"] is False
    info = valid_report(CliRunner().invoke(cli, ["info", str(COMPACT), "--json"]).stdout, "info")
    assert info["profile"]["known"] and info["model"] == "lite" and info["status"] == "complete"
    out = tmp_path / "full.psem"
    result = CliRunner().invoke(cli, ["expand", str(COMPACT), "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert out.read_bytes() == MULTI.read_bytes() and "prosemc: expanded 4 layers" in result.output
    report = valid_report(CliRunner().invoke(cli, ["expand", str(COMPACT), "-o", str(out), "--json"]).stdout, "expand")
    assert report["expanded"] and report["form"] == "full" and report["bytes"] == MULTI.stat().st_size


def test_expand_with_a_given_profile_file_and_with_the_wrong_one(tmp_path):
    out = tmp_path / "full.psem"
    result = run(["expand", str(VECTORS / "compact.prefix2.psem"), "-o", str(out), "--profile", str(VECTOR_PROFILE)])
    assert result.returncode == 0, result.stderr
    assert out.read_bytes() == (VECTORS / "multilayer.prefix2.psem").read_bytes()
    wrong = run(["expand", str(COMPACT), "-o", str(tmp_path / "x.psem"), "--profile", "lite-metaae"])
    assert wrong.returncode == 2
    assert f"lite-metaae is profile 6094ba00f9a244a6, but {COMPACT} needs profile {VECTOR_PROFILE_ID}; pass that one" \
        in wrong.stderr.decode()
    copied = run(["expand", str(MULTI), "-o", "-"])
    assert copied.stdout == MULTI.read_bytes() and b"already in the full form" in copied.stderr


def test_truncate_compact_converts_a_full_file_through_a_pipe_within_a_budget(valid_report):
    whole = MULTI.read_bytes()
    result = run(["truncate", "-", "-o", "-", "--compact", "--max-bytes", "130", "--json"], whole)
    assert result.returncode == 0, result.stderr
    report = valid_report(result.stderr.decode().splitlines()[0], "truncate")
    assert report["form"] == "compact" and len(report["layers"]) == 3 and len(result.stdout) == report["bytes"] == 130
    profile = profile_of(psem.loads(whole).header)  # the header less its metadata: the patch carries that
    assert profile.metadata == {} and report["profile"]["id"] == psem.Profile.of(profile).hex
    assert report["profile"]["known"] is False
    parsed = psem.loads(result.stdout, profiles=psem.ProfileStore(profiles=[psem.Profile.of(profile)]))
    assert parsed.layers == psem.loads(whole).layers[:3] and parsed.header == psem.loads(whole).header
    assert "the receiver needs it" in result.stderr.decode()  # the multilayer vector's profile is not built in


def test_profiles_lists_the_built_in_ones_and_shows_one_as_its_json(valid_report):
    listing = valid_report(CliRunner().invoke(cli, ["profiles", "--json"]).stdout, "profiles")
    names = {p["name"]: p for p in listing["profiles"]}
    assert {"lite-metaae", "lite-baseline", "lite-raw-f32", "lite-raw-f16", "lite-int8"} <= set(names)
    assert names["lite-metaae"]["id"] == "6094ba00f9a244a6" and names["lite-metaae"]["source"] == "built-in"
    assert names["lite-metaae"]["codec"]["name"] == "metaae" and names["lite-metaae"]["layers_declared"] == 6
    assert names["lite-metaae"]["model"] == "lite" and names["lite-metaae"]["tokens"]["shape"] == [49, 1280]
    shown = CliRunner().invoke(cli, ["profiles", "show", "6094ba00f9a244a6"])
    assert shown.exit_code == 0 and hashlib.sha256(shown.stdout.strip().encode()).hexdigest()[:16] == "6094ba00f9a244a6"
    missing = CliRunner().invoke(cli, ["profiles", "show", "nope"])
    assert missing.exit_code == 2 and "no known profile named 'nope'" in missing.output
