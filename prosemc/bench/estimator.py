"""How good is the codecs' quality estimate (the "error head" behind `send --confidence`)? On held-out views:

    per view, codec, prefix k:  estimate_k = codec.quality_estimate(layers[:k])   vs   true mean per-token cosine
    per confidence P:           k* = first k with estimate_k >= P; bytes(k*) vs bytes(all);
                                top-1 label at k* vs the label from all layers (did stopping early change it?)
                                and vs the label of the uncompressed tokens
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

CONFIDENCES = (0.8, 0.9, 0.95, 0.99)


def mean_token_cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Mean over tokens of the cosine between rows of a and b [N, D] (0 for a zero row)."""
    a, b = a.astype(np.float64), b.astype(np.float64)
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return float(np.where(norms > 0, (a * b).sum(axis=1) / np.maximum(norms, 1e-300), 0.0).mean())


def held_out_views(photos: dict[str, Any], views: int, seed: int = 1000) -> list[tuple[str, Any]]:
    """(name, RGB view) pairs: view 0 is the photo itself, the rest seeded augmentations (as in `prosemc fit`)."""
    from prosemc.training.photos import augment_view

    out = []
    for index, (name, image) in enumerate(photos.items()):
        rng = np.random.default_rng([seed, index])
        out.append((name, image))
        out += [(name, augment_view(image, rng)) for _ in range(views - 1)]
    return out


def measure(photos: dict[str, Any], model: Any, codecs: tuple[str, ...] = ("metaae", "baseline"), views: int = 16,
            progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Rows per (view, codec, prefix) and the summary per codec and confidence."""
    from prosemc.codec import make_codec
    from prosemc.format.spec import CHUNK_FRAME, CRC
    from prosemc.pipeline import build_psem

    rows: list[dict[str, Any]] = []
    for view_index, (name, image) in enumerate(held_out_views(photos, views)):
        edge = model.encode_image(image)
        truth = edge.tokens
        label = model.classify(truth, 1)[0][0]
        for codec_name in codecs:
            codec = make_codec(codec_name)
            header, layers = build_psem(edge, model.model_id, codec)
            total = 0
            for k in range(1, len(layers) + 1):
                decoded = codec.decode(header.codec_params, layers[:k], truth.shape)
                total += CHUNK_FRAME.size + len(layers[k - 1]) + CRC.size
                rows.append({"view": view_index, "photo": name, "codec": codec_name, "layer": k, "layer_bytes": total,
                             "cosine": mean_token_cosine(truth, decoded),
                             "estimate": float(codec.quality_estimate(header.codec_params, layers[:k], truth.shape)),
                             "top1": model.classify(decoded, 1)[0][0], "truth_top1": label})
        if progress:
            progress(name)
    return {"rows": rows, "summary": summarise(rows, codecs)}


def summarise(rows: list[dict[str, Any]], codecs: tuple[str, ...]) -> dict[str, Any]:
    summary: dict[str, Any] = {}
    for codec in codecs:
        mine = [r for r in rows if r["codec"] == codec]
        cosine = np.array([r["cosine"] for r in mine])
        estimate = np.array([r["estimate"] for r in mine])
        levels = sorted({r["layer"] for r in mine})
        per_level = {}
        for level in levels:
            at = [r for r in mine if r["layer"] == level]
            c, e = np.array([r["cosine"] for r in at]), np.array([r["estimate"] for r in at])
            per_level[level] = {"cosine": float(c.mean()), "estimate": float(e.mean()),
                                "correlation": float(np.corrcoef(c, e)[0, 1]) if c.std() > 0 and e.std() > 0 else None}
        stops = {}
        views = sorted({r["view"] for r in mine})
        for confidence in CONFIDENCES:
            changed = kept_truth = 0
            bytes_stop = bytes_all = 0
            for view in views:
                ladder = [r for r in mine if r["view"] == view]
                stop = next((r for r in ladder if r["estimate"] >= confidence), ladder[-1])
                changed += stop["top1"] != ladder[-1]["top1"]
                kept_truth += stop["top1"] == stop["truth_top1"]
                bytes_stop += stop["layer_bytes"]
                bytes_all += ladder[-1]["layer_bytes"]
            stops[str(confidence)] = {"top1_changed": changed / len(views), "top1_agreement": kept_truth / len(views),
                                      "bytes_fraction": bytes_stop / bytes_all, "mean_layer_bytes": bytes_stop / len(views)}
        summary[codec] = {
            "pairs": len(mine), "views": len(views),
            "correlation": float(np.corrcoef(cosine, estimate)[0, 1]),
            "mean_abs_error": float(np.abs(cosine - estimate).mean()),
            "overestimates": float((estimate > cosine + 0.02).mean()),
            "per_level": per_level, "stops": stops,
        }
    return summary
