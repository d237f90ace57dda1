"""Decoder limits every codec applies, so that decode time and memory follow the bytes received, not a header's claims.

A layer's payload is bounded above (`ans_payload_bytes`: no codec can produce more for a given token shape),
which lets a reader refuse an oversized layer before reading it. And a layer's work is bounded by its bytes: a
one-symbol frequency table codes any count of symbols in zero bits, so a few hundred bytes could otherwise
claim N*D symbols in every layer and keep a decoder busy for minutes. Every layer may cost at most

    FREE_VALUES + VALUES_PER_BYTE * (its payload bytes)      values of work

where work = the symbols the layer decodes + the token values it visits to apply them (sr-baseline/1: N for each
channel it codes coefficients in; a metaae/1 refinement level: all N*D). Each codec checks before it pays. Real
layers stay far below: a dense [576, 1024] sr-baseline layer codes about 10 values per byte, a sparse one about
400, and any token grid of up to 2**21 values (LLaVA-1.5's 576 x 1024, Qwen2-VL at 448 px) is within the free
allowance whatever its payload.
"""

from __future__ import annotations

from prosemc.codec.entropy import PRECISION_BITS
from prosemc.errors import CodecError

FREE_VALUES = 1 << 21  # work any layer may cost, whatever its size
VALUES_PER_BYTE = 1 << 12  # further work each payload byte buys
_ANS_WORD_BYTES = 4
_ANS_STATE_WORDS = 2  # the 64-bit final state


def check_layer_work(codec_id: str, work: int, payload_bytes: int) -> None:
    """CodecError unless a layer of `payload_bytes` bytes may cost `work` values (see the module docstring)."""
    allowed = FREE_VALUES + VALUES_PER_BYTE * payload_bytes
    if work > allowed:
        raise CodecError(
            f"this {codec_id} layer claims {work} values of decoding work in {payload_bytes} bytes, over the limit "
            f"of {FREE_VALUES} + {VALUES_PER_BYTE} per byte ({allowed}); the layer is corrupt or hostile"
        )


def ans_payload_bytes(symbols: int) -> int:
    """The most bytes an ANS payload of `symbols` symbols can take: PRECISION_BITS per symbol + the final state."""
    words = -(-symbols * PRECISION_BITS // (8 * _ANS_WORD_BYTES)) + _ANS_STATE_WORDS
    return _ANS_WORD_BYTES * words


def varint_bytes(limit: int) -> int:
    """The most bytes an LEB128 varint of a value up to `limit` takes."""
    return max(1, -(-limit.bit_length() // 7))
