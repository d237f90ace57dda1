"""`prosemc bench rd`: rate against fidelity per scheme on held-out photos, budgets, plots and a latency model.

    eval rows (bytes, token cosine, top-1 agreement, answer consistency) per scheme and level, every codec in the
              full and in the compact form ("<codec>-compact": same tokens, fewer bytes)
    budget table: at 256 B ... 4 KB each image sends its largest level that fits; the thin-link budgets
              (256, 384, 512 B) again, compact form against WebP and JPEG
    overheads:    header and layer-1 framing bytes of each codec in both forms
    latency at 1 Mbps uplink + 200 ms round trip, from measured compute times and bytes:
      full-edge   vision + answer on the edge CPU
      full-cloud  JPEG q90 of the photo up, vision + answer in the cloud
      split k     edge vision + codec, level-k bytes up, cloud decode + answer
"""

from __future__ import annotations

import io
import statistics
from pathlib import Path
from typing import Any, Callable

import numpy as np

from prosemc.bench.process import best_seconds
from prosemc.evaluate import BUDGETS, COMPACT_SUFFIX, DEFAULT_QUESTION, Evaluation, evaluate

UPLINK_BITS_PER_S = 1_000_000
ROUND_TRIP_S = 0.2
THIN_BUDGETS = (256, 384, 512)  # LoRa / NB-IoT / satellite-class frames


def _best_s(fn: Callable[[], Any], repeats: int = 3) -> float:
    return best_seconds(fn, repeats)[0]


def transfer_s(nbytes: float) -> float:
    """Seconds to push `nbytes` up a 1 Mbps link, plus one round trip."""
    return nbytes * 8 / UPLINK_BITS_PER_S + ROUND_TRIP_S


def compiled_twin(codec: Any) -> Any:
    """The same codec with its compiled encoder (the per-token metaae codec where numba is installed), else None."""
    from prosemc.codec import metaae_planes_kernel
    from prosemc.codec.metaae_planes import PlaneMetaAECodec

    if not isinstance(codec, PlaneMetaAECodec) or not metaae_planes_kernel.available():
        return None
    return PlaneMetaAECodec(codec.weights, codec.layers, codec.coder.coder_id, compiled=True)


def latency(photos: dict[str, Any], model: Any, codec_name: str, evaluation: Evaluation) -> dict[str, Any]:
    """Measured compute times per stage (means over photos) and the modelled end-to-end latency per path."""
    from prosemc.pipeline import codec_for

    codec = codec_for(codec_name, model.model_id)
    compiled = compiled_twin(codec)
    stages: dict[str, list[float]] = {"vision": [], "codec_encode": [], "codec_decode_all": [], "answer": [],
                                      "jpeg_q90_encode": [], "jpeg_q90_bytes": []}
    if compiled is not None:
        stages["codec_encode_compiled"] = []
    for image in photos.values():
        edge = model.encode_image(image)
        encoded = codec.encode(edge.tokens)
        stages["vision"].append(_best_s(lambda: model.encode_image(image), repeats=5))
        stages["codec_encode"].append(_best_s(lambda: codec.encode(edge.tokens), repeats=20))
        if compiled is not None:
            if compiled.encode(edge.tokens).layers != encoded.layers:
                raise AssertionError("the compiled encoder wrote other bytes than the numpy one")
            stages["codec_encode_compiled"].append(_best_s(lambda: compiled.encode(edge.tokens), repeats=20))
        stages["codec_decode_all"].append(_best_s(lambda: codec.decode(encoded.params, encoded.layers,
                                                                        edge.tokens.shape)))
        stages["answer"].append(_best_s(lambda: model.answer(edge, DEFAULT_QUESTION), repeats=2))
        buffer = io.BytesIO()
        stages["jpeg_q90_encode"].append(_best_s(lambda: image.save(io.BytesIO(), format="JPEG", quality=90)))
        image.save(buffer, format="JPEG", quality=90)
        stages["jpeg_q90_bytes"].append(buffer.tell())
    mean = {k: statistics.mean(v) for k, v in stages.items()}
    paths = [
        {"path": "full-edge", "bytes": 200, "edge_s": mean["vision"] + mean["answer"], "cloud_s": 0.0},
        {"path": "full-cloud (JPEG q90)", "bytes": mean["jpeg_q90_bytes"], "edge_s": mean["jpeg_q90_encode"],
         "cloud_s": mean["vision"] + mean["answer"]},
    ]
    scheme = codec.codec_id.split("/")[0] if codec_name != "baseline" else "baseline"
    for row in evaluation.rows():
        if row["scheme"] == codec_name:
            paths.append({"path": f"split {scheme} level {row['level']}", "bytes": row["bytes"],
                          "edge_s": mean["vision"] + mean["codec_encode"],
                          "cloud_s": mean["codec_decode_all"] + mean["answer"]})
    for p in paths:
        p["transfer_s"] = transfer_s(p["bytes"])
        p["total_s"] = p["edge_s"] + p["transfer_s"] + p["cloud_s"]
        for key in ("bytes", "edge_s", "cloud_s", "transfer_s", "total_s"):
            p[key] = round(p[key], 4 if key != "bytes" else 1)
    return {"stages_s": {k: round(v, 6) for k, v in mean.items()}, "paths": paths,
            "assumptions": f"{UPLINK_BITS_PER_S / 1e6:g} Mbps uplink, {ROUND_TRIP_S * 1e3:g} ms round trip, "
                           "edge and cloud compute both measured on this CPU (the answer text down is free)"}


def form_overheads(photos: dict[str, Any], model: Any, codecs: list[str]) -> list[dict[str, Any]]:
    """Per codec, mean over photos: layer 1's payload, and the header and layer-1 framing bytes in each form."""
    from prosemc.format import chunk_size, header_size
    from prosemc.pipeline import build_psem, codec_for
    from prosemc.profiles import profile_of
    from prosemc.report import codec_object

    rows = []
    for name in codecs:
        samples, codec = [], codec_for(name, model.model_id)
        for image in photos.values():
            header, layers = build_psem(model.encode_image(image), model.model_id, codec)
            payload = len(layers[0])
            samples.append({"layer1_payload": payload, "full_header": header_size(header),
                            "full_framing": chunk_size(payload) - payload,
                            "compact_header": header_size(header, profile_of(header)),
                            "compact_framing": chunk_size(payload, compact=True) - payload})
        row: dict[str, Any] = {"codec": codec_object(header.codec, header.entropy)}
        for key in samples[0]:
            row[key] = round(statistics.mean(s[key] for s in samples), 1)
        row["compact_overhead_max"] = max(s["compact_header"] + s["compact_framing"] for s in samples)
        rows.append(row)
    return rows


def plot(evaluation: Evaluation, path: Path) -> None:
    """Bytes (log) against top-1 agreement and answer consistency, one curve per scheme."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = evaluation.rows()
    schemes = list(dict.fromkeys(r["scheme"] for r in rows))
    figure, axes = plt.subplots(1, 3, figsize=(16, 4.8))
    for axis, key, title in zip(axes, ("top1_agreement", "answer_consistency", "per_token_cosine"),
                                ("top-1 label agreement", "answer consistency (MiniLM cosine)", "per-token cosine")):
        for scheme in schemes:
            points = sorted((r["bytes"], r[key]) for r in rows if r["scheme"] == scheme and r[key] is not None)
            if points:
                axis.plot(*zip(*points), marker="o", label=scheme)
        for budget in BUDGETS:
            axis.axvline(budget, color="grey", lw=0.5, ls=":")
        axis.set_xscale("log")
        axis.set_xlabel("bytes sent per image (log)")
        axis.set_title(title)
        axis.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    figure.suptitle(f"{evaluation.model}: rate vs fidelity on {len(evaluation.images)} held-out photos")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def photo_views(model: Any, split: str, views: int, seed: int) -> list[np.ndarray]:
    """Tokens [N, D] of every builtin photo of a split and its seeded augmented views (as `prosemc fit` makes them)."""
    from prosemc.training.photos import AUG_VERSION, augment_view, builtin_sources, pixel_hash, view_tokens

    out = []
    for source in builtin_sources(split):
        image = source.load()
        rng = np.random.default_rng([seed, int(pixel_hash(image)[:12], 16), AUG_VERSION])
        out += list(view_tokens(model, [image] + [augment_view(image, rng) for _ in range(views - 1)]))
    return out


HELDOUT_VIEWS = 32  # augmented views per held-out photo (8 photos): 256 views, top-1 to about +-0.03 (95 %)
TRAIN_VIEWS = 8  # views per training photo (34 photos): 272 views


def top1_interval(top1: list[float], views: int) -> list[float]:
    """Half-width [K] of a 95 % normal interval of each top-1 rate over `views` views (views of one photo are not
    independent, so the true uncertainty is larger)."""
    p = np.asarray(top1)
    return (1.96 * np.sqrt(p * (1 - p) / max(1, views))).round(4).tolist()


def learned_codec_checks(model: Any, codec: Any, held: list[np.ndarray], train: list[np.ndarray]) -> dict[str, Any]:
    """A per-token metaae codec on token views: top-1 and per-token cosine per layer on held-out and training photos
    (does it generalise?), the training-free baseline on the same held-out views (payload bytes for top-1 0.95), and
    the error head against the truth (Pearson per view and layer, and per token)."""
    from prosemc.codec import make_codec
    from prosemc.codec.quality import token_cosines

    out: dict[str, Any] = {}
    predicted, truth, token_predicted, token_truth = [], [], [], []
    for name, views in (("heldout", held), ("train", train), ("baseline_heldout", held)):
        coder = make_codec("baseline") if name == "baseline_heldout" else codec
        top1, cosine, sizes = [], [], []
        for x in views:
            encoded = coder.encode(x)
            label = int(np.argmax(model.logits(x)))
            rows_top1, rows_cosine = [], []
            for k in range(1, len(encoded.layers) + 1):
                if name == "baseline_heldout":
                    decoded, state = coder.decode(encoded.params, encoded.layers[:k], x.shape), None
                else:
                    state = codec.state(encoded.params, encoded.layers[:k], x.shape)
                    decoded = state.tokens()
                rows_top1.append(float(int(np.argmax(model.logits(decoded))) == label))
                cosines = token_cosines(x, decoded)
                rows_cosine.append(float(cosines.mean()))
                if name == "heldout":
                    quality = state.quality()
                    predicted.append(float(quality.mean()))
                    truth.append(rows_cosine[-1])
                    token_predicted.append(quality)
                    token_truth.append(cosines)
            top1.append(rows_top1)
            cosine.append(rows_cosine)
            sizes.append(np.cumsum([len(layer) for layer in encoded.layers]).tolist())
        rates = np.mean(top1, 0).round(4).tolist()
        out[name] = {"views": len(views), "payload_bytes": np.mean(sizes, 0).round(1).tolist(), "top1": rates,
                     "top1_ci95": top1_interval(rates, len(views)),
                     "per_token_cosine": np.mean(cosine, 0).round(4).tolist()}
    gap = np.abs(np.array(out["heldout"]["top1"]) - np.array(out["train"]["top1"]))
    out["top1_gap_max"] = round(float(gap.max()), 4)
    out["payload_bytes_for_top1_0.95"] = {
        key: bytes_for_top1([{"scheme": key, "bytes": b, "top1_agreement": t}
                             for b, t in zip(out[key]["payload_bytes"], out[key]["top1"])], key, 0.95)
        for key in ("heldout", "baseline_heldout")}
    out["error_head"] = {
        "pearson_view_level": round(float(np.corrcoef(predicted, truth)[0, 1]), 4),
        "pearson_token": round(float(np.corrcoef(np.concatenate(token_predicted), np.concatenate(token_truth))[0, 1]), 4),
        "mean_abs_error": round(float(np.mean(np.abs(np.array(predicted) - np.array(truth)))), 4),
    }
    return out


def bytes_for_top1(rows: list[dict[str, Any]], scheme: str, target: float) -> float | None:
    """Bytes at which a scheme's (bytes, top-1) ladder first reaches `target`, linearly interpolated; None if never."""
    ladder = sorted((r["bytes"], r["top1_agreement"]) for r in rows if r["scheme"] == scheme
                    and r["top1_agreement"] is not None)
    for (b0, t0), (b1, t1) in zip([(0.0, 0.0)] + ladder, ladder):
        if t1 >= target:
            return b1 if t1 == t0 else b0 + (target - t0) * (b1 - b0) / (t1 - t0)
    return None


def run(photos: dict[str, Any], model: Any, codecs: list[str], answers: bool = True,
        progress: Callable[[str], None] | None = None) -> tuple[Evaluation, dict[str, Any]]:
    """Evaluate every scheme, then the budget table and the latency model for the first codec (and, for a per-token
    metaae codec, its generalisation and error head on augmented views)."""
    from prosemc.pipeline import codec_for

    evaluation = evaluate(photos, model, codecs, answers=answers, progress=progress)
    rows = evaluation.rows()
    results = {
        **evaluation.to_json(),
        "photos": evaluation.images,
        "budgets": [row for budget in BUDGETS for row in evaluation.at_budget(budget)],
        "overheads": form_overheads(photos, model, codecs),
        "latency": latency(photos, model, codecs[0], evaluation),
        "bytes_for_top1_0.95": {name: bytes_for_top1(rows, name, 0.95) for name in codecs},
    }
    codec = codec_for(codecs[0], model.model_id)
    if hasattr(codec, "quality_estimate") and hasattr(model, "logits"):
        results["learned_codec"] = learned_codec_checks(model, codec, photo_views(model, "heldout", HELDOUT_VIEWS, 1000),
                                                        photo_views(model, "train", TRAIN_VIEWS, 0))
    return evaluation, results


def _cell(value: Any) -> str:
    return "—" if value is None else (f"{value:.3f}" if isinstance(value, float) else str(value))


def markdown(results: dict[str, Any], machine: str, plot_name: str) -> str:
    lines = [
        "# `prosemc bench rd` — rate vs fidelity",
        "",
        f"Model `{results['model']}` on {results['images']} held-out packaged photos ({', '.join(results['photos'])}); "
        f"machine: {machine}. Every metric compares with the uncompressed tokens of the same photo. Bytes are "
        "whole `.psem` files (header included; `-compact` rows in the compact form) for token codecs, the JSON text "
        "for the paper's scheme, and the "
        "image file for JPEG/WebP (the encoder's 224 px input crop, best quality within the budget, smaller "
        "resolutions when even quality 1 does not fit).",
        "",
        f"![rate vs fidelity]({plot_name})",
        "",
        "## Every scheme and level",
        "",
        "| scheme | level | bytes | token cosine | per-token cosine | top-1 agreement | answer consistency |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    lines += [f"| {r['scheme']} | {r['level']} | {r['bytes']:.0f} | {_cell(r['token_cosine'])} | "
              f"{_cell(r.get('per_token_cosine'))} | {_cell(r['top1_agreement'])} | {_cell(r['answer_consistency'])} |"
              for r in results["rows"]]
    lines += ["", "## At a byte budget (each photo sends its largest level that fits; a photo with none scores 0)", "",
              "| budget | scheme | photos that fit | mean bytes | per-token cosine | top-1 agreement | answer consistency |",
              "| --- | --- | --- | --- | --- | --- | --- |"]
    lines += [f"| {r['budget']} | {r['scheme']} | {r['images_fitting']} | {_cell(r['bytes'])} | "
              f"{_cell(r.get('per_token_cosine'))} | {_cell(r['top1_agreement'])} | {_cell(r['answer_consistency'])} |"
              for r in results["budgets"]]
    thin = [r for r in results["budgets"] if r["budget"] in THIN_BUDGETS
            and (r["scheme"].endswith(COMPACT_SUFFIX) or r["scheme"] in ("jpeg", "webp"))]
    lines += ["", "## Thin links: the compact form against WebP and JPEG at the same bytes", "",
              "The compact form names the model + codec profile (8 bytes) instead of the ~250-byte header "
              "(`prosemc encode --compact`); everything else is as above.", "",
              "| budget | scheme | photos that fit | mean bytes | top-1 agreement | answer consistency |",
              "| --- | --- | --- | --- | --- | --- |"]
    lines += [f"| {r['budget']} | {r['scheme']} | {r['images_fitting']} | {_cell(r['bytes'])} | "
              f"{_cell(r['top1_agreement'])} | {_cell(r['answer_consistency'])} |" for r in thin]
    lines += ["", "Header and layer-1 framing bytes (mean over photos; target for `lite` compact: at most 24):", "",
              "| codec | layer 1 payload | full header | full framing | compact header | compact framing | "
              "compact header + framing, worst photo |", "| --- | --- | --- | --- | --- | --- | --- |"]
    lines += [f"| {o['codec']['name']} | {o['layer1_payload']:.1f} | {o['full_header']:.0f} | {o['full_framing']:.0f} | "
              f"{o['compact_header']:.1f} | {o['compact_framing']:.1f} | {o['compact_overhead_max']} |"
              for o in results["overheads"]]
    lines += ["", "Bytes for top-1 agreement 0.95 (interpolated on each codec's ladder): " + ", ".join(
        f"{name} {_cell(value)}" for name, value in results.get("bytes_for_top1_0.95", {}).items())]
    learned = results.get("learned_codec")
    if learned:
        head = learned["error_head"]
        lines += ["", f"## {results['rows'][0]['scheme']}: generalisation and error head (augmented views)", "",
                  f"Held-out: {learned['heldout']['views']} views of the held-out photos; training: "
                  f"{learned['train']['views']} views of the training photos. Largest top-1 gap: "
                  f"{learned['top1_gap_max']} (95 % intervals below: views of one photo are correlated, so they are "
                  "optimistic); the two sets are different photos, so the gap mixes their difficulty with overfitting: "
                  "`prosemc bench generalisation` measures it on the same photos, decoded by codecs that did and did "
                  "not train on them. Payload bytes for top-1 0.95 on these held-out views (interpolated): "
                  f"{_cell(learned['payload_bytes_for_top1_0.95']['heldout'])} for {results['rows'][0]['scheme']}, "
                  f"{_cell(learned['payload_bytes_for_top1_0.95']['baseline_heldout'])} for the baseline. "
                  "Error head vs true per-token cosine: Pearson "
                  f"{head['pearson_view_level']} per view and layer, {head['pearson_token']} per token; mean "
                  f"absolute error {head['mean_abs_error']}.", "",
                  "| layer | payload bytes (held-out) | top-1 held-out | top-1 training | per-token cosine held-out | "
                  "per-token cosine training |", "| --- | --- | --- | --- | --- | --- |"]
        h, t = learned["heldout"], learned["train"]
        lines += [f"| {k + 1} | {h['payload_bytes'][k]:.0f} | {h['top1'][k]:.3f} ± {h['top1_ci95'][k]:.3f} | "
                  f"{t['top1'][k]:.3f} ± {t['top1_ci95'][k]:.3f} | {h['per_token_cosine'][k]:.3f} | "
                  f"{t['per_token_cosine'][k]:.3f} |" for k in range(len(h["top1"]))]
        b = learned["baseline_heldout"]
        lines += ["", "The baseline on the same held-out views:", "",
                  "| level | payload bytes | top-1 | per-token cosine |", "| --- | --- | --- | --- |"]
        lines += [f"| {k + 1} | {b['payload_bytes'][k]:.0f} | {b['top1'][k]:.3f} ± {b['top1_ci95'][k]:.3f} | "
                  f"{b['per_token_cosine'][k]:.3f} |" for k in range(len(b["top1"]))]
    lat = results["latency"]
    stages = lat["stages_s"]
    share = (f" Edge encode (transform + entropy coding) = {100 * stages['codec_encode'] / stages['vision']:.1f} % "
             "of the vision encoder's time" if stages.get("vision") and "codec_encode" in stages else "")
    if share and "codec_encode_compiled" in stages:
        share += (f"; {100 * stages['codec_encode_compiled'] / stages['vision']:.1f} % with the compiled encoder "
                  "(numba; the same bytes, checked)")
    share += "." if share else ""
    lines += ["", f"## Latency model ({lat['assumptions']})", "",
              "Measured stage times (s, mean over photos): " + ", ".join(f"{k} {v}" for k, v in stages.items()) +
              "." + share, "",
              "| path | bytes up | edge s | transfer s | cloud s | total s |", "| --- | --- | --- | --- | --- | --- |"]
    lines += [f"| {p['path']} | {p['bytes']:.0f} | {p['edge_s']:.3f} | {p['transfer_s']:.3f} | {p['cloud_s']:.3f} | "
              f"{p['total_s']:.3f} |" for p in lat["paths"]]
    return "\n".join(lines) + "\n"
