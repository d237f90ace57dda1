"""The Meta AutoEncoder's weights file: one schema (format ids, tensor names, metadata keys, context counts), its
reader and its byte-stable writer, shared by the codec (numpy inference), training (`prosemc fit`) and the edge
bundle export.

A weights file is a safetensors file (no pickle) named everywhere by the sha256 of its bytes; `.psem` headers
carry that hash as `codec.model_sha256`. Two layouts exist, told apart by the `format` metadata key:

    prosemc-metaae/1        pooled codec of `lite` (prosemc.codec.metaae): tensors enc.k.i.weight|scale,
                            enc.k.i.bias, dec.k.i.*, latent.mean, latent.scale, tables.class|radius|counts and
                            refine.pred.weight|bias, refine.edges|group|counts|offsets|sizes; metadata format, model,
                            variant, levels, token_dim, clip, pooled, refine_steps, refine_deadzone, refine_offset,
                            refine_fill, config (JSON), training (JSON)
    prosemc-metaae-token/1  per-token codec of any model (prosemc.codec.metaae_token), TOKEN_TENSORS below;
                            metadata format, model, token_dim, latent_dim, deadzone, offset, config, training

Context counts: a per-token layer has TOKEN_CONTEXTS tables for coefficients not yet significant
(CHANNEL_BUCKETS x NEIGHBOUR_STATES x ACTIVITY_STATES) and one for refinement symbols; a pooled refinement level
has pooled_refine_contexts(groups, buckets) + 1 (channel peaks, coefficients, then refinement symbols).
"""

from __future__ import annotations

import hashlib
import json
import os
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from prosemc.errors import CodecError

FORMAT_POOLED = "prosemc-metaae/1"
FORMAT_TOKEN = "prosemc-metaae-token/1"
MAX_WEIGHTS_BYTES = 256 << 20

# per-token layout: tensor name -> (dtype kind, what it holds)
TOKEN_TENSORS = {
    "enc.weight": ("f32", "[D, L] encoder: latent z = x @ enc.weight + enc.bias"),
    "enc.bias": ("f32", "[L]"),
    "enc.limit": ("f32", "[L] the encoder clips z_c to +-limit_c (keeps symbols inside the tables)"),
    "dec.weight": ("f32", "[L, D] decoder: tokens' = z' @ dec.weight + dec.bias"),
    "dec.bias": ("f32", "[D]"),
    "schedule.step": ("f32", "[K] quantiser step of layer k (latent units)"),
    "schedule.start": ("i32", "[K] first latent channel layer k codes"),
    "schedule.stop": ("i32", "[K] one past the last latent channel layer k codes"),
    "tables.counts": ("i32", "[K, C + 1, A] integer frequencies (C insignificant contexts, then refinement)"),
    "tables.offset": ("i32", "[K, C + 1] lowest symbol of each table"),
    "tables.size": ("i32", "[K, C + 1] alphabet size of each table"),
    "quality.insignificant": ("f32", "[K, L] mean z_c^2 of coefficients still insignificant after layer k"),
    "quality.calibration": ("f32", "[K, 2] per-token cosine = a_k + b_k * analytic estimate (error head)"),
}
CHANNEL_BUCKETS = 4  # position of the channel inside the layer's range, in quarters
NEIGHBOUR_STATES = 3  # significant 4-neighbours (token grid, same channel) before the layer: 0, 1, 2+
ACTIVITY_STATES = 4  # significant coefficients already in the token (per-token: 0, <= L/8, <= L/2, more)
TOKEN_CONTEXTS = CHANNEL_BUCKETS * NEIGHBOUR_STATES * ACTIVITY_STATES
PEAK_CAP = 3  # pooled refinement: per-channel peak |symbol| of not-yet-significant tokens, capped
POOLED_ACTIVITY_EDGES = (0, 8, 32)  # pooled refinement activity: 0, 1-8, 9-32, 33+ significant values in the token


def pooled_refine_contexts(groups: int, buckets: int) -> int:
    """Tables per pooled refinement level before the refinement table: 2 G B channel-peak + coefficient contexts."""
    return 2 * groups * buckets + PEAK_CAP * buckets * NEIGHBOUR_STATES * ACTIVITY_STATES
MAX_TABLE_WEIGHT = (1 << 24) - (1 << 14)  # every symbol costs >= 0.0014 bits: decoding work is bounded by bytes
MIN_SYMBOL_BITS = -float(np.log2(MAX_TABLE_WEIGHT / float(1 << 24)))

_DTYPES = {np.dtype("float32"): "F32", np.dtype("int32"): "I32", np.dtype("int64"): "I64"}


def shipped_weights_path(model_name: str) -> Path:
    """prosemc/data/metaae-<model>.safetensors: the weights shipped for a built-in model (may not exist)."""
    return Path(str(resources.files("prosemc").joinpath(f"data/metaae-{model_name}.safetensors")))


def shipped_weights() -> list[Path]:
    """Every weights file shipped in the package, sorted by name."""
    folder = Path(str(resources.files("prosemc").joinpath("data")))
    return sorted(folder.glob("metaae-*.safetensors"))


def read_bytes(path: str | os.PathLike[str]) -> bytes:
    """The bytes of a weights file (size-capped); CodecError naming the file and the fix otherwise."""
    path = Path(path)
    try:
        size = path.stat().st_size
        if size > MAX_WEIGHTS_BYTES:
            raise CodecError(f"metaae weights {path} are {size} bytes, over the {MAX_WEIGHTS_BYTES} limit")
        return path.read_bytes()
    except OSError as error:
        raise CodecError(
            f"cannot read the metaae weights {path} ({error.strerror or error}); pass an existing weights file, "
            "or train one with `prosemc fit`"
        ) from None


def parse(data: bytes, name: str = "<bytes>") -> tuple[dict[str, np.ndarray], dict[str, str], str]:
    """(tensors, metadata, sha256) of weights bytes; CodecError unless they are a prosemc metaae weights file."""
    from safetensors import SafetensorError
    from safetensors.numpy import load

    try:
        tensors = load(data)
        length = int.from_bytes(data[:8], "little")
        metadata = json.loads(data[8 : 8 + length]).get("__metadata__") or {}
        if not isinstance(metadata, dict):
            raise ValueError("__metadata__ is not an object")
    except (SafetensorError, ValueError, OSError, json.JSONDecodeError) as error:
        raise CodecError(f"{name} is not a metaae safetensors weights file ({error}); re-run `prosemc fit`") from None
    if metadata.get("format") not in (FORMAT_POOLED, FORMAT_TOKEN):
        raise CodecError(f"{name} is not a metaae weights file (format {metadata.get('format')!r}, expected "
                         f"{FORMAT_POOLED} or {FORMAT_TOKEN}); re-run `prosemc fit`")
    return tensors, metadata, hashlib.sha256(data).hexdigest()


def to_bytes(tensors: dict[str, np.ndarray], metadata: dict[str, str]) -> bytes:
    """A safetensors file with keys, metadata and JSON in sorted order, so equal weights give equal bytes.

    (safetensors' own writer orders the metadata by a per-process hash, so the same weights hashed differently.)
    """
    header: dict[str, Any] = {"__metadata__": dict(sorted(metadata.items()))}
    blobs, offset = [], 0
    for name in sorted(tensors):
        array = np.ascontiguousarray(tensors[name])
        if array.dtype not in _DTYPES:
            raise ValueError(f"tensor {name} has dtype {array.dtype}, not one of {list(_DTYPES)}")
        blob = array.astype(array.dtype.newbyteorder("<"), copy=False).tobytes()
        header[name] = {"dtype": _DTYPES[array.dtype], "shape": list(array.shape), "data_offsets": [offset, offset + len(blob)]}
        blobs.append(blob)
        offset += len(blob)
    text = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    return len(text).to_bytes(8, "little") + text + b"".join(blobs)


def write(path: str | os.PathLike[str], tensors: dict[str, np.ndarray], metadata: dict[str, str]) -> str:
    """Write a weights file atomically (temporary file, then rename); return its sha256 (hex)."""
    data = to_bytes(tensors, metadata)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    partial.write_bytes(data)
    os.replace(partial, path)
    return hashlib.sha256(data).hexdigest()


def token_tensors_valid(tensors: dict[str, np.ndarray], metadata: dict[str, str]) -> None:
    """ValueError naming the first tensor of a per-token weights file with a wrong dtype, shape or value range."""
    for name, (kind, _) in TOKEN_TENSORS.items():
        if name not in tensors:
            raise ValueError(f"missing tensor {name}")
        array = tensors[name]
        integer = np.issubdtype(array.dtype, np.integer)
        if integer != (kind == "i32") or (not integer and not np.isfinite(array).all()):
            raise ValueError(f"tensor {name} must be {'integers' if kind == 'i32' else 'finite floats'}")
    dim, latent = int(metadata["token_dim"]), int(metadata["latent_dim"])
    layers = tensors["schedule.step"].shape[0]
    expected = {
        "enc.weight": (dim, latent), "enc.bias": (latent,), "enc.limit": (latent,), "dec.weight": (latent, dim),
        "dec.bias": (dim,), "schedule.step": (layers,), "schedule.start": (layers,), "schedule.stop": (layers,),
        "tables.offset": (layers, TOKEN_CONTEXTS + 1), "tables.size": (layers, TOKEN_CONTEXTS + 1),
        "quality.insignificant": (layers, latent), "quality.calibration": (layers, 2),
    }
    for name, shape in expected.items():
        if tensors[name].shape != shape:
            raise ValueError(f"tensor {name} has shape {tensors[name].shape}, expected {shape}")
    counts = tensors["tables.counts"]
    if counts.ndim != 3 or counts.shape[:2] != (layers, TOKEN_CONTEXTS + 1):
        raise ValueError(f"tensor tables.counts has shape {counts.shape}")
