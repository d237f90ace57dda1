"""Token codecs: one record per codec -- CLI name, header id, factory, how its decoder is rebuilt from a header.

    CLI name   codec id        entropy id           per-image params
    metaae     metaae/1        constriction-ans/1   -              the trained Meta AutoEncoder: pooled (prosemc.codec.metaae,
                                                                   lite) or per token (prosemc.codec.metaae_token), as its weights say
    baseline   sr-baseline/1   constriction-ans/1   steps, clip    progressive, training-free (prosemc.codec.baseline)
    raw-f32    raw-f32/1       none                 -              one lossless layer
    raw-f16    raw-f16/1       none                 -              one float16 layer
    int8       int8/1          none                 -              one int8 layer with per-token scales

`make_codec` builds one from a CLI name, `codec_from_header` from what a .psem header says. The compact form
names a whole header by its profile id, so codecs need no short numeric id; a record only says which of its
params change with every image (those travel in a compact file's patch, the rest belong to the profile).
Codec modules load lazily, so importing this package costs nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from prosemc.codec.base import Codec, EncodedTokens
from prosemc.errors import CodecError

__all__ = ["Codec", "EncodedTokens", "CodecRecord", "CODECS", "codec_names", "codec_record", "record_for_id",
           "make_codec", "codec_from_header"]


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
    from prosemc.codec.metaae import make_metaae

    return make_metaae(**options)


@dataclass(frozen=True)
class CodecRecord:
    """One registered codec: its CLI name, the id headers carry, and how to build its encoder and decoder."""

    name: str  # the CLI's --codec choice
    codec_id: str  # written to the header's codec.id
    factory: Callable[..., Codec]  # options -> codec; imports the codec's module on first use
    about: str  # one line for people (`prosemc models`)
    entropy_coded: bool  # the header's entropy id picks its coder (else it must be "none")
    learned: bool = False  # trained weights, named by the header's codec.model_sha256
    per_image_params: tuple[str, ...] = ()  # codec.params keys that change with every image

    def decoder(self, codec_section: dict[str, Any], entropy_id: str, weights: Any = None) -> Codec:
        """The decoder for a header's codec section and entropy id; CodecError when they do not fit this codec.

        weights: a learned codec's weights file (default: the shipped file whose sha256 the header names).
        """
        options: dict[str, Any] = {}
        if self.entropy_coded:
            options["coder_id"] = entropy_id
        elif entropy_id != _UNCODED_ENTROPY_ID:
            raise CodecError(
                f"codec {self.codec_id!r} codes no symbols, so its entropy id must be {_UNCODED_ENTROPY_ID!r}, "
                f"got {entropy_id!r}"
            )
        if self.learned:  # refuses a file made with other weights, naming both hashes
            if codec_section.get("model_sha256") is None:
                raise CodecError(f"the file header names no codec.model_sha256, which a learned codec ({self.codec_id}) "
                                 "requires to pick its weights; the file is corrupt or hostile, re-encode it")
            options["model_sha256"] = codec_section.get("model_sha256")
            options["weights"] = weights
        return make_codec(self.name, **options)


CODECS: tuple[CodecRecord, ...] = (
    CodecRecord("metaae", "metaae/1", _metaae,
                "Meta AutoEncoder metaae/1: trained weights per model (shipped: lite, lite-dense); the default for both",
                entropy_coded=True, learned=True),
    CodecRecord("baseline", "sr-baseline/1", _baseline,
                "sr-baseline/1: training-free successive refinement, 5 progressive layers; any model's tokens",
                entropy_coded=True, per_image_params=("steps", "clip")),
    CodecRecord("raw-f32", "raw-f32/1", _raw_f32, "raw-f32/1: float32 tokens, lossless, one layer (a reference)",
                entropy_coded=False),
    CodecRecord("raw-f16", "raw-f16/1", _raw_f16, "raw-f16/1: float16 tokens, one layer (a reference)",
                entropy_coded=False),
    CodecRecord("int8", "int8/1", _int8, "int8/1: per-token int8 quantisation, one layer (a reference)",
                entropy_coded=False),
)
_UNCODED_ENTROPY_ID = "none"  # = raw.RAW_CODER_ID, kept here so this module imports no codec


def codec_names() -> list[str]:
    """Every codec's CLI name, in registry order."""
    return [record.name for record in CODECS]


def codec_record(name: str) -> CodecRecord:
    """The record of a CLI name; CodecError listing the choices."""
    for record in CODECS:
        if record.name == name:
            return record
    raise CodecError(f"unknown codec {name!r}; choose one of: {', '.join(codec_names())}")


def record_for_id(codec_id: Any) -> CodecRecord | None:
    """The record of a header's codec id, or None."""
    return next((record for record in CODECS if record.codec_id == codec_id), None)


def make_codec(name: str, **options: Any) -> Codec:
    """The codec a CLI name stands for, built with options (e.g. layers=5 for "baseline")."""
    record = codec_record(name)
    try:
        return record.factory(**options)
    except TypeError as error:
        raise CodecError(f"codec {name!r} does not take these options ({error})") from error


def codec_from_header(codec_section: dict[str, Any], entropy_section: dict[str, Any], weights: Any = None) -> Codec:
    """The decoder for a .psem header's "codec" and "entropy" sections; CodecError naming an unknown id.

    weights: a learned codec's weights file (default: the shipped file whose sha256 the header names).
    """
    codec_id = codec_section.get("id") if isinstance(codec_section, dict) else None
    entropy_id = entropy_section.get("id") if isinstance(entropy_section, dict) else None
    record = record_for_id(codec_id)
    if record is None:
        raise CodecError(
            f"unknown codec id {codec_id!r} in the file header (this prosemc knows: "
            f"{', '.join(sorted(r.codec_id for r in CODECS))}); upgrade prosemc, or re-encode the file with a known codec"
        )
    if not isinstance(entropy_id, str):
        raise CodecError(f"the file header names no entropy coder id for codec {codec_id!r} (got {entropy_id!r})")
    return record.decoder(codec_section, entropy_id, weights)
