"""Docs match the code: the CLI reference is generated from --help, and the README shows the two set-up commands."""

from __future__ import annotations

import runpy
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_cli_reference_is_current():
    render = runpy.run_path(str(ROOT / "docs" / "make_cli_reference.py"))["render"]
    assert (ROOT / "docs" / "cli.md").read_text() == render(), "run: python docs/make_cli_reference.py"


def test_readme_setup_is_the_two_make_commands():
    readme = (ROOT / "README.md").read_text()
    assert "make demo" in readme and "make test" in readme
