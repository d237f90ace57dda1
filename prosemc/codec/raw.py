"""Single-layer raw codecs: tokens [N, D] as float32 (lossless), float16, or int8 with a per-token scale.

    float32 / float16: layer = the values, little-endian, row-major [N, D]
    int8:              layer = N float32 scales (max |x| of each token / 127), then N*D int8 values
No entropy coding: these are the exact reference for split-VLM tests and the plain comparison schemes.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from prosemc.codec.base import EncodedTokens
from prosemc.codec.baseline import FLOAT32_MAX, check_layer_types, check_shape, check_tokens
from prosemc.errors import CodecError

RAW_CODER_ID = "none"  # the header's entropy section for codecs that code no symbols


class RawCodec:
    """A one-layer codec storing every value as float32 ("raw-f32/1", lossless) or float16 ("raw-f16/1")."""

    def __init__(self, dtype: str = "float32") -> None:
        if dtype not in ("float32", "float16"):
            raise CodecError(f"raw codec dtype must be float32 or float16, got {dtype!r}")
        self.dtype = np.dtype(dtype).newbyteorder("<")
        self.codec_id = "raw-f32/1" if dtype == "float32" else "raw-f16/1"

    def describe(self) -> dict[str, Any]:
        return {"codec": {"id": self.codec_id, "model_sha256": None}, "entropy": {"id": RAW_CODER_ID}}

    def encode(self, tokens: np.ndarray) -> EncodedTokens:
        """tokens [N, D] -> one layer of N*D little-endian values (float16 overflow saturates to +-65504)."""
        tokens = check_tokens(tokens)
        if self.dtype.itemsize == 2:
            limit = float(np.finfo(np.float16).max)
            tokens = np.clip(tokens, -limit, limit)
        return EncodedTokens(params={}, layers=[tokens.astype(self.dtype).tobytes()])

    def max_layer_bytes(self, params: dict[str, Any], shape: tuple[int, int]) -> list[int]:
        """One layer of exactly N*D values."""
        rows, columns = check_shape(shape)
        return [rows * columns * self.dtype.itemsize]

    def decode(self, params: dict[str, Any], layers: Sequence[bytes], shape: tuple[int, int]) -> np.ndarray:
        rows, columns = check_single_layer(self.codec_id, layers, shape)
        payload = bytes(layers[0])
        expected = rows * columns * self.dtype.itemsize
        if len(payload) != expected:
            raise CodecError(
                f"{self.codec_id} layer holds {len(payload)} bytes, but tokens ({rows}, {columns}) need {expected}; "
                "the layer is truncated or the header's token shape is wrong"
            )
        values = np.frombuffer(payload, dtype=self.dtype).astype(np.float32).reshape(rows, columns)
        if not np.isfinite(values).all():
            raise CodecError(f"{self.codec_id} layer holds non-finite values; the layer is damaged")
        return values


class Int8Codec:
    """"int8/1": one layer of per-token float32 scales [N] and int8 values [N, D] (symmetric, round to nearest)."""

    codec_id = "int8/1"

    def describe(self) -> dict[str, Any]:
        return {"codec": {"id": self.codec_id, "model_sha256": None}, "entropy": {"id": RAW_CODER_ID}}

    def encode(self, tokens: np.ndarray) -> EncodedTokens:
        tokens = check_tokens(tokens).astype(np.float64)
        scales = (np.abs(tokens).max(axis=1) / 127.0).astype(np.float32)
        safe = np.where(scales > 0, scales, 1.0).astype(np.float64)[:, None]
        levels = np.clip(np.rint(tokens / safe), -127, 127).astype(np.int8)
        return EncodedTokens(params={}, layers=[scales.astype("<f4").tobytes() + levels.tobytes()])

    def max_layer_bytes(self, params: dict[str, Any], shape: tuple[int, int]) -> list[int]:
        """One layer of exactly N scales and N*D levels."""
        rows, columns = check_shape(shape)
        return [rows * 4 + rows * columns]

    def decode(self, params: dict[str, Any], layers: Sequence[bytes], shape: tuple[int, int]) -> np.ndarray:
        rows, columns = check_single_layer(self.codec_id, layers, shape)
        payload = bytes(layers[0])
        expected = rows * 4 + rows * columns
        if len(payload) != expected:
            raise CodecError(
                f"{self.codec_id} layer holds {len(payload)} bytes, but tokens ({rows}, {columns}) need {expected}; "
                "the layer is truncated or the header's token shape is wrong"
            )
        scales = np.frombuffer(payload[: rows * 4], dtype="<f4").astype(np.float32)
        # 127 * scale must stay a float32 too, or the tokens decode to infinity
        largest = scales.astype(np.float64) * 127
        if not (np.isfinite(scales).all() and (scales >= 0).all() and (largest <= FLOAT32_MAX).all()):
            raise CodecError(
                f"{self.codec_id} layer holds invalid token scales (negative, non-finite, or so large that 127 x scale "
                "overflows float32); the layer is damaged or hostile"
            )
        levels = np.frombuffer(payload[rows * 4 :], dtype=np.int8).reshape(rows, columns)
        return (levels.astype(np.float32) * scales[:, None]).astype(np.float32)


def check_single_layer(codec_id: str, layers: Sequence[bytes], shape: tuple[int, int]) -> tuple[int, int]:
    """The shape of a one-layer stream; CodecError unless exactly one layer is given."""
    if len(layers) != 1:
        raise CodecError(f"{codec_id} streams have exactly one layer, got {len(layers)}")
    check_layer_types(layers)
    return check_shape(shape)
