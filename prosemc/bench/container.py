"""`prosemc bench container`: read + verify throughput of a multi-layer `.psem`, and cold `prosemc info` start."""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from typing import Any

from prosemc import format as psem
from prosemc.bench.process import peak_mib, run_module
from prosemc.progress import Progress


READS = 7  # timed full reads
INFO_RUNS = 5  # cold `prosemc info` processes
STEPS = READS + INFO_RUNS  # progress units of `run`


def run(megabytes: int = 10, layers: int = 10, progress: Progress | None = None) -> dict[str, Any]:
    """Write a `megabytes` file of `layers` random layers; time full verified reads from disk and `info`."""
    layer_size = megabytes * 1_000_000 // layers
    header = psem.PsemHeader("bench", (layers, layer_size), {"id": "raw-f32/1", "model_sha256": None},
                             {"id": "none"}, layers=layers)
    data = psem.dumps(header, [os.urandom(layer_size) for _ in range(layers)])
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "big.psem"
        path.write_bytes(data)
        seconds = []
        for _ in range(READS):
            start = time.perf_counter()
            with open(path, "rb") as stream:
                read = sum(len(p) for p in psem.PsemReader(stream).layers())
            seconds.append(time.perf_counter() - start)
            assert read == layer_size * layers
            if progress:
                progress.advance(note="read + verify")
        info_runs = []
        for _ in range(INFO_RUNS):
            info_runs.append(run_module(["prosemc", "info", str(path)]))
            if progress:
                progress.advance(note="cold prosemc info")
    best = min(seconds)
    return {
        "file_bytes": len(data),
        "layers": layers,
        "read_verify_best_s": round(best, 5),
        "read_verify_mb_per_s": round(len(data) / best / 1e6, 1),
        "read_verify_median_mb_per_s": round(len(data) / sorted(seconds)[len(seconds) // 2] / 1e6, 1),
        "info_cold_s_best": round(min(r.seconds for r in info_runs), 3),
        "info_cold_s_median": round(sorted(r.seconds for r in info_runs)[2], 3),
        "info_peak_rss_mib": peak_mib(info_runs),
    }


def markdown(results: dict[str, Any], machine: str) -> str:
    return "\n".join([
        "# `prosemc bench container`",
        "",
        f"Machine: {machine}. File of {results['file_bytes']:,} bytes in {results['layers']} layers, on disk.",
        "",
        "| measure | value |",
        "| --- | --- |",
        f"| read + verify every CRC, best | {results['read_verify_mb_per_s']} MB/s |",
        f"| read + verify every CRC, median | {results['read_verify_median_mb_per_s']} MB/s |",
        f"| cold `prosemc info` on it (the whole 10 MB verified), best / median | "
        f"{results['info_cold_s_best']} s / {results['info_cold_s_median']} s |",
        f"| peak RSS of the `prosemc info` process alone | {results['info_peak_rss_mib']} MiB |",
        "",
    ])
