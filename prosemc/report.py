"""The JSON vocabulary of every `--json` report (schema 1): the same key for the same thing in every command.

    {"schema": 1, "command": "encode",                       which document this is
     "model": "lite",                                        the model id a .psem names (header "encoder")
     "codec": {"id": "metaae/1", "name": "metaae",           a codec object (name: the --codec choice)
               "weights_sha256": "…" | null, "entropy": "constriction-ans/1"},
     "tokens": {"shape": [49, 1280], "dtype": "float32"},    a tokens object
     "layers": [{"index": 1, "bytes": 284, "cumulative_bytes": 530}, …],   a list, one object per layer
     "header_bytes": 246, "bytes": 1622, …}                  `bytes`: the total size of what the object describes

Documented in docs/json.md and checked against docs/json.schema.json. These builders know nothing of the command
line: the CLI (and the server) add their own fields around them.
"""

from __future__ import annotations

from typing import Any, Iterable, Sequence

SCHEMA_VERSION = 1


def document(command: str, **fields: Any) -> dict[str, Any]:
    """A report: `schema` and `command` first, then `fields`."""
    return {"schema": SCHEMA_VERSION, "command": command, **fields}


def codec_object(codec: dict[str, Any] | None, entropy: dict[str, Any] | None = None,
                 params: bool = False) -> dict[str, Any] | None:
    """The codec object of a header's "codec" (+ "entropy") section; None when the header is unknown.

    params: also carry the codec's parameters (what `info` shows).
    """
    if codec is None:
        return None
    from prosemc.codec import record_for_id

    record = record_for_id(codec.get("id"))
    entropy_id = entropy.get("id") if isinstance(entropy, dict) else None
    built = {"id": codec.get("id"), "name": record.name if record else None,
             "weights_sha256": codec.get("model_sha256"), "entropy": entropy_id}
    if params:
        built["params"] = codec.get("params") or {}
    return built


def tokens_object(shape: Sequence[int] | None, dtype: str = "float32") -> dict[str, Any] | None:
    """{"shape": [N, D], "dtype": ...}; None when the shape is unknown."""
    return None if shape is None else {"shape": [int(n) for n in shape], "dtype": dtype}


def layers_list(sizes: Iterable[int], header_bytes: int, **per_layer: Any) -> list[dict[str, Any]]:
    """One object per layer: 1-based index, its bytes in the file and the file's bytes up to its end.

    per_layer: extra keys every layer object gets (e.g. checksum="ok").
    """
    layers, end = [], header_bytes
    for index, size in enumerate(sizes, start=1):
        end += size
        layers.append({"index": index, "bytes": int(size), "cumulative_bytes": end, **per_layer})
    return layers


def labels_list(labels: Sequence[tuple[str, float]] | None) -> list[dict[str, Any]] | None:
    """[{"label": name, "probability": p}] of (name, probability) pairs, None when the model gives none."""
    return [{"label": name, "probability": round(float(p), 4)} for name, p in labels] if labels else None


def milliseconds(timings: dict[str, float]) -> dict[str, float]:
    """A `timings_ms` object: every step's milliseconds rounded to 0.01."""
    return {step: round(float(ms), 2) for step, ms in timings.items()}


def psem_fields(header: Any, layer_sizes: Sequence[int], header_bytes: int, total_bytes: int | None = None,
                **extra: Any) -> dict[str, Any]:
    """What every report about a .psem (or the prefix of one) says: model, codec, tokens, layers and bytes.

    header: a PsemHeader, or None for a compact file whose profile is unknown. layer_sizes: file bytes of the
    layers this report is about (written, kept, used). total_bytes: the bytes they span in the file, when
    extension chunks make it more than header and layers. extra: more fields (form, profile, ...).
    """
    fields: dict[str, Any] = {
        "model": header.encoder if header else None,
        "codec": codec_object(header.codec, header.entropy) if header else None,
        "tokens": tokens_object(header.token_shape, header.token_dtype) if header else None,
        "layers_declared": header.layers if header else None,
        "header_bytes": header_bytes,
        "layers": layers_list(layer_sizes, header_bytes),
        "bytes": total_bytes if total_bytes is not None else header_bytes + sum(layer_sizes),
    }
    return {**fields, **extra}


def decoded_fields(decoded: Any) -> dict[str, Any]:
    """The report fields of a DecodedTokens (prosemc.pipeline): the .psem fields of the layers used, status, stalled."""
    return {**psem_fields(decoded.header, decoded.layer_bytes, decoded.header_bytes, decoded.bytes_used),
            "status": decoded.end.status, "stalled": decoded.stalled_after_s is not None}


def answer_report(decoded: Any, answer: Any, timings_ms: dict[str, float], **fields: Any) -> dict[str, Any]:
    """The `query` report of an answer from decoded tokens (`prosemc query --json`, the server's reply).

    fields: what the caller knows besides (input, question, ...), placed after the envelope.
    """
    return document("query", **fields, answer=answer.text, labels=labels_list(answer.labels),
                    **decoded_fields(decoded), timings_ms=milliseconds(timings_ms))
