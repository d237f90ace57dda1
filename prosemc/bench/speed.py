"""`prosemc bench speed`: encode / query latency, cold process start, peak memory and bytes per layer for `lite`.

    per photo (in process, after warm-up):  vision encoder ms, codec encode ms, codec decode ms, layer bytes
    fresh processes:                        `prosemc encode` and `prosemc query` wall time and peak RSS
    query in process:                       first answer (LLM load) vs warm answer
"""

from __future__ import annotations

import io
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from prosemc.bench.process import best_seconds, run_process


def _best_ms(fn: Callable[[], Any], repeats: int) -> tuple[float, Any]:
    seconds, result = best_seconds(fn, repeats)
    return seconds * 1e3, result


def run(photos: dict[str, Any], repeats: int = 5, codec_name: str = "baseline") -> dict[str, Any]:
    """Measure everything on `photos` (name -> RGB PIL image); returns the JSON-able results."""
    from prosemc.codec import make_codec
    from prosemc.models.lite import LiteModel
    from prosemc.pipeline import encode_image, read_tokens

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
                     "layer_bytes": report.layer_bytes, "file_bytes": report.bytes_written})

    with tempfile.TemporaryDirectory() as tmp:
        image_path = Path(tmp) / "photo.png"
        first.save(image_path)
        psem_path = Path(tmp) / "photo.psem"
        prosemc = [sys.executable, "-m", "prosemc"]
        encode_cold = run_process([*prosemc, "encode", str(image_path), "-o", str(psem_path)])
        query_cold = run_process([*prosemc, "query", str(psem_path), "what is shown?"])
        info_cold = run_process([*prosemc, "info", str(psem_path)])
        with open(psem_path, "rb") as f:
            decoded = read_tokens(f)
    start = time.perf_counter()
    model.answer(decoded.edge, "what is shown?")
    query_first_ms = (time.perf_counter() - start) * 1e3
    query_warm_ms, _ = _best_ms(lambda: model.answer(decoded.edge, "what is shown?"), 3)

    layers = max(len(r["layer_bytes"]) for r in rows)
    mean_layer_bytes = [round(statistics.mean(r["layer_bytes"][i] for r in rows), 1) for i in range(layers)]
    return {
        "model": "lite",
        "codec": codec.codec_id,
        "photos": list(photos),
        "repeats": repeats,
        "per_photo": rows,
        "summary": {
            "vision_ms_median": round(statistics.median(r["vision_ms"] for r in rows), 2),
            "codec_encode_ms_median": round(statistics.median(r["codec_encode_ms"] for r in rows), 2),
            "codec_decode_ms_median": round(statistics.median(r["codec_decode_ms"] for r in rows), 2),
            "encode_ms_median": round(statistics.median(r["vision_ms"] + r["codec_encode_ms"] for r in rows), 2),
            "vision_model_load_ms": round(vision_load_ms, 1),
            "header_bytes_mean": round(statistics.mean(r["header_bytes"] for r in rows), 1),
            "layer_bytes_mean": mean_layer_bytes,
            "cumulative_bytes_mean": [round(float(v), 1) for v in np.cumsum(mean_layer_bytes)
                                      + statistics.mean(r["header_bytes"] for r in rows)],
            "encode_process_cold_s": round(encode_cold.seconds, 3),
            "encode_process_peak_rss_mib": round(encode_cold.peak_rss_mib, 1),
            "query_process_cold_s": round(query_cold.seconds, 3),
            "query_process_peak_rss_mib": round(query_cold.peak_rss_mib, 1),
            "info_process_cold_s": round(info_cold.seconds, 3),
            "query_first_in_process_ms": round(query_first_ms, 1),
            "query_warm_ms": round(query_warm_ms, 1),
        },
    }


def markdown(results: dict[str, Any], machine: str) -> str:
    """A Markdown report of `run`'s results."""
    s = results["summary"]
    lines = [
        "# `prosemc bench speed`",
        "",
        f"Model `{results['model']}`, codec `{results['codec']}`, {len(results['photos'])} packaged photos, "
        f"best of {results['repeats']} per step. Machine: {machine}.",
        "",
        "| measure | value |",
        "| --- | --- |",
        f"| encode per image after warm-up (vision + codec), median | {s['encode_ms_median']} ms |",
        f"| vision encoder, median | {s['vision_ms_median']} ms |",
        f"| codec encode, median | {s['codec_encode_ms_median']} ms |",
        f"| codec decode, median | {s['codec_decode_ms_median']} ms |",
        f"| cold `prosemc encode` process (wall) | {s['encode_process_cold_s']} s |",
        f"| peak RSS of `prosemc encode` | {s['encode_process_peak_rss_mib']} MiB |",
        f"| cold `prosemc query` process (wall, LLM from cache) | {s['query_process_cold_s']} s |",
        f"| peak RSS of `prosemc query` | {s['query_process_peak_rss_mib']} MiB |",
        f"| query in process, first call (loads the LLM) | {s['query_first_in_process_ms']} ms |",
        f"| query in process, warm | {s['query_warm_ms']} ms |",
        f"| cold `prosemc info` process | {s['info_process_cold_s']} s |",
        f"| header bytes (mean) | {s['header_bytes_mean']} |",
        f"| layer bytes (mean, in the file) | {', '.join(map(str, s['layer_bytes_mean']))} |",
        f"| cumulative file bytes per level (mean) | {', '.join(map(str, s['cumulative_bytes_mean']))} |",
        "",
        "| photo | vision ms | codec enc ms | codec dec ms | header B | layer B | file B |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    lines += [f"| {r['photo']} | {r['vision_ms']} | {r['codec_encode_ms']} | {r['codec_decode_ms']} | "
              f"{r['header_bytes']} | {', '.join(map(str, r['layer_bytes']))} | {r['file_bytes']} |"
              for r in results["per_photo"]]
    return "\n".join(lines) + "\n"
