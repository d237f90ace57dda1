"""Run prosemc on hostile input as a child process and measure what it cost: exit code, stderr, its own peak RSS, time.

    outcome = run_prosemc(["decode", "x.psem", "-o", "t.safetensors"], cwd=tmp, stdin=pieces)
    assert_refused(outcome, r"what the one line says", input_bytes=len(x))

The peak RSS is the child's own: a small wrapper process starts it and reads RUSAGE_CHILDREN, because a child forked
straight from pytest inherits pytest's high-water mark. Bounds are generous ceilings, not timing targets: a fixed
start-up allowance plus an allowance per MiB of input, so that work must stay proportional to what was sent.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

MIB = 1 << 20
LIGHT_COMMANDS = ("info", "truncate", "decode", "encode")  # no torch on their refusal paths
BASE_SECONDS = {"light": 30.0, "model": 120.0}  # start-up on a shared, loaded 2-core machine
SECONDS_PER_MIB = 2.0
MAX_RSS_MIB = {"light": 400, "model": 2048}

_WRAPPER = (
    "import resource, subprocess, sys\n"
    "code = subprocess.call(sys.argv[2:])\n"
    "open(sys.argv[1], 'w').write(str(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss))\n"
    "sys.exit(code if code >= 0 else 128 - code)\n"
)


@dataclass
class Outcome:
    """What one run of prosemc did."""

    returncode: int
    stdout: bytes
    stderr: str
    peak_rss_mib: float
    seconds: float
    command: list[str]

    @property
    def stderr_lines(self) -> list[str]:
        return self.stderr.splitlines()


def run_prosemc(args: list[str], **options) -> Outcome:  # noqa: ANN003 - those of run_measured
    """Run `python -m prosemc ARGS` with run_measured."""
    outcome = run_measured([sys.executable, "-m", "prosemc", *args], **options)
    outcome.command = args
    return outcome


def run_measured(argv: list[str], *, cwd: Path, stdin: bytes | Path | Iterable[bytes] | None = None,
                 env: dict[str, str] | None = None, timeout: float = 600, keep_stdout: bool = True) -> Outcome:
    """Run argv in cwd under the RSS-measuring wrapper; stdin from bytes, a file or pieces (fed from a thread, so
    the child can stop reading early); stdout kept, or discarded when it is large."""
    with tempfile.NamedTemporaryFile("r", suffix=".rss") as rss, tempfile.TemporaryFile() as out, \
            tempfile.TemporaryFile() as err:
        command = [sys.executable, "-c", _WRAPPER, rss.name, *argv]
        source = open(stdin, "rb") if isinstance(stdin, Path) else None
        started = time.monotonic()
        child = subprocess.Popen(command, cwd=cwd, env=env, stderr=err, stdout=out if keep_stdout else subprocess.DEVNULL,
                                 stdin=source or (subprocess.PIPE if stdin is not None else subprocess.DEVNULL))
        feeder = None
        if child.stdin is not None:
            pieces = [stdin] if isinstance(stdin, bytes) else stdin
            feeder = threading.Thread(target=_feed, args=(child.stdin, pieces), daemon=True)
            feeder.start()
        try:
            child.wait(timeout=timeout)
        finally:
            child.kill()
            child.wait()
            if source:
                source.close()
        seconds = time.monotonic() - started  # a feeder still sleeping or writing is left to the broken pipe
        out.seek(0)
        err.seek(0)
        text = rss.read().strip()
        return Outcome(child.returncode, out.read(), err.read().decode("utf-8", "replace"),
                       int(text) / 1024 if text else float("nan"), seconds, argv)


def _feed(pipe, pieces: Iterable[bytes]) -> None:  # noqa: ANN001 - a subprocess pipe
    """Write pieces into the child's stdin until they end or the child stops reading."""
    try:
        for piece in pieces:
            pipe.write(piece)
            pipe.flush()
        pipe.close()
    except (BrokenPipeError, ValueError, OSError):
        pass


def kind_of(args: list[str]) -> str:
    return "light" if args[0] in LIGHT_COMMANDS else "model"


def assert_refused(outcome: Outcome, pattern: str, *, input_bytes: int, folder: Path | None = None,
                   allowed: Iterable[str] = ()) -> None:
    """Exit code 2, exactly one stderr line matching `pattern` and no traceback, nothing left in `folder` but
    `allowed`, and peak RSS and time within the bounds for this kind of command and this much input."""
    assert outcome.returncode == 2, (outcome.returncode, outcome.stderr)
    assert len(outcome.stderr_lines) == 1, outcome.stderr
    assert outcome.stderr_lines[0].startswith("prosemc: error: "), outcome.stderr
    assert re.search(pattern, outcome.stderr_lines[0]), (pattern, outcome.stderr)
    assert "Traceback" not in outcome.stderr
    assert_within_bounds(outcome, input_bytes)
    if folder is not None:
        left = sorted(name for name in os.listdir(folder) if name not in set(allowed))
        assert left == [], f"left behind: {left}"


def assert_within_bounds(outcome: Outcome, input_bytes: int) -> None:
    """Peak RSS and time within the generous bounds for this command and this much input."""
    kind = kind_of(outcome.command)
    limit = BASE_SECONDS[kind] + SECONDS_PER_MIB * input_bytes / MIB
    assert outcome.seconds < limit, f"{outcome.command} took {outcome.seconds:.1f} s, over {limit:.0f} s"
    assert outcome.peak_rss_mib < MAX_RSS_MIB[kind], \
        f"{outcome.command} peaked at {outcome.peak_rss_mib:.0f} MiB RSS, over {MAX_RSS_MIB[kind]} MiB"
