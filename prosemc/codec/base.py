"""The codec interface every token codec implements (training-free baseline, Meta AutoEncoder, ...).

    tokens [N, D] float32 --encode--> EncodedTokens(params, layers=[bytes, ...])   coarse -> fine
    any prefix layers[:k], k >= 1 --decode(params, shape)--> tokens' [N, D] float32

`params` is a small JSON-able dict the decoder needs (step sizes, table ids, ...). It is written into the
`.psem` header's "codec" section, so it must be fully determined before the first layer is sent.

Optional: `quality_estimate(params, layers, shape) -> float`, the predicted mean per-token cosine between the
tokens these layers decode to and the full tokens (the "error head" that lets `prosemc send --confidence` stop
early). Codecs without it lack the attribute; `has_quality_estimate` tells.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, Sequence

if TYPE_CHECKING:  # annotations only: importing the registry (and the CLI) stays free of numpy
    import numpy as np


@dataclass(frozen=True)
class EncodedTokens:
    """What a codec produces: decoder parameters plus one payload per layer, coarse to fine."""

    params: dict[str, Any]
    layers: list[bytes] = field(default_factory=list)


class Codec(Protocol):
    """A progressive token codec. Decoding any non-empty prefix of layers gives usable tokens."""

    codec_id: str  # stable id written to the header, e.g. "sr-baseline/1"

    def describe(self) -> dict[str, Any]:
        """Header "codec" and "entropy" sections: {"codec": {...}, "entropy": {...}}, params excluded."""
        ...

    def encode(self, tokens: np.ndarray) -> EncodedTokens:
        """Compress tokens [N, D] float32 into layers, coarse to fine."""
        ...

    def decode(self, params: dict[str, Any], layers: Sequence[bytes], shape: tuple[int, int]) -> np.ndarray:
        """Reconstruct tokens [N, D] float32 from the first len(layers) >= 1 layers.

        A decoder bounds each layer's work by its bytes (prosemc.codec.limits.check_layer_work)."""
        ...

    def max_layer_bytes(self, params: dict[str, Any], shape: tuple[int, int]) -> list[int]:
        """The most payload bytes each layer of a stream with these params and token shape [N, D] can hold, one
        entry per layer the stream has; CodecError for params or a shape this codec cannot decode."""
        ...


class QualityEstimating(Codec, Protocol):
    """A codec that also predicts, from the layers alone, how close their decode is to the full tokens."""

    def quality_estimate(self, params: dict[str, Any], layers: Sequence[bytes], shape: tuple[int, int]) -> float:
        """Predicted mean per-token cosine between the tokens decoded from these layers and the full,
        uncompressed tokens, in [0, 1]."""
        ...


def has_quality_estimate(codec: Any) -> bool:
    """Whether `codec` implements the optional `quality_estimate` method."""
    return callable(getattr(codec, "quality_estimate", None))
