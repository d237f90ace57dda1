"""`prosemc info` / `truncate` through click and through real processes and pipes: output, exit codes, messages."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from prosemc import format as psem
from prosemc.cli import cli

VECTORS = Path(__file__).resolve().parents[1] / "formats" / "vectors"
MULTI = VECTORS / "multilayer.psem"
PROSEMC = [sys.executable, "-m", "prosemc"]


def run(args: list[str], stdin: bytes = b"") -> subprocess.CompletedProcess:
    return subprocess.run(PROSEMC + args, input=stdin, capture_output=True, timeout=60)


def test_info_json_has_stable_keys_and_values():
    result = CliRunner().invoke(cli, ["info", str(MULTI), "--json"])
    assert result.exit_code == 0, result.output
    info = json.loads(result.output)
    assert sorted(info) == sorted([
        "file", "version", "encoder", "tokens", "codec", "entropy", "layers_declared", "layers_present", "status",
        "summary", "truncated_at", "header_bytes", "total_bytes", "layers", "extensions", "metadata"])
    assert (info["version"], info["encoder"], info["status"], info["layers_present"]) == ("1.0", "lite", "complete", 4)
    assert [l["bytes"] for l in info["layers"]] == [8 + 16, 16 + 16, 32 + 16, 64 + 16]
    assert info["layers"][-1]["cumulative_bytes"] == info["total_bytes"] == MULTI.stat().st_size
    assert all(l["checksum"] == "ok" for l in info["layers"])


def test_info_text_from_stdin_of_a_cut_file_reports_complete_layers_and_cut():
    data = (VECTORS / "cut-mid-layer.psem").read_bytes()
    result = run(["info", "-"], data)
    assert result.returncode == 0
    text = result.stdout.decode()
    assert f"2 complete layers, then truncated at byte {len(data)}" in text
    assert "encoder   lite" in text and "tokens    49 x 1280 float32" in text


@pytest.mark.parametrize("name, message", [
    ("attacks/bad-magic.psem", "not a .psem file (bad magic bytes)"),
    ("attacks/unknown-major.psem", "file is PSEM 2.0, this prosemc reads PSEM 1.x; upgrade prosemc"),
    ("attacks/bad-layer-checksum.psem", "layer 2 (chunk at byte"),
    ("attacks/empty.psem", "empty input"),
])
def test_info_on_bad_input_exits_2_with_one_line_and_no_traceback(name, message):
    result = run(["info", str(VECTORS / name)])
    assert result.returncode == 2
    err = result.stderr.decode()
    assert err.startswith("Error: ") and message in err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert result.stdout == b""


def test_info_empty_stdin_and_missing_file():
    assert run(["info", "-"]).stderr.decode().startswith("Error: empty input")
    missing = run(["info", "/nonexistent/x.psem"])
    assert missing.returncode == 2 and "cannot read /nonexistent/x.psem" in missing.stderr.decode()


def test_truncate_file_to_layers_is_a_byte_prefix(tmp_path):
    out = tmp_path / "two.psem"
    result = CliRunner().invoke(cli, ["truncate", str(MULTI), "-o", str(out), "--layers", "2"])
    assert result.exit_code == 0, result.output
    assert out.read_bytes() == (VECTORS / "multilayer.prefix2.psem").read_bytes()
    assert "kept 2 layers" in result.output


def test_truncate_stdin_to_stdout_by_byte_budget_through_a_real_pipe():
    whole = MULTI.read_bytes()
    prefix3 = (VECTORS / "multilayer.prefix3.psem").read_bytes()
    result = run(["truncate", "-", "-o", "-", "--max-bytes", str(len(whole) - 1), "--json"], whole)
    assert result.returncode == 0
    assert result.stdout == prefix3
    assert json.loads(result.stderr) == {"layers": 3, "bytes": len(prefix3), "output": "<stdout>"}


def test_truncate_budget_too_small_fails_cleanly_and_leaves_no_file(tmp_path):
    out = tmp_path / "x.psem"
    result = run(["truncate", str(MULTI), "-o", str(out), "--max-bytes", "230"])
    assert result.returncode == 2
    assert "no layer fits in --max-bytes 230" in result.stderr.decode()
    assert list(tmp_path.iterdir()) == []


def test_truncate_corrupt_input_leaves_no_partial_output(tmp_path):
    out = tmp_path / "x.psem"
    out.write_bytes(b"old")  # an existing file is not clobbered by a failed run
    result = run(["truncate", str(VECTORS / "attacks/bad-layer-checksum.psem"), "-o", str(out), "--layers", "4"])
    assert result.returncode == 2 and "fails its checksum" in result.stderr.decode()
    assert out.read_bytes() == b"old" and sorted(p.name for p in tmp_path.iterdir()) == ["x.psem"]


def test_truncate_needs_a_rule():
    result = CliRunner().invoke(cli, ["truncate", str(MULTI), "-o", "-"])
    assert result.exit_code == 2 and "pass --layers K or --max-bytes N" in result.output


def test_help_teaches_the_main_commands():
    result = CliRunner().invoke(cli, ["--help"])
    assert result.exit_code == 0
    for word in ("info", "truncate", "prosemc encode img.jpg -o x.psem"):
        assert word in result.output


def test_bench_container_writes_its_results(tmp_path):
    result = CliRunner().invoke(cli, ["bench", "container", "--out", str(tmp_path), "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["layers"] == 10 and data["file_bytes"] > 10_000_000 and data["read_verify_mb_per_s"] > 0
    saved = json.loads((tmp_path / "container.json").read_text())
    assert saved["file_bytes"] == data["file_bytes"] and "machine" in saved
    assert "read + verify every CRC" in (tmp_path / "container.md").read_text()
