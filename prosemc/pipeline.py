"""The main job as library calls: image -> `.psem` on the edge; `.psem` prefix -> tokens -> answer on the cloud.

    encode_image:  image --model.encode_image--> tokens [N, D] --codec.encode--> layers --PsemWriter--> stream
    read_tokens:   stream --PsemReader--> first k layers --codec.decode--> tokens' [N, D]
    answer:        tokens' --model.answer--> Answer
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, BinaryIO

import numpy as np

from prosemc.codec import Codec, codec_from_header, make_codec
from prosemc.errors import InputError, ModelError
from prosemc.format import PsemHeader, PsemReader, PsemWriter, ReadEnd
from prosemc.format.spec import CHUNK_FRAME, CRC
from prosemc.format.writer import encode_header
from prosemc.models import DEFAULT_MODEL, Answer, EdgeTokens, VisionLanguageModel, load_model


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


def default_codec(model_name: str) -> str:
    """The codec `encode` uses unless told: the trained Meta AutoEncoder for `lite`, the baseline otherwise."""
    return "metaae" if model_name == DEFAULT_MODEL else "baseline"


def layers_within_budget(header_bytes: int, layer_bytes: list[int], max_layers: int | None, max_bytes: int | None) -> int:
    """The largest k such that the first k layers respect both limits (0 if even layer 1 does not fit)."""
    k, total = 0, header_bytes
    for size in layer_bytes[: max_layers if max_layers is not None else len(layer_bytes)]:
        if max_bytes is not None and total + size > max_bytes:
            break
        total += size
        k += 1
    return k


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
    max_layers: int | None = None,
    max_bytes: int | None = None,
) -> EncodeReport:
    """Encode an RGB PIL image into a `.psem` stream, keeping the largest layer prefix within the limits."""
    timings: dict[str, float] = {}
    start = time.perf_counter()
    edge = model.encode_image(image)
    timings["vision_encoder"] = (time.perf_counter() - start) * 1e3
    codec = make_codec(codec_name or default_codec(model.model_id))
    start = time.perf_counter()
    header, layers = build_psem(edge, model.model_id, codec)
    timings["codec"] = (time.perf_counter() - start) * 1e3
    header_bytes = len(encode_header(header)[0])
    layer_bytes = [CHUNK_FRAME.size + len(p) + CRC.size for p in layers]
    keep = layers_within_budget(header_bytes, layer_bytes, max_layers, max_bytes)
    if keep == 0:
        need = header_bytes + layer_bytes[0]
        raise InputError(f"--max-bytes {max_bytes} is too small: the header and layer 1 need {need} bytes; "
                         f"raise it to at least {need}")
    writer = PsemWriter(out, header)
    for payload in layers[:keep]:
        writer.add_layer(payload)
    return EncodeReport(model.model_id, codec.codec_id, header.token_shape, header_bytes, layer_bytes, keep,
                        writer.bytes_written, timings)


@dataclass
class DecodedTokens:
    """Tokens rebuilt from the layers that arrived, with the header and how the stream ended."""

    header: PsemHeader
    edge: EdgeTokens  # tokens' [N, D] float32 + the model's side info from the header
    layers_used: int
    bytes_used: int
    end: ReadEnd


def read_tokens(stream: BinaryIO, *, max_layers: int | None = None, max_bytes: int | None = None) -> DecodedTokens:
    """Read a `.psem` stream (file, pipe, socket); decode its longest layer prefix within both limits."""
    reader = PsemReader(stream)
    header = reader.header
    codec = codec_from_header(header.codec, header.entropy)
    layers: list[bytes] = []
    bytes_used = len(reader.header_bytes)
    for chunk in reader:
        within = (max_layers is None or len(layers) < max_layers) and (max_bytes is None or chunk.end <= max_bytes)
        if chunk.is_layer and within and len(layers) == chunk.seq:
            layers.append(chunk.payload)
            bytes_used = chunk.end
    end = reader.end
    assert end is not None
    if not layers and end.layers and max_bytes is not None:
        raise InputError(f"--max-bytes {max_bytes} leaves no complete layer; raise it")
    return decode_prefix(header, codec, layers, bytes_used, end)


def decode_prefix(header: PsemHeader, codec: Codec, layers: list[bytes], bytes_used: int, end: ReadEnd) -> DecodedTokens:
    """Decode the layer payloads that arrived (a stream read layer by layer, e.g. by the server)."""
    if not layers:
        raise InputError(f"the .psem holds no complete layer ({end.describe()}); send at least layer 1")
    if len(header.token_shape) != 2:
        raise InputError(f"tokens in this .psem are {len(header.token_shape)}-D; prosemc decodes [N, D] tokens only")
    n, d = header.token_shape
    tokens = codec.decode(header.codec_params, layers, (n, d))
    info = header.metadata.get("info", {})
    return DecodedTokens(header, EdgeTokens(tokens, info if isinstance(info, dict) else {}), len(layers), bytes_used, end)


def answer_report(decoded: DecodedTokens, answer: Answer, timings_ms: dict[str, float]) -> dict[str, Any]:
    """The JSON report of an answer (`prosemc query --json`, the server's reply): stable keys."""
    labels = answer.labels
    return {
        "answer": answer.text, "model": decoded.header.encoder, "codec": decoded.header.codec_id,
        "labels": [{"label": name, "probability": round(float(p), 4)} for name, p in labels] if labels else None,
        "layers_used": decoded.layers_used, "layers_declared": decoded.header.layers, "bytes_used": decoded.bytes_used,
        "status": decoded.end.status, "timings_ms": {k: round(v, 2) for k, v in timings_ms.items()},
    }


def model_for(encoder_id: str, requested: str | None = None) -> VisionLanguageModel:
    """The model that decodes tokens of `encoder_id` (a header's "encoder"): `requested`, else the one it names.

    The built-in model is found by its name; a Hugging Face id (`<name>@<config hash>-<weights hash>`) whose
    name is a hub id is looked up in the local HF cache; one made from a folder needs `requested`. The model
    must be the same checkpoint (same hashes, whatever its folder is called), else it is refused.
    """
    from prosemc.models.hf.checkpoint import recorded_hub_id, same_checkpoint

    if requested is None:
        requested = encoder_id if encoder_id == DEFAULT_MODEL else recorded_hub_id(encoder_id)
        if requested is None:
            raise ModelError(f"this .psem was made by model {encoder_id!r} from a local folder; pass that checkpoint "
                             "(hub id or folder) with --model")
    model = load_model(requested)
    if not same_checkpoint(encoder_id, model.model_id):
        raise ModelError(f"this .psem was made by model {encoder_id!r}, not {model.model_id!r}; query it with that "
                         f"model (or re-encode the image with --model {requested})")
    return model
