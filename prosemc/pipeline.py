"""The main job as library calls: image -> `.psem` on the edge; `.psem` prefix -> tokens -> answer on the cloud.

    encode_image:  image --model.encode_image--> tokens [N, D] --codec.encode--> layers --PsemWriter--> stream
    read_tokens:   stream (idle timeout) --PsemReader--> header --codec bounds--> first k layers --codec.decode-->
                   tokens' [N, D]
    answer:        tokens' --model.answer--> Answer

Files are written in the full form unless `compact=True` (which names the header's profile instead), and read in
either form; a compact one needs its profile in the store (default: `prosemc.profiles.default_store()`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, BinaryIO, Callable

import numpy as np

from prosemc.codec import Codec, codec_from_header, make_codec
from prosemc.errors import CodecError, InputError, ModelMismatchError
from prosemc.format import (
    PrefixBudget,
    ProfileStore,
    PsemError,
    PsemHeader,
    PsemReader,
    PsemWriter,
    ReadEnd,
    chunk_sizes,
    header_size,
    layers_within,
)
from prosemc.format.idle import IdleTimeoutStream, with_idle_timeout
from prosemc.format.spec import LAYER_TYPE
from prosemc.models import BUILTIN_MODELS, EdgeTokens, VisionLanguageModel, load_model
from prosemc.profiles import default_store, profile_of
from prosemc.text import plural


@dataclass
class EncodeReport:
    """What `encode_image` wrote: layer sizes in the file, what the budget kept, and step timings."""

    model: str
    codec: str
    token_shape: tuple[int, ...]
    header_bytes: int
    layer_bytes: list[int]  # file bytes of every layer the codec produced
    layers_written: int
    bytes_written: int
    timings_ms: dict[str, float] = field(default_factory=dict)
    profile_id: str | None = None  # hex id of the profile a compact file names (None: full form)
    header: PsemHeader | None = None  # the full header (what a compact file's profile + patch stand for)
    entropy_coder: str | None = None  # the entropy coder implementation used ("constriction", "portable", "numba")
    runtime: str = "torch"  # what ran the vision encoder: "torch", or "onnxruntime" for an exported bundle


def default_codec(model_name: str) -> str:
    """The codec `encode` uses unless told: the trained Meta AutoEncoder where prosemc ships weights for the model
    (`lite`: the pooled mean-token codec; `lite-dense`: the per-token one), the training-free baseline otherwise."""
    from prosemc.codec.metaae_weights import shipped_weights_path

    return "metaae" if shipped_weights_path(model_name).is_file() else "baseline"


def codec_for(codec_name: str, model_name: str, weights: str | None = None, compiled: bool = False) -> Codec:
    """The codec to encode model_name's tokens with: metaae with `weights` or the weights shipped for the model.
    compiled: the per-token metaae codec's compiled encoder (same bytes; pays off over hundreds of images)."""
    if codec_name == "metaae":
        return make_codec(codec_name, weights=weights, model=model_name, compiled=compiled)
    if weights is not None:
        raise InputError(f"--codec-weights applies to the metaae codec, not {codec_name!r}; drop it or use --codec metaae")
    return make_codec(codec_name)


def encoder_codec(model_id: str, codec_name: str | None = None, codec_weights: str | None = None,
                  compiled: bool = False) -> Codec:
    """The codec `encode_image` uses for model_id's tokens: codec_name, else metaae with codec_weights, else the
    model's default codec."""
    name = codec_name or ("metaae" if codec_weights else default_codec(model_id))
    return codec_for(name, model_id, codec_weights, compiled)


def build_psem(edge: EdgeTokens, model_id: str, codec: Codec,
               metadata: dict[str, Any] | None = None) -> tuple[PsemHeader, list[bytes]]:
    """Compress tokens [N, D] with `codec`: the self-describing header and the layer payloads, coarse to fine.

    The header carries no optional metadata beyond the model's side information: on a thin link, every byte
    of a 300-byte level counts.
    """
    encoded = codec.encode(np.ascontiguousarray(edge.tokens, dtype=np.float32))
    described = codec.describe()
    extra = {"info": edge.info} if edge.info else {}
    header = PsemHeader(
        encoder=model_id,
        token_shape=tuple(edge.tokens.shape),
        codec={**described["codec"], "params": encoded.params},
        entropy=described["entropy"],
        layers=len(encoded.layers),
        metadata={**(metadata or {}), **extra},
    )
    return header, encoded.layers


def encode_image(
    image: Any,
    out: BinaryIO,
    model: VisionLanguageModel,
    *,
    codec_name: str | None = None,
    codec_weights: str | None = None,
    max_layers: int | None = None,
    max_bytes: int | None = None,
    compact: bool = False,
    codec: Codec | None = None,
) -> EncodeReport:
    """Encode an RGB PIL image into a `.psem` stream, keeping the largest layer prefix within the limits.

    compact: write the compact form, which names the header's profile (`profile_of`) instead of spelling it out.
    codec: a codec instance (e.g. with an edge bundle's weights), used instead of codec_name / codec_weights.
    """
    timings: dict[str, float] = {}
    start = time.perf_counter()
    edge = model.encode_image(image)
    timings["vision_encoder"] = (time.perf_counter() - start) * 1e3
    codec = codec or encoder_codec(model.model_id, codec_name, codec_weights)
    start = time.perf_counter()
    header, layers = build_psem(edge, model.model_id, codec)
    timings["codec"] = (time.perf_counter() - start) * 1e3
    profile = profile_of(header) if compact else None
    header_bytes = header_size(header, profile)
    layer_bytes = chunk_sizes(layers, compact)
    keep = layers_within(header_bytes, layer_bytes, max_layers, max_bytes)
    if keep == 0:
        raise PrefixBudget(header_bytes, max_layers, max_bytes).too_small(layer_bytes[0])
    writer = PsemWriter(out, header, profile=profile)
    for payload in layers[:keep]:
        writer.add_layer(payload)
    coder = getattr(codec, "coder", None)
    return EncodeReport(model.model_id, codec.codec_id, header.token_shape, header_bytes, layer_bytes, keep,
                        writer.bytes_written, timings, writer.profile_id.hex() if writer.profile_id else None, header,
                        "numba" if getattr(codec, "compiled", False) else getattr(coder, "implementation", None),
                        getattr(model, "runtime", "torch"))


@dataclass
class DecodedTokens:
    """Tokens rebuilt from the layers that arrived, with the header and how the stream ended."""

    header: PsemHeader
    edge: EdgeTokens  # tokens' [N, D] float32 + the model's side info from the header
    layers_used: int
    bytes_used: int
    end: ReadEnd
    stalled_after_s: float | None = None  # the idle timeout that ended the stream, if the sender stalled
    layer_bytes: list[int] = field(default_factory=list)  # file bytes (frame included) of each layer used
    header_bytes: int = 0  # file bytes of the header


def read_tokens(stream: BinaryIO, *, max_layers: int | None = None, max_bytes: int | None = None,
                profiles: ProfileStore | None = None, codec_weights: str | None = None,
                idle_timeout: float | None = None,
                on_header: Callable[[PsemHeader], None] | None = None) -> DecodedTokens:
    """Read a `.psem` stream of either form (file, pipe, socket); decode its longest layer prefix within both limits.

    Before any layer is read, the header's layer count must match the codec's, and each layer is refused as it
    arrives if it is larger than the codec can produce; layers past the limits are verified, never kept.
    profiles: what resolves a compact file (default: this install's profiles, `default_store()`).
    codec_weights: the learned codec's weights file when the header names weights prosemc does not ship.
    idle_timeout: seconds without a byte (after the first) after which the stream counts as ended by a stalled
    sender; the complete layers so far are decoded (a stream that is an IdleTimeoutStream already, e.g. over a
    server's queue of body pieces, keeps its own limits). on_header(header) runs once the header is valid, e.g. to load
    the answering model while the layers are still arriving.
    """
    source = with_idle_timeout(stream, idle_timeout)
    try:
        reader = PsemReader(source, profiles=profiles if profiles is not None else default_store())
    except PsemError as error:
        if isinstance(source, IdleTimeoutStream) and source.stalled:
            raise InputError(f"the sender stalled: no byte for {source.stalled_after:g} s after {source.bytes_read} "
                             "bytes, before the .psem header was complete; check the sender, or wait longer") from error
        raise
    header = reader.header
    assert header is not None
    codec = codec_from_header(header.codec, header.entropy, weights=codec_weights)
    if len(header.token_shape) != 2:
        raise InputError(f"tokens in this .psem are {len(header.token_shape)}-D; prosemc decodes [N, D] tokens only")
    n, d = header.token_shape
    bounds = codec.max_layer_bytes(header.codec_params, (n, d))
    if len(bounds) != header.layers:
        raise CodecError(f"the header declares {plural(header.layers, 'layer')}, but its {header.codec_id} parameters "
                         f"describe {len(bounds)}; the file is corrupt or hostile, re-encode it")
    reader.max_layer_bytes = bounds
    if on_header is not None:
        on_header(header)

    first_layer_end = 0

    def wanted(kind: bytes, seq: int, end: int) -> bool:
        nonlocal first_layer_end
        if kind != LAYER_TYPE:
            return False
        first_layer_end = first_layer_end or end
        return (max_layers is None or seq < max_layers) and (max_bytes is None or end <= max_bytes)

    layers: list[bytes] = []
    layer_bytes: list[int] = []
    bytes_used = len(reader.header_bytes)
    for chunk in reader.chunks(wanted):  # read to the end even past the limits: every CRC is verified
        layers.append(chunk.payload)
        layer_bytes.append(chunk.size)
        bytes_used = chunk.end
    end = reader.end
    assert end is not None
    stalled = source.stalled_after if isinstance(source, IdleTimeoutStream) else None
    if not layers:
        if end.layers:
            budget = PrefixBudget(len(reader.header_bytes), max_layers, max_bytes)
            raise budget.too_small(first_layer_end - len(reader.header_bytes))
        why = f"the sender stalled for {stalled:g} s; " if stalled is not None else ""
        raise InputError(f"the .psem holds no complete layer ({why}{end.describe()}); send at least layer 1")
    decoded = decode_prefix(header, codec, layers, bytes_used, end, layer_bytes, len(reader.header_bytes))
    decoded.stalled_after_s = stalled
    return decoded


def decode_prefix(header: PsemHeader, codec: Codec, layers: list[bytes], bytes_used: int, end: ReadEnd,
                  layer_bytes: list[int] | None = None, header_bytes: int = 0) -> DecodedTokens:
    """Decode the layer payloads that arrived (a stream read layer by layer, e.g. by the server).

    layer_bytes, header_bytes: the file bytes of those layers (frames included) and of the header, for reports.
    """
    if not layers:
        raise InputError(f"the .psem holds no complete layer ({end.describe()}); send at least layer 1")
    if len(header.token_shape) != 2:
        raise InputError(f"tokens in this .psem are {len(header.token_shape)}-D; prosemc decodes [N, D] tokens only")
    n, d = header.token_shape
    tokens = codec.decode(header.codec_params, layers, (n, d))
    if not np.isfinite(tokens).all():
        raise CodecError(f"{header.codec_id} decoded non-finite tokens (inf or NaN); the file is corrupt or hostile")
    info = header.metadata.get("info", {})
    return DecodedTokens(header, EdgeTokens(tokens, info if isinstance(info, dict) else {}), len(layers), bytes_used,
                         end, None, list(layer_bytes or []), header_bytes)


def model_for(encoder_id: str, requested: str | None = None) -> VisionLanguageModel:
    """The model that decodes tokens of `encoder_id` (a header's "encoder"): `requested`, else the one it names.

    The built-in model is found by its name; a Hugging Face id (`<name>@<config hash>-<weights hash>`) whose
    name is a hub id is looked up in the local HF cache; one made from a folder needs `requested`. The model
    must be the same checkpoint (same hashes, whatever its folder is called), else it is refused.
    """
    from prosemc.models.hf.checkpoint import recorded_hub_id, same_checkpoint

    if requested is None:
        requested = encoder_id if encoder_id in BUILTIN_MODELS else recorded_hub_id(encoder_id)
        if requested is None:
            raise ModelMismatchError(f"this .psem was made by model {encoder_id!r} from a local folder; pass that "
                                     "checkpoint (hub id or folder) as the model to answer with")
    model = load_model(requested)
    if not same_checkpoint(encoder_id, model.model_id):
        raise ModelMismatchError(f"this .psem was made by model {encoder_id!r}, not {model.model_id!r}; query it with "
                                 f"that model (or re-encode the image with model {requested!r})")
    return model
