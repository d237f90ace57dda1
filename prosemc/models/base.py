"""The model interface: an edge half (image -> visual tokens) and a cloud half (tokens + question -> answer).

    edge:  PIL image --encode_image--> EdgeTokens(tokens [N, D] float32, info {JSON-able})
    cloud: EdgeTokens + question --answer--> Answer(text, labels)

`info` carries what the cloud half needs besides the tokens (e.g. Qwen2-VL's image grid); it is stored in
the `.psem` header metadata, so it must be small and JSON-serialisable.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np


@dataclass
class EdgeTokens:
    """Visual tokens [N, D] float32 and the JSON-able side information the cloud half needs."""

    tokens: np.ndarray
    info: dict[str, Any] = field(default_factory=dict)


@dataclass
class Answer:
    """The cloud half's reply; `labels` is (label, probability) best first, for models with a label bridge."""

    text: str
    labels: list[tuple[str, float]] | None = None


class VisionLanguageModel(Protocol):
    """A split VLM. Halves load lazily: encoding never loads the language model and vice versa."""

    model_id: str  # canonical id written to the header's "encoder" field, e.g. "lite"

    def encode_image(self, image: Any) -> EdgeTokens:
        """Run the edge half on an RGB PIL image."""
        ...

    def answer(self, tokens: EdgeTokens, question: str) -> Answer:
        """Run the cloud half on (possibly reconstructed) tokens; greedy, so deterministic."""
        ...
