"""How close a bundle's tokens are to the torch model's fp32 tokens, on a set of images.

    per image: cosine(bundle tokens [N, D], torch tokens [N, D]) over all N * D values, max |difference|,
               and for `lite` whether the label head (mean token -> ImageNet logits) picks the same top-1 class
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine similarity of two arrays over all their values (1.0 for two all-zero arrays)."""
    a, b = a.astype(np.float64).ravel(), b.astype(np.float64).ravel()
    norms = float(np.linalg.norm(a) * np.linalg.norm(b))
    return float(a @ b / norms) if norms else float(np.array_equal(a, b))


def parity(bundle_tokens: Sequence[np.ndarray], reference_tokens: Sequence[np.ndarray],
           top1: Callable[[np.ndarray], int] | None = None) -> dict[str, Any]:
    """Summary of bundle vs reference tokens: token_cosine_mean/min, max_abs_diff, top1_agreement (or None), images."""
    cosines = [cosine(a, b) for a, b in zip(bundle_tokens, reference_tokens)]
    agreement = None
    if top1 is not None:
        agreement = float(np.mean([top1(a) == top1(b) for a, b in zip(bundle_tokens, reference_tokens)]))
    return {
        "images": len(cosines),
        "token_cosine_mean": round(float(np.mean(cosines)), 5),
        "token_cosine_min": round(float(np.min(cosines)), 5),
        "max_abs_diff": float(max(float(np.abs(a - b).max()) for a, b in zip(bundle_tokens, reference_tokens))),
        "top1_agreement": None if agreement is None else round(agreement, 4),
    }


def lite_top1() -> Callable[[np.ndarray], int]:
    """The `lite` label head's top-1 class of tokens [N, 1280]."""
    from prosemc.models.lite import LiteModel

    model = LiteModel()
    return lambda tokens: int(np.argmax(model.logits(tokens)))
