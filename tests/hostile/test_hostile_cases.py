"""The committed hostile inputs (tests/hostile/cases/, made by make_cases.py): each is refused by the real CLI with
exit code 2 and one stderr line, leaves no file behind, and stays within memory and time bounds for its size."""

from __future__ import annotations

import hashlib
import json
import re
import runpy
from pathlib import Path

import pytest
from hostile_harness import BASE_SECONDS, SECONDS_PER_MIB, MIB, assert_refused, kind_of, run_prosemc

HERE = Path(__file__).resolve().parent
MANIFEST = json.loads((HERE / "cases.json").read_text())
REFUSALS = sorted(name for name, case in MANIFEST.items() if "command" in case)
VECTORS = HERE.parents[1] / "formats" / "vectors" / "attacks"
HEADER_VECTORS = ["header-integer-4301-digits", "header-integer-401-digits", "header-float-1e400",
                  "header-lone-surrogate"]


def test_generator_reproduces_committed_cases_byte_for_byte():
    generated = runpy.run_path(str(HERE / "make_cases.py"))["build"]()
    assert sorted(generated) == sorted(MANIFEST)
    for name, (data, expected) in generated.items():
        assert (HERE / "cases" / name).read_bytes() == data, name
        assert {k: v for k, v in MANIFEST[name].items() if k not in ("sha256", "bytes")} == expected
        assert hashlib.sha256(data).hexdigest() == MANIFEST[name]["sha256"]


def bound(args: list[str], size: int) -> float:
    return BASE_SECONDS[kind_of(args)] + SECONDS_PER_MIB * size / MIB


@pytest.mark.parametrize("name", REFUSALS)
def test_hostile_case_is_refused_within_bounds(name: str, tmp_path: Path, cli_env: dict[str, str]):
    case = MANIFEST[name]
    args = [part.format(file=HERE / "cases" / name, tmp=tmp_path) for part in case["command"]]
    outcome = run_prosemc(args, cwd=tmp_path, env=cli_env, timeout=bound(args, case["bytes"]))
    assert_refused(outcome, case["stderr"], input_bytes=case["bytes"], folder=tmp_path)


@pytest.mark.parametrize("vector", HEADER_VECTORS)
@pytest.mark.parametrize("command", ["info", "decode"])
def test_crc_valid_hostile_headers_are_one_line_errors(vector: str, command: str, tmp_path: Path,
                                                       cli_env: dict[str, str]):
    """Huge integers, 1e400 and lone surrogates used to end in ValueError, OverflowError or UnicodeEncodeError."""
    path = VECTORS / f"{vector}.psem"
    args = ["info", str(path)] if command == "info" else ["decode", str(path), "-o", str(tmp_path / "t.safetensors")]
    outcome = run_prosemc(args, cwd=tmp_path, env=cli_env, timeout=bound(args, 0))
    assert_refused(outcome, rf"^prosemc: error: {re.escape(str(path))}: invalid \.psem header: .*; the file was not written by a "
                            "conforming encoder",
                   input_bytes=path.stat().st_size, folder=tmp_path)


def test_info_escapes_header_strings(tmp_path: Path, cli_env: dict[str, str]):
    """An OSC escape sequence and a newline in `encoder` neither reach the terminal nor forge a line."""
    outcome = run_prosemc(["info", str(HERE / "cases" / "header-terminal-escapes.psem")], cwd=tmp_path, env=cli_env)
    assert outcome.returncode == 0, outcome.stderr
    lines = outcome.stdout.decode().splitlines()
    assert lines[1] == r"model     lite\x1b]0;owned\x07\nstatus    complete: all 99 layers"
    assert [line for line in lines if line.startswith("status")] == ["status    complete: the only layer"]
    assert "\x1b" not in outcome.stdout.decode() and "\x07" not in outcome.stdout.decode()
    as_json = run_prosemc(["info", "--json", str(HERE / "cases" / "header-terminal-escapes.psem")], cwd=tmp_path,
                          env=cli_env)
    assert json.loads(as_json.stdout)["model"].startswith("lite\x1b]0;owned")  # JSON keeps the value, escaped
