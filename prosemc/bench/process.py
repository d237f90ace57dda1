"""Timing helpers: best-of-N wall time of a call, and a fresh process's wall time and peak resident memory."""

from __future__ import annotations

import os
import subprocess
import time
from dataclasses import dataclass
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
    """Wall seconds, peak RSS in MiB and exit code of one finished child process."""

    seconds: float
    peak_rss_mib: float
    returncode: int


def run_process(command: list[str], stdin: bytes | None = None, env: dict[str, str] | None = None) -> ProcessRun:
    """Run `command` to completion (output discarded) and read its own rusage via wait4."""
    start = time.perf_counter()
    child = subprocess.Popen(command, stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    if stdin is not None:
        assert child.stdin is not None
        child.stdin.write(stdin)
        child.stdin.close()
    _, status, usage = os.wait4(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)
    return ProcessRun(time.perf_counter() - start, usage.ru_maxrss / 1024, child.returncode)
