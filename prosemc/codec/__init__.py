"""Token codecs by name: `make_codec` for CLI names, `codec_from_header` for what a .psem header says.

    CLI name   codec id        entropy id
    baseline   sr-baseline/1   constriction-ans/1   progressive, training-free (prosemc.codec.baseline)
    raw-f32    raw-f32/1       none                 one lossless layer
    raw-f16    raw-f16/1       none                 one float16 layer
    int8       int8/1          none                 one int8 layer with per-token scales
    metaae     metaae/1        constriction-ans/1   the trained Meta AutoEncoder (prosemc.codec.metaae)

Codec modules load lazily, so importing this package costs nothing.
"""

from __future__ import annotations

from typing import Any, Callable

from prosemc.codec.base import Codec, EncodedTokens
from prosemc.errors import CodecError

__all__ = ["Codec", "EncodedTokens", "CODEC_NAMES", "make_codec", "codec_from_header"]


def _baseline(**options: Any) -> Codec:
    from prosemc.codec.baseline import SuccessiveRefinementCodec

    return SuccessiveRefinementCodec(**options)


def _raw_f32(**options: Any) -> Codec:
    from prosemc.codec.raw import RawCodec

    return RawCodec("float32", **options)


def _raw_f16(**options: Any) -> Codec:
    from prosemc.codec.raw import RawCodec

    return RawCodec("float16", **options)


def _int8(**options: Any) -> Codec:
    from prosemc.codec.raw import Int8Codec

    return Int8Codec(**options)


def _metaae(**options: Any) -> Codec:
    from prosemc.codec.metaae import MetaAutoEncoderCodec

    return MetaAutoEncoderCodec(**options)


# CLI name -> (codec id written to headers, constructor taking options)
CODEC_NAMES: dict[str, tuple[str, Callable[..., Codec]]] = {
    "baseline": ("sr-baseline/1", _baseline),
    "raw-f32": ("raw-f32/1", _raw_f32),
    "raw-f16": ("raw-f16/1", _raw_f16),
    "int8": ("int8/1", _int8),
    "metaae": ("metaae/1", _metaae),
}
_NAME_BY_ID = {codec_id: name for name, (codec_id, _) in CODEC_NAMES.items()}
_UNCODED_ENTROPY_ID = "none"  # = raw.RAW_CODER_ID, kept here so this module imports no codec


def make_codec(name: str, **options: Any) -> Codec:
    """The codec a CLI name stands for, built with options (e.g. layers=5 for "baseline")."""
    entry = CODEC_NAMES.get(name)
    if entry is None:
        raise CodecError(f"unknown codec {name!r}; choose one of: {', '.join(CODEC_NAMES)}")
    try:
        return entry[1](**options)
    except TypeError as error:
        raise CodecError(f"codec {name!r} does not take these options ({error})") from error


def codec_from_header(codec_section: dict[str, Any], entropy_section: dict[str, Any]) -> Codec:
    """The decoder for a .psem header's "codec" and "entropy" sections; CodecError naming an unknown id."""
    codec_id = codec_section.get("id") if isinstance(codec_section, dict) else None
    entropy_id = entropy_section.get("id") if isinstance(entropy_section, dict) else None
    name = _NAME_BY_ID.get(codec_id) if isinstance(codec_id, str) else None
    if name is None:
        raise CodecError(
            f"unknown codec id {codec_id!r} in the file header (this prosemc knows: "
            f"{', '.join(sorted(_NAME_BY_ID))}); upgrade prosemc, or re-encode the file with a known codec"
        )
    if not isinstance(entropy_id, str):
        raise CodecError(f"the file header names no entropy coder id for codec {codec_id!r} (got {entropy_id!r})")
    if name == "baseline":
        return make_codec(name, coder_id=entropy_id)
    if name == "metaae":  # refuses a file made with other weights, naming both hashes
        if codec_section.get("model_sha256") is None:
            raise CodecError(f"the file header names no codec.model_sha256, which a learned codec ({codec_id}) "
                             "requires to pick its weights; the file is corrupt or hostile, re-encode it")
        return make_codec(name, coder_id=entropy_id, model_sha256=codec_section.get("model_sha256"))
    if entropy_id != _UNCODED_ENTROPY_ID:
        raise CodecError(
            f"codec {codec_id!r} codes no symbols, so its entropy id must be {_UNCODED_ENTROPY_ID!r}, "
            f"got {entropy_id!r}"
        )
    return make_codec(name)
