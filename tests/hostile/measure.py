"""Measure what each hostile input costs prosemc (exit code, wall time, the child's own peak RSS) into
docs/bench/hostile.{json,md}; optionally the same for another checkout (e.g. the code before the hardening).

    OMP_NUM_THREADS=1 python tests/hostile/measure.py [--before /path/to/old/checkout]

`--before` runs the same inputs with PYTHONPATH pointing at that checkout, except those that would take gigabytes
there (the issue's own numbers are quoted for them instead).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import runpy
import tempfile
from pathlib import Path

from hostile_harness import run_prosemc

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
MANIFEST = json.loads((HERE / "cases.json").read_text())
UNSAFE_BEFORE = {"aspect-1x20000.png": "4.3 GB, 194 s (issue 7)", "encode /dev/zero": "~150 MB/s until killed (issue 7)"}


def inputs() -> list[tuple[str, list[str], object, int]]:
    """(name, prosemc args with {file}/{tmp}, stdin, input bytes) for every committed case and large stream."""
    rows = []
    for name, case in sorted(MANIFEST.items()):
        if "command" in case:
            rows.append((name, case["command"], None, case["bytes"]))
    rows.append(("encode /dev/zero", ["encode", "/dev/zero", "-o", "{tmp}/out.psem"], None, 64 << 20))
    streams = runpy.run_path(str(HERE / "make_cases.py"))["streams"]
    rows.append(("garbage-layers into decode -", ["decode", "-", "-o", "{tmp}/t.safetensors"], "garbage-layers",
                 streams()["garbage-layers"][1]))
    rows.append(("extension-flood into truncate -", ["truncate", "-", "-o", "-", "--layers", "2"], "extension-flood",
                 streams()["extension-flood"][1]))
    return rows


def measure(checkout: Path | None) -> dict[str, dict]:
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    if checkout is not None:
        env["PYTHONPATH"] = str(checkout)
    streams = runpy.run_path(str(HERE / "make_cases.py"))["streams"]
    results = {}
    for name, command, stream, size in inputs():
        if checkout is not None and name in UNSAFE_BEFORE:
            results[name] = {"quoted": UNSAFE_BEFORE[name]}
            continue
        with tempfile.TemporaryDirectory() as tmp:
            args = [part.format(file=HERE / "cases" / name, tmp=tmp) for part in command]
            pieces = streams()[stream][0] if stream else None
            try:
                outcome = run_prosemc(args, cwd=Path(tmp), env=env, stdin=pieces, timeout=300, keep_stdout=False)
                results[name] = {"exit": outcome.returncode, "seconds": round(outcome.seconds, 2),
                                 "peak_rss_mib": round(outcome.peak_rss_mib, 1), "input_bytes": size,
                                 "stderr": outcome.stderr_lines[-1] if outcome.stderr_lines else ""}
            except Exception as error:  # noqa: BLE001 - a run over 300 s is a result too
                results[name] = {"quoted": f"did not finish: {type(error).__name__}"}
    return results


def cell(row: dict) -> str:
    if "quoted" in row:
        return row["quoted"]
    return f"exit {row['exit']}, {row['seconds']} s, {row['peak_rss_mib']} MiB"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", type=Path, help="another checkout to measure the same inputs with")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "bench")
    options = parser.parse_args()
    after = measure(None)
    before = measure(options.before) if options.before else {}
    conditions = {"python": platform.python_version(), "machine": platform.machine(), "cpus": os.cpu_count(),
                  "threads": os.environ.get("OMP_NUM_THREADS", "default"), "load_average": os.getloadavg()}
    (options.out / "hostile.json").write_text(json.dumps({"conditions": conditions, "after": after, "before": before},
                                                         indent=1, sort_keys=True) + "\n")
    lines = ["# Hostile inputs: cost before and after hardening (issue 7)", "",
             "`OMP_NUM_THREADS=1 python tests/hostile/measure.py --before <checkout of the code before>`; exit code, "
             "wall time and the child's own peak RSS (a wrapper process reads RUSAGE_CHILDREN). Conditions: "
             f"{conditions['cpus']} CPUs, load average {conditions['load_average'][0]:.1f} (a shared machine), "
             f"OMP_NUM_THREADS={conditions['threads']}.", "",
             "| input | bytes | before | after | after: the one stderr line |", "| --- | ---: | --- | --- | --- |"]
    for name, row in after.items():
        before_cell = cell(before[name]) if name in before else ""
        lines.append(f"| {name} | {row.get('input_bytes', '')} | {before_cell} | {cell(row)} | "
                     f"{row.get('stderr', '').replace('|', '/')} |")
    (options.out / "hostile.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
