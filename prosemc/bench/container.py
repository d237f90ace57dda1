"""`prosemc bench container`: read + verify speed of `.psem` files in both forms, and cold `prosemc info` start.

    big file    10 MB in 10 random layers, full and compact form, read + verified from disk (MB/s)
    small files a lite-sized file (6 layers, ~4.5 KB) per model + codec profile, full and compact, read + verified
                from memory (microseconds per file: where the header, not the payload, is the work)
    info        cold `prosemc info` processes on the big file in both forms

Full and compact are timed in alternating rounds of one run, so that load on a shared machine hits both alike.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

from prosemc import format as psem
from prosemc.bench.process import peak_mib, run_module
from prosemc.profiles import default_store
from prosemc.progress import Progress

READS = 21  # alternating rounds of full reads of the big file in each form
INFO_RUNS = 5  # cold `prosemc info` processes per form
SMALL_ROUNDS, SMALL_READS = 15, 1000  # alternating rounds of 1,000 reads of a small file in each form
LITE_LAYER_PAYLOADS = (324, 616, 824, 888, 876, 844)  # metaae layer sizes of the chelsea photo
SMALL_PROFILES = ("lite-metaae", "lite-baseline")  # no patch; a patch of per-image params
STEPS = READS + 2 * INFO_RUNS + len(SMALL_PROFILES)  # progress units of `run`


def _alternating_rounds(timed: dict[str, Callable[[], Any]], rounds: int,
                        progress: Progress | None = None, note: str = "") -> dict[str, list[float]]:
    """Seconds of each callable in every round; the callables take turns within a round."""
    seconds: dict[str, list[float]] = {name: [] for name in timed}
    for _ in range(rounds):
        for name, fn in timed.items():
            start = time.perf_counter()
            fn()
            seconds[name].append(time.perf_counter() - start)
        if progress and note:
            progress.advance(note=note)
    return seconds


def _read_all(data: bytes | Path, store: psem.ProfileStore) -> int:
    if isinstance(data, Path):
        with open(data, "rb") as stream:
            return sum(len(p) for p in psem.PsemReader(stream, profiles=store).layers())
    return sum(len(p) for p in psem.PsemReader(data, profiles=store).layers())


def _per_image_params(profile_name: str) -> dict[str, Any]:
    """What a real file of this profile adds per image (the baseline's steps and clip range)."""
    if profile_name == "lite-baseline":
        return {"clip": [0.0, 6.0], "steps": [5.24, 2.62, 1.31, 0.655, 0.3275]}
    return {}


def small_files(progress: Progress | None = None) -> list[dict[str, Any]]:
    """Per built-in profile: full and compact bytes and best microseconds per read + verify of a lite-sized file."""
    store = default_store()
    payloads = [os.urandom(n) for n in LITE_LAYER_PAYLOADS]
    rows = []
    for name in SMALL_PROFILES:
        profile = store.find(name)
        assert profile is not None
        header = psem.PsemHeader(profile.header.encoder, profile.header.token_shape,
                                 {**profile.header.codec, "params": {**profile.header.codec_params,
                                                                     **_per_image_params(name)}},
                                 profile.header.entropy, profile.header.layers)
        layers = payloads[: header.layers]
        files = {"full": psem.dumps(header, layers), "compact": psem.dumps(header, layers, profile=profile.header)}
        for data in files.values():  # warm up: the first reads pay for lazy imports and the store's files
            _read_all(data, store)
        seconds = _alternating_rounds({form: lambda data=data: [_read_all(data, store) for _ in range(SMALL_READS)]
                                       for form, data in files.items()}, SMALL_ROUNDS)
        rows.append({"profile_name": name, "layer_count": len(layers), "full_bytes": len(files["full"]),
                     "compact_bytes": len(files["compact"]),
                     **{f"{form}_us": round(min(s) / SMALL_READS * 1e6, 2) for form, s in seconds.items()}})
        if progress:
            progress.advance(note=f"small files: {name}")
    return rows


def run(megabytes: int = 10, layers: int = 10, progress: Progress | None = None) -> dict[str, Any]:
    """Write a `megabytes` file of `layers` random layers in both forms; time verified reads from disk and `info`."""
    layer_size = megabytes * 1_000_000 // layers
    header = psem.PsemHeader("bench", (layers, layer_size), {"id": "raw-f32/1", "model_sha256": None},
                             {"id": "none"}, layers=layers)
    payloads = [os.urandom(layer_size) for _ in range(layers)]
    files = {"full": psem.dumps(header, payloads), "compact": psem.dumps(header, payloads, profile=header)}
    size = {form: len(data) for form, data in files.items()}
    store = default_store(psem.Profile.of(header))
    with tempfile.TemporaryDirectory() as tmp:
        paths = {form: Path(tmp) / f"big-{form}.psem" for form in files}
        for form, path in paths.items():
            path.write_bytes(files[form])
        seconds = _alternating_rounds({form: lambda p=path: _read_all(p, store) for form, path in paths.items()},
                                      READS, progress, "read + verify, both forms")
        profile_dir = Path(tmp) / "profiles"
        profile_dir.mkdir()
        (profile_dir / "bench.json").write_bytes(header.to_json_bytes())
        env = {**os.environ, "PROSEMC_PROFILES": str(profile_dir)}
        info_runs: dict[str, list] = {form: [] for form in paths}
        for _ in range(INFO_RUNS):  # alternating, as the reads
            for form, path in paths.items():
                info_runs[form].append(run_module(["prosemc", "info", str(path)], env=env))
                if progress:
                    progress.advance(note=f"cold prosemc info, {form}")
    assert all(r.returncode == 0 for runs in info_runs.values() for r in runs)
    results: dict[str, Any] = {"file_bytes": size["full"], "compact_file_bytes": size["compact"], "layer_count": layers,
                               "rounds": READS}
    for form, prefix in (("full", ""), ("compact", "compact_")):
        ordered = sorted(seconds[form])
        runs = sorted(r.seconds for r in info_runs[form])
        results.update({
            f"{prefix}read_verify_best_s": round(ordered[0], 5),
            f"{prefix}read_verify_mb_per_s": round(size[form] / ordered[0] / 1e6, 1),
            f"{prefix}read_verify_median_mb_per_s": round(size[form] / ordered[len(ordered) // 2] / 1e6, 1),
            f"{prefix}info_cold_s_best": round(runs[0], 3),
            f"{prefix}info_cold_s_median": round(runs[len(runs) // 2], 3),
            f"{prefix}info_peak_rss_mib": peak_mib(info_runs[form]),
        })
    results["small_files"] = small_files(progress)
    return results


def markdown(results: dict[str, Any], machine: str) -> str:
    r = results
    lines = [
        "# `prosemc bench container`",
        "",
        f"Machine: {machine}; one thread. A file of {r['file_bytes']:,} bytes in {r['layer_count']} random layers, on "
        f"disk, in the full form and in the compact form ({r['compact_file_bytes']:,} bytes), timed in "
        f"{r['rounds']} alternating rounds of one run (best and median).",
        "",
        "| measure | full | compact |",
        "| --- | --- | --- |",
        f"| read + verify every CRC, best | {r['read_verify_mb_per_s']} MB/s | {r['compact_read_verify_mb_per_s']} MB/s |",
        f"| read + verify every CRC, median | {r['read_verify_median_mb_per_s']} MB/s | "
        f"{r['compact_read_verify_median_mb_per_s']} MB/s |",
        f"| cold `prosemc info` on it (every CRC verified), best / median | {r['info_cold_s_best']} s / "
        f"{r['info_cold_s_median']} s | {r['compact_info_cold_s_best']} s / {r['compact_info_cold_s_median']} s |",
        f"| peak RSS of the `prosemc info` process alone | {r['info_peak_rss_mib']} MiB | "
        f"{r['compact_info_peak_rss_mib']} MiB |",
        "",
        "Small files: a lite-sized file (the chelsea photo's metaae layer sizes, random bytes) read + verified from "
        f"memory, best per-file time over {SMALL_ROUNDS} alternating rounds of {SMALL_READS:,} reads. `lite-metaae` "
        "files equal their profile (no patch); `lite-baseline` files carry their per-image steps and clip range in a "
        "patch.",
        "",
        "| profile | layers | full bytes | compact bytes | full µs / file | compact µs / file |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    lines += [f"| {s['profile_name']} | {s['layer_count']} | {s['full_bytes']} | {s['compact_bytes']} | {s['full_us']} | "
              f"{s['compact_us']} |" for s in r["small_files"]]
    return "\n".join(lines) + "\n"
