"""Run a Python module as `__main__`; at exit, write this process's own peak resident memory (KiB) to a file.

    python -m prosemc.bench.peak REPORT MODULE [ARGS...]      e.g.  ... /tmp/r prosemc info x.psem

Why not the parent's `wait4` rusage: Linux keeps a process's maximum RSS across exec, and a child starts as
a copy of its parent, so `ru_maxrss` of a child of a 300 MiB benchmark process is at least 300 MiB whatever
the child does. VmHWM (/proc/self/status) belongs to the memory map that exec created: the child's alone.
"""

from __future__ import annotations

import atexit
import runpy
import sys
from pathlib import Path


def peak_rss_kib() -> int | None:
    """VmHWM of this process in KiB, or None where /proc is not there (not Linux)."""
    try:
        status = Path("/proc/self/status").read_text()
    except OSError:
        return None
    for line in status.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return None


def main() -> None:
    report, module, *args = sys.argv[1:]
    atexit.register(lambda: Path(report).write_text(str(peak_rss_kib() or "")))
    sys.argv = [module, *args]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
