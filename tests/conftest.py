"""Shared fixtures: offline Hugging Face, a per-session model cache, real images as files."""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# User state goes to a per-run temp dir, never ~/.cache: SmolLM2 is converted once per test run. pytest-xdist's
# workers inherit the controller's environment, so they share its folder (conversions are locked across processes).
if "PROSEMC_TEST_CACHE" not in os.environ:
    os.environ["PROSEMC_TEST_CACHE"] = tempfile.mkdtemp(prefix="prosemc-test-cache-")
os.environ["PROSEMC_CACHE"] = os.environ["PROSEMC_TEST_CACHE"]
os.environ["PROSEMC_PROFILES"] = os.path.join(os.environ["PROSEMC_CACHE"], "profiles")  # never ~/.config



def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if "PYTEST_XDIST_WORKER" not in os.environ:  # the controller, or a run without xdist, cleans up
        shutil.rmtree(os.environ["PROSEMC_CACHE"], ignore_errors=True)  # ~0.5 GB of converted SmolLM2


ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
BIN = Path(sys.executable).parent


@pytest.fixture(scope="session")
def cli_env() -> dict[str, str]:
    """Environment for subprocesses: the venv's `prosemc` and the recipes in cli/ on PATH, offline."""
    env = dict(os.environ)
    env["PATH"] = f"{BIN}{os.pathsep}{ROOT / 'cli'}{os.pathsep}{env.get('PATH', '')}"
    env["HF_HUB_OFFLINE"] = "1"
    return env


@pytest.fixture(scope="session")
def chelsea() -> Path:
    return EXAMPLES / "chelsea.jpg"


@pytest.fixture(scope="session")
def coffee() -> Path:
    return EXAMPLES / "coffee.jpg"


@pytest.fixture(scope="session")
def valid_report() -> Callable[[Any, str], dict]:
    """check(report, command): a --json report (a dict or its JSON text) must satisfy docs/json.schema.json and be
    COMMAND's; returns it as a dict."""
    from jsonschema import Draft202012Validator

    validator = Draft202012Validator(json.loads((ROOT / "docs" / "json.schema.json").read_text()))

    def check(report: Any, command: str) -> dict:
        document = json.loads(report) if isinstance(report, (str, bytes)) else report
        errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message[:300]}" for e in validator.iter_errors(document)]
        assert not errors, errors
        assert document["command"] == command
        return document

    return check
