"""`prosemc bench speed`: encode / query latency, cold process start, peak memory and bytes per layer for `lite`.

    per photo (in process, after warm-up):  vision encoder ms, codec encode ms, codec decode ms, layer bytes
    fresh processes:                        `prosemc encode`, `query`, `info` wall time and peak RSS (child alone)
    batch:                                  N images in one `prosemc encode IMG... --out-dir` process against N
                                            single-image processes (half before it, half after), same bytes
    query in process:                       first answer (LLM load) vs warm answer
    threads (in process, under load):       encode and warm answer at 1, 2 and the default thread count,
                                            interleaved round by round while a busy process holds one core
"""

from __future__ import annotations

import io
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from prosemc.bench.process import best_seconds, peak_mib, run_module
from prosemc.progress import Progress
from prosemc.runtime import default_threads, limit_threads, resolve_threads
from prosemc.text import plural

QUESTION = "what is shown?"
LOAD_LIMIT_S = 1800  # the CPU load process ends by itself after this, should the benchmark die without killing it


def _best_ms(fn: Callable[[], Any], repeats: int) -> tuple[float, Any]:
    seconds, result = best_seconds(fn, repeats)
    return seconds * 1e3, result


def thread_counts() -> list[int]:
    """The thread counts compared: 1, 2 and the default for this machine (each once)."""
    return sorted({1, 2, default_threads()})


def steps(photos: dict[str, Any], rounds: int, batch: int) -> int:
    """Progress units of `run`: one per photo, per cold process, per thread count and round, and per process of
    the batch comparison."""
    return len(photos) + 3 + rounds * len(thread_counts()) + (batch + 1 if batch else 0)


def run(photos: dict[str, Any], repeats: int = 5, codec_name: str = "baseline", rounds: int = 3, batch: int = 50,
        progress: Progress | None = None) -> dict[str, Any]:
    """Measure everything on `photos` (name -> RGB PIL image); returns the JSON-able results (batch=0: no batch
    comparison)."""
    from prosemc.codec import make_codec
    from prosemc.models.lite import LiteModel
    from prosemc.pipeline import encode_image, read_tokens
    from prosemc.report import codec_object, layers_list

    load_at_start = _load_average()
    model, codec = LiteModel(), make_codec(codec_name)
    first = next(iter(photos.values()))
    start = time.perf_counter()
    model.encode_image(first)
    vision_load_ms = (time.perf_counter() - start) * 1e3
    rows = []
    for name, image in photos.items():
        vision_ms, edge = _best_ms(lambda: model.encode_image(image), repeats)
        codec_ms, encoded = _best_ms(lambda: codec.encode(edge.tokens), repeats)
        decode_ms, _ = _best_ms(lambda: codec.decode(encoded.params, encoded.layers, edge.tokens.shape), repeats)
        sink = io.BytesIO()
        report = encode_image(image, sink, model, codec_name=codec_name)
        rows.append({"photo": name, "vision_ms": round(vision_ms, 2), "codec_encode_ms": round(codec_ms, 2),
                     "codec_decode_ms": round(decode_ms, 2), "header_bytes": report.header_bytes,
                     "layers": layers_list(report.layer_bytes, report.header_bytes), "bytes": report.bytes_written})
        if progress:
            progress.advance(note=name)

    with tempfile.TemporaryDirectory() as tmp:
        image_path = Path(tmp) / "photo.png"
        first.save(image_path)
        psem_path = Path(tmp) / "photo.psem"
        cold = {}
        for name, args in (("encode", ["encode", str(image_path), "-o", str(psem_path)]),
                           ("query", ["query", str(psem_path), QUESTION]), ("info", ["info", str(psem_path)])):
            cold[name] = run_module(["prosemc", *args])
            if cold[name].returncode != 0:
                raise RuntimeError(f"`prosemc {name}` failed with exit code {cold[name].returncode}; run it by hand")
            if progress:
                progress.advance(note=f"cold prosemc {name}")
        with open(psem_path, "rb") as f:
            decoded = read_tokens(f)
        batched = compare_batch(photos, batch, codec_name, Path(tmp), progress) if batch else None
    start = time.perf_counter()
    model.answer(decoded.edge, QUESTION)
    query_first_ms = (time.perf_counter() - start) * 1e3
    query_warm_ms, _ = _best_ms(lambda: model.answer(decoded.edge, QUESTION), 3)
    threads = compare_threads(model, first, decoded.edge, codec_name, rounds, progress)

    layers = max(len(r["layers"]) for r in rows)
    mean_layer_bytes = [round(statistics.mean(r["layers"][i]["bytes"] for r in rows), 1) for i in range(layers)]
    header_bytes_mean = round(statistics.mean(r["header_bytes"] for r in rows), 1)
    return {
        "model": "lite",
        "codec": codec_object(decoded.header.codec, decoded.header.entropy),
        "photos": list(photos),
        "repeats": repeats,
        "per_photo": rows,
        "summary": {
            "vision_ms_median": round(statistics.median(r["vision_ms"] for r in rows), 2),
            "codec_encode_ms_median": round(statistics.median(r["codec_encode_ms"] for r in rows), 2),
            "codec_decode_ms_median": round(statistics.median(r["codec_decode_ms"] for r in rows), 2),
            "encode_ms_median": round(statistics.median(r["vision_ms"] + r["codec_encode_ms"] for r in rows), 2),
            "vision_model_load_ms": round(vision_load_ms, 1),
            "header_bytes_mean": header_bytes_mean,
            "layers_mean": [{"index": k + 1, "bytes": size, "cumulative_bytes": round(float(end), 1)} for k, (size, end)
                            in enumerate(zip(mean_layer_bytes, np.cumsum(mean_layer_bytes) + header_bytes_mean))],
            "encode_process_cold_s": round(cold["encode"].seconds, 3),
            "encode_process_peak_rss_mib": peak_mib([cold["encode"]]),
            "query_process_cold_s": round(cold["query"].seconds, 3),
            "query_process_peak_rss_mib": peak_mib([cold["query"]]),
            "info_process_cold_s": round(cold["info"].seconds, 3),
            "info_process_peak_rss_mib": peak_mib([cold["info"]]),
            "query_first_in_process_ms": round(query_first_ms, 1),
            "query_warm_ms": round(query_warm_ms, 1),
        },
        "threads": threads,
        "batch": batched,
        "load_average": {"start": load_at_start, "end": _load_average()},
    }


def _load_average() -> float | None:
    """The machine's 1-minute load average (None where the OS has none): how shared the run was."""
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        return None


def compare_batch(photos: dict[str, Any], count: int, codec_name: str, folder: Path,
                  progress: Progress | None = None) -> dict[str, Any]:
    """`count` images (the photos, cycled) encoded by one `prosemc encode IMG... --out-dir` process against one
    `prosemc encode IMG -o` process each; half of those run before the batch and half after, so both see the same
    moments of other load. The outputs must be the same bytes."""
    images = []
    for index in range(count):
        name, image = list(photos.items())[index % len(photos)]
        path = folder / f"batch-{index:03d}-{name.replace(':', '-')}.png"
        image.save(path)
        images.append(path)
    singles, batch_dir = folder / "single", folder / "batch"
    singles.mkdir()
    codec = ["--codec", codec_name]

    def single(paths: list[Path]) -> list[Any]:
        runs = []
        for path in paths:
            runs.append(run_module(["prosemc", "encode", str(path), "-o", str(singles / f"{path.stem}.psem"), *codec]))
            if progress:
                progress.advance(note=plural(len(runs), "single-image process"))
        return runs

    half = count // 2
    runs = single(images[:half])
    batched = run_module(["prosemc", "encode", *map(str, images), "--out-dir", str(batch_dir), *codec])
    if progress:
        progress.advance(note=f"one process, {count} images")
    runs += single(images[half:])
    failed = [r.returncode for r in [*runs, batched] if r.returncode != 0]
    if failed:
        raise RuntimeError(f"`prosemc encode` failed with exit code {failed[0]} in the batch comparison; run it by hand")
    same = all((singles / f"{p.stem}.psem").read_bytes() == (batch_dir / f"{p.stem}.psem").read_bytes() for p in images)
    single_s = sum(r.seconds for r in runs)
    return {"images": count, "single_processes_s": round(single_s, 2), "one_process_s": round(batched.seconds, 2),
            "speedup": round(single_s / batched.seconds, 2), "target_speedup": 4.0,
            "single_process_median_s": round(statistics.median(r.seconds for r in runs), 3),
            "one_process_peak_rss_mib": peak_mib([batched]), "single_process_peak_rss_mib": peak_mib(runs),
            "same_bytes": same}


def cpu_load() -> subprocess.Popen:
    """Another process that keeps one core busy (ends by itself after LOAD_LIMIT_S); the caller kills it."""
    spin = f"import time\nend = time.monotonic() + {LOAD_LIMIT_S}\nwhile time.monotonic() < end:\n    pass\n"
    return subprocess.Popen([sys.executable, "-c", spin], stdin=subprocess.DEVNULL)


def compare_threads(model: Any, image: Any, edge: Any, codec_name: str, rounds: int,
                    progress: Progress | None = None) -> dict[str, Any]:
    """Encode (vision + codec) and a warm answer at each thread count, interleaved per round, under CPU load.

    Interleaving puts every count through the same moments of other load on a shared machine; the median
    over rounds is the figure of merit (the best round is reported too).
    """
    from prosemc.pipeline import encode_image

    counts, default, chosen = thread_counts(), default_threads(), resolve_threads()
    times: dict[int, dict[str, list[float]]] = {n: {"encode": [], "answer": []} for n in counts}
    load = cpu_load()
    try:
        for _ in range(rounds):
            for n in counts:
                limit_threads(n)
                start = time.perf_counter()
                encode_image(image, io.BytesIO(), model, codec_name=codec_name)
                times[n]["encode"].append(time.perf_counter() - start)
                start = time.perf_counter()
                model.answer(edge, QUESTION)
                times[n]["answer"].append(time.perf_counter() - start)
                if progress:
                    progress.advance(note=f"{n} thread{'s' if n > 1 else ''} under load")
    finally:
        load.kill()
        load.wait()
        limit_threads(chosen)
    rows = [{"threads": n, "default": n == default,
             **{f"{step}_ms_median": round(statistics.median(times[n][step]) * 1e3, 1) for step in ("encode", "answer")},
             **{f"{step}_ms_best": round(min(times[n][step]) * 1e3, 1) for step in ("encode", "answer")}}
            for n in counts]
    verdict = {}
    for step in ("encode", "answer"):
        best = min(row[f"{step}_ms_median"] for row in rows)
        mine = next(row[f"{step}_ms_median"] for row in rows if row["default"])
        verdict[f"default_{step}_vs_best"] = round(mine / best, 3)
    return {"load": "one other process spinning on one core", "rounds": rounds, "default_threads": default,
            "rows": rows, **verdict}


def markdown(results: dict[str, Any], machine: str) -> str:
    """A Markdown report of `run`'s results."""
    s = results["summary"]
    lines = [
        "# `prosemc bench speed`",
        "",
        f"Model `{results['model']}`, codec `{results['codec']['id']}`, {len(results['photos'])} packaged photos, "
        f"best of {results['repeats']} per step. Machine: {machine}; 1-minute load average "
        f"{results['load_average']['start']} at the start, {results['load_average']['end']} at the end.",
        "",
        "| measure | value |",
        "| --- | --- |",
        f"| encode per image after warm-up (vision + codec), median | {s['encode_ms_median']} ms |",
        f"| vision encoder, median | {s['vision_ms_median']} ms |",
        f"| codec encode, median | {s['codec_encode_ms_median']} ms |",
        f"| codec decode, median | {s['codec_decode_ms_median']} ms |",
        f"| cold `prosemc encode` process (wall) | {s['encode_process_cold_s']} s |",
        f"| peak RSS of the `prosemc encode` process alone | {s['encode_process_peak_rss_mib']} MiB |",
        f"| cold `prosemc query` process (wall, LLM from cache) | {s['query_process_cold_s']} s |",
        f"| peak RSS of the `prosemc query` process alone | {s['query_process_peak_rss_mib']} MiB |",
        f"| query in process, first call (loads the LLM) | {s['query_first_in_process_ms']} ms |",
        f"| query in process, warm | {s['query_warm_ms']} ms |",
        f"| cold `prosemc info` process | {s['info_process_cold_s']} s |",
        f"| peak RSS of the `prosemc info` process alone | {s['info_process_peak_rss_mib']} MiB |",
        f"| header bytes (mean) | {s['header_bytes_mean']} |",
        f"| layer bytes (mean, in the file) | {', '.join(str(layer['bytes']) for layer in s['layers_mean'])} |",
        f"| cumulative file bytes per level (mean) | "
        f"{', '.join(str(layer['cumulative_bytes']) for layer in s['layers_mean'])} |",
        "",
        "| photo | vision ms | codec enc ms | codec dec ms | header B | layer B | file B |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    lines += [f"| {r['photo']} | {r['vision_ms']} | {r['codec_encode_ms']} | {r['codec_decode_ms']} | "
              f"{r['header_bytes']} | {', '.join(str(layer['bytes']) for layer in r['layers'])} | {r['bytes']} |"
              for r in results["per_photo"]]
    t = results["threads"]
    lines += [
        "",
        f"## Threads, under load ({t['load']}; {t['rounds']} interleaved rounds)",
        "",
        f"Default on this machine: {plural(t['default_threads'], 'thread')}. Default vs best median: encode "
        f"{t['default_encode_vs_best']}x, warm answer {t['default_answer_vs_best']}x (target: within 1.10x).",
        "",
        "| threads | encode ms (median / best) | warm answer ms (median / best) |",
        "| --- | --- | --- |",
    ]
    lines += [f"| {r['threads']}{' (default)' if r['default'] else ''} | {r['encode_ms_median']} / {r['encode_ms_best']} | "
              f"{r['answer_ms_median']} / {r['answer_ms_best']} |" for r in t["rows"]]
    b = results["batch"]
    if b:
        lines += [
            "",
            f"## {b['images']} images: one `prosemc encode IMG... --out-dir` process against one process per image",
            "",
            f"The photos above, cycled, as PNG files; the single-image processes ran half before and half after the "
            f"batch process. Same output bytes: {'yes' if b['same_bytes'] else 'NO'}.",
            "",
            "| measure | value |",
            "| --- | --- |",
            f"| {b['images']} single-image processes, total wall | {b['single_processes_s']} s |",
            f"| one single-image process, median | {b['single_process_median_s']} s |",
            f"| one process for all {b['images']} images, wall | {b['one_process_s']} s |",
            f"| speed-up of the one process | {b['speedup']}x (target: at least {b['target_speedup']:g}x) |",
            f"| peak RSS: one batch process / a single-image process | {b['one_process_peak_rss_mib']} MiB / "
            f"{b['single_process_peak_rss_mib']} MiB |",
        ]
    return "\n".join(lines) + "\n"
