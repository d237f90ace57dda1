"""`prosemc bench export`: the lite edge bundle against the torch model, on the held-out photos of `bench rd`.

    parity   fp32 and int8 bundle tokens vs torch fp32 tokens (board numerics: session.x64quantprecision=1);
             int8 choices side by side: per-tensor vs per-channel weights, bias correction none / one-pass /
             sequential, calibration method and set size, and the x86 default kernels without the option
    labels   the lite head's top-1 on the tokens, and on the decoded .psem at every level (bundle vs torch path)
    speed    vision encoder: torch fp32, onnxruntime fp32 and int8 at 1 and 2 threads, best of N, one run
    process  cold `encode --bundle` vs cold torch `encode`, wall and peak RSS of the child alone
    coder    the portable ANS coder (and constriction beside it) on every lite layer of every photo
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from prosemc.bench.process import best_seconds, peak_mib, run_module

THREADS = (1, 2)
SEQUENTIAL_IMAGES = 12  # sequential bias correction runs the whole graph per conv and image: a subset


def _ms(seconds: float) -> float:
    return round(seconds * 1e3, 2)


def _variants(graph: Any, calibration: list[np.ndarray], shipped: Any) -> list[tuple[str, Any]]:
    """(description, int8 graph) for the quantisation choices measured beside the shipped one."""
    from dataclasses import replace

    from prosemc.export.quantise import corrected_biases, quantise, quantise_static, with_initializers

    plain = replace(shipped, bias_correction="none")
    out = [
        ("per-tensor weights, no bias correction", quantise(graph, calibration, replace(plain, per_channel=False))),
        ("per-channel weights, no bias correction", quantise(graph, calibration, plain)),
        ("per-channel, one-pass bias correction (shipped)", quantise(graph, calibration, shipped)),
    ]
    draft = quantise_static(graph, calibration, shipped, quantise_bias=False)
    biases = corrected_biases(graph, draft, calibration[:SEQUENTIAL_IMAGES], sequential=True)
    out.append((f"per-channel, sequential bias correction ({SEQUENTIAL_IMAGES} photos)",
                quantise_static(with_initializers(graph, biases), calibration, shipped)))
    out.append(("shipped, percentile calibration", quantise(graph, calibration, replace(shipped, calibration="percentile"))))
    for size in (4, 12):
        out.append((f"shipped, {size} calibration photos", quantise(graph, calibration[:size], shipped)))
    return out


def _cosines(tokens: list[np.ndarray], reference: list[np.ndarray]) -> tuple[float, float]:
    from prosemc.export.parity import cosine

    values = [cosine(a, b) for a, b in zip(tokens, reference)]
    return round(float(np.mean(values)), 4), round(float(np.min(values)), 4)


def _level_labels(tokens: np.ndarray, codec: Any, top1: Callable[[np.ndarray], int]) -> list[int]:
    """Top-1 class of the tokens decoded from the first k layers of their .psem encoding, k = 1..all."""
    encoded = codec.encode(tokens)
    return [top1(codec.decode(encoded.params, encoded.layers[:k], tokens.shape)) for k in range(1, len(encoded.layers) + 1)]


def run(photos: dict[str, Any], calibration: str = "builtin", repeats: int = 5,
        progress: Callable[[str], None] = lambda _: None) -> dict[str, Any]:
    """Export the lite bundles, measure everything; returns the JSON-able results."""
    import onnx
    import torch

    from prosemc.codec import make_codec
    from prosemc.export.build import export_bundle, image_set
    from prosemc.export.bundle import inference_session
    from prosemc.export.parity import lite_top1, parity
    from prosemc.export.sources import edge_source
    from prosemc.export.targets import load_target

    work = Path(tempfile.mkdtemp(prefix="prosemc-bench-export-"))
    progress("exporting the int8 and fp32 bundles")
    start = time.perf_counter()
    export_bundle(work / "int8", target="imx95", calibration=calibration)
    export_seconds = time.perf_counter() - start
    export_bundle(work / "fp32", target="cpu")
    source = edge_source("lite")
    pixels = [source.recipe.pixels(image) for image in photos.values()]
    reference = [source.tokens(p) for p in pixels]
    top1 = lite_top1()

    def tokens_of(graph_bytes: bytes) -> list[np.ndarray]:
        session = inference_session(graph_bytes)
        return [session.run(["tokens"], {"pixels": p})[0] for p in pixels]

    int8_bytes = (work / "int8" / "encoder.onnx").read_bytes()
    fp32_bytes = (work / "fp32" / "encoder.onnx").read_bytes()
    int8_tokens, fp32_tokens = tokens_of(int8_bytes), tokens_of(fp32_bytes)
    progress("quantisation choices")
    calibration_pixels = [source.recipe.pixels(load()) for load in image_set(calibration, "train", "calibration").loaders]
    shipped = load_target("imx95").quantisation
    choices = []
    for name, graph in _variants(onnx.load_from_string(fp32_bytes), calibration_pixels, shipped):
        mean, low = _cosines(tokens_of(graph.SerializeToString()), reference)
        choices.append({"choice": name, "token_cosine_mean": mean, "token_cosine_min": low})
    import onnxruntime

    plain = onnxruntime.InferenceSession(int8_bytes, providers=["CPUExecutionProvider"])  # x86 default kernels
    x86_mean, x86_min = _cosines([plain.run(["tokens"], {"pixels": p})[0] for p in pixels], reference)
    choices.append({"choice": "shipped, x86 default int8 kernels (no x64quantprecision)",
                    "token_cosine_mean": x86_mean, "token_cosine_min": x86_min})

    progress("labels at every level")
    codec = make_codec("metaae")
    level_rows = []
    for name, ours, theirs in zip(photos, int8_tokens, reference):
        bundle_levels, torch_levels = _level_labels(ours, codec, top1), _level_labels(theirs, codec, top1)
        level_rows.append({"photo": name, "levels_same": sum(a == b for a, b in zip(bundle_levels, torch_levels)),
                           "levels": len(torch_levels)})
    all_levels_same = float(np.mean([r["levels_same"] == r["levels"] for r in level_rows]))

    progress("vision encoder speed")
    speed = _speed(source, pixels[:3], int8_bytes, fp32_bytes, repeats)
    progress("cold processes")
    processes = _processes(work / "int8", photos)
    progress("portable coder")
    coder = _coder(reference)
    return {
        "photos": list(photos),
        "calibration": calibration,
        "export_int8_seconds": round(export_seconds, 1),
        "int8": {**parity(int8_tokens, reference, top1), "all_levels_same_label": round(all_levels_same, 4),
                 "file_bytes": len(int8_bytes), "per_photo_levels": level_rows},
        "fp32": {**parity(fp32_tokens, reference, top1), "file_bytes": len(fp32_bytes)},
        "choices": choices,
        "speed_ms": speed,
        "processes": processes,
        "coder": coder,
        "torch_version": torch.__version__,
        "onnxruntime_version": onnxruntime.__version__,
    }


def _speed(source: Any, pixels: list[np.ndarray], int8: bytes, fp32: bytes, repeats: int) -> list[dict[str, Any]]:
    """Best-of-N milliseconds per image of each runtime at each thread count (median over the photos)."""
    import torch

    from prosemc.export.bundle import inference_session

    rows = []
    previous = torch.get_num_threads()
    for threads in THREADS:
        torch.set_num_threads(threads)
        sessions = {"onnxruntime fp32": inference_session(fp32, threads), "onnxruntime int8": inference_session(int8, threads)}
        row: dict[str, Any] = {"threads": threads}
        for name, call in [("torch fp32", lambda p: source.tokens(p)),
                           *[(n, lambda p, s=s: s.run(["tokens"], {"pixels": p})) for n, s in sessions.items()]]:
            call(pixels[0])  # warm-up
            row[name] = _ms(statistics.median(best_seconds(lambda p=p: call(p), repeats)[0] for p in pixels))
        row["onnxruntime fp32 speed-up"] = round(row["torch fp32"] / row["onnxruntime fp32"], 2)
        rows.append(row)
    torch.set_num_threads(previous)
    return rows


def _processes(bundle: Path, photos: dict[str, Any], rounds: int = 3) -> dict[str, Any]:
    """Cold `prosemc encode` processes, bundle and torch at 1 thread, alternating: best and median wall, peak RSS.

    The peak is the child's own (prosemc.bench.peak reads its VmHWM), not inherited from this process.
    """
    import os

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    with tempfile.TemporaryDirectory() as tmp:
        image = Path(tmp) / "photo.png"
        next(iter(photos.values())).save(image)
        commands = {
            "edge encode --bundle (onnxruntime int8)": ["prosemc", "encode", "--bundle", str(bundle), str(image),
                                                        "-o", f"{tmp}/a.psem", "--threads", "1"],
            "torch encode": ["prosemc", "encode", str(image), "-o", f"{tmp}/b.psem", "--threads", "1"],
        }
        runs: dict[str, list[Any]] = {name: [] for name in commands}
        for _ in range(rounds):
            for name, command in commands.items():
                runs[name].append(run_module(command, env=env))
    return {name: {"best_s": round(min(r.seconds for r in found), 3),
                   "median_s": round(statistics.median(r.seconds for r in found), 3),
                   "peak_rss_mib": peak_mib(found),
                   "exit_codes": sorted({r.returncode for r in found})} for name, found in runs.items()}


def _coder(token_sets: list[np.ndarray], repeats: int = 3) -> dict[str, Any]:
    """Encode and decode milliseconds of all metaae layers per photo, portable coder and constriction."""
    from prosemc.codec import make_codec
    from prosemc.codec.ans_portable import PortableAnsCoder

    result: dict[str, Any] = {}
    for name in ("portable", "constriction"):
        codec = make_codec("metaae")
        if name == "portable":
            codec.coder = PortableAnsCoder()
        groups: list[list[Any]] = []
        encode = codec.coder.encode
        codec.coder.encode = lambda g, encode=encode: (groups.append(list(g)), encode(g))[1]  # type: ignore[method-assign]
        encodes, decodes, symbols = [], [], []
        for tokens in token_sets:
            groups.clear()
            encoded = codec.encode(tokens)
            layers = [list(g) for g in groups]
            symbols.append(sum(int(s.size) for g in layers for s, t in g if t.alphabet_size > 1))
            encodes.append(best_seconds(lambda: [encode(g) for g in layers], repeats)[0])

            def decode_all(encoded: Any = encoded, layers: list[Any] = layers) -> None:
                for payload, layer in zip(encoded.layers, layers):
                    reader = codec.coder.reader(payload)
                    for symbols_, table in layer:
                        reader.read(table, symbols_.size)
                    reader.finish()

            decodes.append(best_seconds(decode_all, repeats)[0])
        result[name] = {"encode_all_layers_ms_median": _ms(statistics.median(encodes)),
                        "encode_all_layers_ms_max": _ms(max(encodes)),
                        "decode_all_layers_ms_median": _ms(statistics.median(decodes)),
                        "decode_all_layers_ms_max": _ms(max(decodes)),
                        "symbols_median": int(statistics.median(symbols)),
                        "encode_us_per_symbol": round(1e6 * sum(encodes) / sum(symbols), 3)}
    return result


def plot(results: dict[str, Any], path: Path) -> None:
    """Token cosine of each int8 choice, and vision encoder milliseconds per runtime and thread count."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (left, right) = plt.subplots(1, 2, figsize=(15, 4.8), gridspec_kw={"width_ratios": [3, 2]})
    choices = results["choices"]
    rows = np.arange(len(choices))
    left.barh(rows - 0.2, [c["token_cosine_mean"] for c in choices], 0.4, label="mean")
    left.barh(rows + 0.2, [c["token_cosine_min"] for c in choices], 0.4, label="min")
    left.set_yticks(rows, [c["choice"] for c in choices], fontsize=8)
    left.invert_yaxis()
    left.set_xlim(min(0.7, min(c["token_cosine_min"] for c in choices) - 0.02), 1.0)
    for target in (0.975, 0.99):
        left.axvline(target, color="grey", lw=0.7, ls=":")
    left.set_xlabel("token cosine vs torch fp32 (held-out photos)")
    left.legend(fontsize=8)
    runtimes = ["torch fp32", "onnxruntime fp32", "onnxruntime int8"]
    width = 0.8 / len(results["speed_ms"])
    for index, row in enumerate(results["speed_ms"]):
        right.bar(np.arange(len(runtimes)) + index * width, [row[r] for r in runtimes], width,
                  label=f"{row['threads']} thread{'s' if row['threads'] > 1 else ''}")
    right.set_xticks(np.arange(len(runtimes)) + width / 2, runtimes)
    right.set_ylabel("ms per 224 px image (best of N)")
    right.legend(fontsize=8)
    figure.suptitle("lite edge bundle: int8 parity choices and vision encoder speed (x86, shared 2-core machine)")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def markdown(results: dict[str, Any], machine: str, plot_name: str, aarch64: dict[str, Any] | None) -> str:
    """The Markdown report of `run`'s results (and of `make test-aarch64`'s, when present)."""
    i8, f32, proc, coder = results["int8"], results["fp32"], results["processes"], results["coder"]
    edge, torch_path = proc["edge encode --bundle (onnxruntime int8)"], proc["torch encode"]
    lines = [
        "# `prosemc bench export` — the lite edge bundle",
        "",
        f"{len(results['photos'])} held-out photos of `bench rd` ({', '.join(results['photos'])}); int8 calibrated on "
        f"the {results['calibration']} training photos. Reference: torch fp32 tokens. int8 runs with "
        "`session.x64quantprecision=1` (the board's arithmetic). Machine: "
        f"{machine}, shared with other jobs (load varies: compare numbers within this run only); torch "
        f"{results['torch_version']}, onnxruntime {results['onnxruntime_version']}.",
        "",
        f"![choices and speed]({plot_name})",
        "",
        "## Targets",
        "",
        "| target | measured | met |",
        "| --- | --- | --- |",
        f"| int8 mean token cosine ≥ 0.99 | {i8['token_cosine_mean']} | {_yes(i8['token_cosine_mean'] >= 0.99)} |",
        f"| int8 minimum token cosine ≥ 0.975 | {i8['token_cosine_min']} | {_yes(i8['token_cosine_min'] >= 0.975)} |",
        f"| int8 top-1 agreement of the lite head ≥ 0.97 | {i8['top1_agreement']} | {_yes(i8['top1_agreement'] >= 0.97)} |",
        f"| decoded .psem top-1 = torch path's at every level, ≥ 95 % of photos | {i8['all_levels_same_label']:.0%} | "
        f"{_yes(i8['all_levels_same_label'] >= 0.95)} |",
        f"| int8 file ≤ 4 MB | {i8['file_bytes']:,} B | {_yes(i8['file_bytes'] <= 4_000_000)} |",
        f"| fp32 max abs difference ≤ 1e-4 | {f32['max_abs_diff']:.2e} | {_yes(f32['max_abs_diff'] <= 1e-4)} |",
        f"| fp32 top-1 all kept | {f32['top1_agreement']} | {_yes(f32['top1_agreement'] == 1.0)} |",
    ]
    for row in results["speed_ms"]:
        lines.append(f"| onnxruntime fp32 ≥ 3x torch fp32, {row['threads']} thread(s) | {row['onnxruntime fp32 speed-up']}x "
                     f"({row['onnxruntime fp32']} vs {row['torch fp32']} ms) | {_yes(row['onnxruntime fp32 speed-up'] >= 3)} |")
    lines += [
        f"| cold edge `encode --bundle` ≤ 0.7 s | {edge['best_s']} s best, {edge['median_s']} s median "
        f"(torch path {torch_path['best_s']} s / {torch_path['median_s']} s) | {_yes(edge['best_s'] <= 0.7)} |",
        f"| edge `encode` peak RSS ≤ 150 MiB (child alone) | {edge['peak_rss_mib']} MiB (torch path "
        f"{torch_path['peak_rss_mib']} MiB) | {_yes(edge['peak_rss_mib'] <= 150)} |",
        f"| portable coder, all lite layers ≤ 20 ms | encode {coder['portable']['encode_all_layers_ms_median']} ms median "
        f"(max {coder['portable']['encode_all_layers_ms_max']}), decode {coder['portable']['decode_all_layers_ms_median']} ms | "
        f"{_yes(coder['portable']['encode_all_layers_ms_median'] <= 20)} |",
    ]
    if aarch64:
        board = aarch64["int8_parity_aarch64"]
        lines += [
            f"| emulated aarch64: codec + portable coder byte-identical to x86 on the same tokens | "
            f"{aarch64['codec_identical_on_same_tokens']} of {aarch64['codec_checks']} | "
            f"{_yes(aarch64['codec_identical_on_same_tokens'] == aarch64['codec_checks'])} |",
            f"| emulated aarch64: whole-edge .psem byte-identical to x86 | fp32 {aarch64['fp32_psem_identical']}, int8 "
            f"{aarch64['int8_psem_identical']} of {aarch64['photos']} | "
            f"{_yes(aarch64['int8_psem_identical'] == aarch64['photos'])} |",
            f"| emulated aarch64 int8 parity (board numerics) | cosine mean {board['token_cosine_mean']}, min "
            f"{board['token_cosine_min']}, top-1 {board['top1_agreement']} | {_yes(board['token_cosine_min'] >= 0.975)} |",
        ]
    rerun = results.get("processes_rerun")
    if rerun:  # the cold-start step measured again alone (prosemc.bench.export._processes) after a change to it
        lines += ["", f"The cold-start and memory rows were measured again on {rerun['date']}, that step alone "
                      f"({rerun['why']}; 1-minute load average {rerun['load_average']}); the other rows are from the "
                      "full run."]
    lines += ["", "## int8 choices (token cosine vs torch fp32)", "",
              "| choice | mean | min |", "| --- | --- | --- |"]
    lines += [f"| {c['choice']} | {c['token_cosine_mean']} | {c['token_cosine_min']} |" for c in results["choices"]]
    lines += ["", "## Vision encoder, ms per image (median over 3 photos of the best of N runs)", "",
              "| threads | torch fp32 | onnxruntime fp32 | onnxruntime int8 | fp32 speed-up |", "| --- | --- | --- | --- | --- |"]
    lines += [f"| {r['threads']} | {r['torch fp32']} | {r['onnxruntime fp32']} | {r['onnxruntime int8']} | "
              f"{r['onnxruntime fp32 speed-up']}x |" for r in results["speed_ms"]]
    lines += ["", "int8 on this x86 CPU is no speed claim: the board's NPU or Cortex-A55 kernels decide that.", "",
              "## Entropy coder, all 6 metaae layers of a photo (best of 3)", "",
              "| coder | encode ms (median / max) | decode ms (median / max) | symbols (median) | µs per symbol |",
              "| --- | --- | --- | --- | --- |"]
    lines += [f"| {name} | {c['encode_all_layers_ms_median']} / {c['encode_all_layers_ms_max']} | "
              f"{c['decode_all_layers_ms_median']} / {c['decode_all_layers_ms_max']} | {c['symbols_median']} | "
              f"{c['encode_us_per_symbol']} |" for name, c in coder.items()]
    lines += ["", "## Labels per photo (decoded .psem, bundle vs torch path)", "",
              "| photo | levels with the same top-1 |", "| --- | --- |"]
    lines += [f"| {r['photo']} | {r['levels_same']} of {r['levels']} |" for r in i8["per_photo_levels"]]
    if aarch64:
        lines += ["", "## Emulated aarch64 (`make test-aarch64`)", "", aarch64["summary"]]
    return "\n".join(lines) + "\n"


def _yes(ok: bool) -> str:
    return "yes" if ok else "**no**"
