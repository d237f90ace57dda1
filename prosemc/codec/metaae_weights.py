"""The Meta AutoEncoder's weights file: one schema (format ids, tensor names, metadata keys, context counts), its
reader and its byte-stable writer, shared by the codec (numpy inference), training (`prosemc fit`) and the edge
bundle export.

A weights file is a safetensors file (no pickle) named everywhere by the sha256 of its bytes; `.psem` headers
carry that hash as `codec.model_sha256`. Three layouts exist, told apart by the `format` metadata key:

    prosemc-metaae/1        pooled codec of `lite` (prosemc.codec.metaae): tensors enc.k.i.weight|scale,
                            enc.k.i.bias, dec.k.i.*, latent.mean, latent.scale, tables.class|radius|counts and
                            refine.pred.weight|bias, refine.edges|group|counts|offsets|sizes; metadata format, model,
                            variant, levels, token_dim, clip, pooled, refine_steps, refine_deadzone, refine_offset,
                            refine_fill, config (JSON), training (JSON)
    prosemc-metaae-token/1  per-token codec of any model, round 1 (prosemc.codec.metaae_token), TOKEN_TENSORS
                            below; metadata format, model, token_dim, latent_dim, deadzone, offset, config, training.
                            Still decoded (files encoded with it stay readable); `prosemc fit` writes token/2.
    prosemc-metaae-token/2  per-token codec of any model (prosemc.codec.metaae_planes): DCT over the model's token
                            grid + per-band rotations, bit-plane layers per block, PLANE_TENSORS below; metadata
                            format, model, token_dim, grid_rows, grid_cols, delta, config, training

Context counts: a token/1 layer has TOKEN_CONTEXTS tables for coefficients not yet significant
(CHANNEL_BUCKETS x NEIGHBOUR_STATES x ACTIVITY_STATES) and one for refinement symbols; token/2 has PLANE_CONTEXTS
tables shared by all layers (SIGNIFICANCE_CONTEXTS, then one per refinement depth); a pooled refinement level
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
FORMAT_PLANES = "prosemc-metaae-token/2"
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
# token/2 layout: tensor name -> (dtype kind, what it holds); P rotation groups, F = grid_rows * grid_cols
# frequencies (1 per token without a grid), NB band and NC channel groups, B = NB * NC blocks, K layers, C contexts
PLANE_TENSORS = {
    "transform.mean": ("f32", "[D] token mean"),
    "transform.rotation": ("f32", "[P, D, D] orthonormal rotation of each band group's frequencies (columns)"),
    "transform.gain": ("f32", "[D] coefficient scale of each rotated channel"),
    "transform.group_start": ("i32", "[P] first u + v of each rotation's band group (0 without a grid)"),
    "coef.log_sigma": ("i32", "[F, D] round(2 log2 sigma) of each coefficient's trained deviation"),
    "block.band_start": ("i32", "[NB] first u + v of each band group of blocks"),
    "block.channel_start": ("i32", "[NC] first channel of each channel group of blocks"),
    "block.limit": ("f32", "[B] the encoder clips a block's coefficients to +-limit"),
    "schedule.level": ("i32", "[K, B] step level of each block after layer k (-1: not coded yet)"),
    "schedule.step0": ("f32", "[1] step of level 0, a power of two; level j has step0 / 2**j"),
    "tables.counts": ("i32", "[C, A] integer frequencies of each context's table"),
    "tables.offset": ("i32", "[C] lowest symbol of each table"),
    "tables.size": ("i32", "[C] alphabet size of each table"),
    "quality.insignificant": ("f32", "[K, B] mean c^2 of a block's coefficients still insignificant after layer k"),
    "quality.calibration": ("f32", "[K, 2] per-token cosine = a_k + b_k * analytic estimate (error head)"),
}
RATIO_BUCKETS = 10  # round(2 log2(sigma / step)) + RATIO_OFFSET, clipped to 0..9: how big a coefficient is for its step
RATIO_OFFSET = 7
FIRST_STATES = 2  # the block is coded for the first time (symbols up to its limit) or was coded before
SIGNIFICANCE_CONTEXTS = FIRST_STATES * RATIO_BUCKETS  # context of a coefficient not yet significant
MAX_HALVINGS = 12  # a layer refines a block by at most this many halvings of its step (one refinement table each)
PLANE_CONTEXTS = SIGNIFICANCE_CONTEXTS + MAX_HALVINGS
MAX_LEVEL = 24  # step levels 0..24: magnitudes stay far inside int64
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
    if metadata.get("format") not in (FORMAT_POOLED, FORMAT_TOKEN, FORMAT_PLANES):
        raise CodecError(f"{name} is not a metaae weights file (format {metadata.get('format')!r}, expected "
                         f"{FORMAT_POOLED}, {FORMAT_TOKEN} or {FORMAT_PLANES}); re-run `prosemc fit`")
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
    _kinds_valid(tensors, TOKEN_TENSORS)
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


def plane_tensors_valid(tensors: dict[str, np.ndarray], metadata: dict[str, str]) -> None:
    """ValueError naming the first tensor of a token/2 weights file with a wrong dtype, shape or value range."""
    _kinds_valid(tensors, PLANE_TENSORS)
    dim, rows, cols = (int(metadata[key]) for key in ("token_dim", "grid_rows", "grid_cols"))
    if not 1 <= dim <= 65536 or not 0 <= rows <= 256 or not 0 <= cols <= 256 or (rows == 0) != (cols == 0):
        raise ValueError(f"token_dim {dim} or grid {rows} x {cols} out of range")
    groups, bands, channels = (tensors[n].shape[0] for n in ("transform.group_start", "block.band_start",
                                                            "block.channel_start"))
    layers = tensors["schedule.level"].shape[0]
    blocks = bands * channels
    expected = {
        "transform.mean": (dim,), "transform.rotation": (groups, dim, dim), "transform.gain": (dim,),
        "coef.log_sigma": (max(rows * cols, 1), dim), "block.limit": (blocks,), "schedule.level": (layers, blocks),
        "schedule.step0": (1,), "tables.offset": (PLANE_CONTEXTS,), "tables.size": (PLANE_CONTEXTS,),
        "quality.insignificant": (layers, blocks), "quality.calibration": (layers, 2),
    }
    for name, shape in expected.items():
        if tensors[name].shape != shape:
            raise ValueError(f"tensor {name} has shape {tensors[name].shape}, expected {shape}")
    counts = tensors["tables.counts"]
    if counts.ndim != 2 or counts.shape[0] != PLANE_CONTEXTS:
        raise ValueError(f"tensor tables.counts has shape {counts.shape}")
    for name in ("transform.group_start", "block.band_start", "block.channel_start"):
        starts = tensors[name].astype(np.int64)
        if starts[0] != 0 or (np.diff(starts) <= 0).any():
            raise ValueError(f"tensor {name} must start at 0 and increase")
    if int(tensors["block.channel_start"][-1]) >= dim:
        raise ValueError("block.channel_start goes past token_dim")


def _kinds_valid(tensors: dict[str, np.ndarray], schema: dict[str, tuple[str, str]]) -> None:
    for name, (kind, _) in schema.items():
        if name not in tensors:
            raise ValueError(f"missing tensor {name}")
        array = tensors[name]
        integer = np.issubdtype(array.dtype, np.integer)
        if integer != (kind == "i32") or (not integer and not np.isfinite(array).all()):
            raise ValueError(f"tensor {name} must be {'integers' if kind == 'i32' else 'finite floats'}")
