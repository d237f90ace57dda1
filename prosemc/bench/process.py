"""Timing helpers: best-of-N wall time of a call, and a fresh process's wall time and its own peak resident memory."""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable


def best_seconds(fn: Callable[[], Any], repeats: int = 3) -> tuple[float, Any]:
    """Minimum wall seconds over `repeats` calls (the run least disturbed by other load), and the last result."""
    best, result = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return best, result


@dataclass(frozen=True)
class ProcessRun:
    """Wall seconds, peak RSS of the child alone in MiB (None off Linux) and exit code of one finished process."""

    seconds: float
    peak_rss_mib: float | None
    returncode: int


def run_module(args: list[str], stdin: bytes | None = None, env: dict[str, str] | None = None) -> ProcessRun:
    """Run `python -m ARGS...` (e.g. ["prosemc", "info", "x.psem"]) to completion, output discarded.

    The child reports its own peak memory through prosemc.bench.peak, so the benchmark's own memory (which a
    child inherits in `ru_maxrss`) is not counted.
    """
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "peak"
        command = [sys.executable, "-m", "prosemc.bench.peak", str(report), *args]
        start = time.perf_counter()
        completed = subprocess.run(command, input=stdin, stdin=None if stdin is not None else subprocess.DEVNULL,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, check=False)
        seconds = time.perf_counter() - start
        text = report.read_text().strip() if report.is_file() else ""
    return ProcessRun(seconds, int(text) / 1024 if text else None, completed.returncode)


def peak_mib(runs: list[ProcessRun]) -> float | None:
    """The highest peak RSS of some runs in MiB (rounded to 0.1), None where none could be measured."""
    peaks = [run.peak_rss_mib for run in runs if run.peak_rss_mib is not None]
    return round(max(peaks), 1) if peaks else None
