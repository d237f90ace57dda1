"""sr-baseline/1: round trips, progressive error, pinned bytes, hostile payloads and params."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from prosemc.codec.baseline import SuccessiveRefinementCodec
from prosemc.errors import CodecError


def sparse_relu6_tokens(seed: int, shape: tuple[int, int] = (49, 128)) -> np.ndarray:
    """Synthetic tokens shaped like the lite encoder's: ~90 % zeros, values in [0, 6], per-channel activity."""
    rng = np.random.default_rng(seed)
    channel_rate = rng.beta(0.3, 3.0, size=shape[1])
    active = rng.random(shape) < channel_rate
    return np.where(active, np.clip(rng.gamma(1.5, 1.2, size=shape), 0, 6), 0).astype(np.float32)


def golden_tokens() -> np.ndarray:
    values = ((np.arange(48, dtype=np.int64) * 37) % 17 - 4).astype(np.float32) / 3.0
    return np.where(values > 0, values, 0).reshape(6, 8).astype(np.float32)


def test_round_trip_shapes_dtypes_and_every_prefix() -> None:
    tokens = sparse_relu6_tokens(1)
    codec = SuccessiveRefinementCodec(layers=5)
    encoded = codec.encode(tokens)
    assert len(encoded.layers) == 5 and all(isinstance(layer, bytes) for layer in encoded.layers)
    json.dumps(encoded.params)  # travels in the header
    errors = []
    for count in range(1, 6):
        decoded = codec.decode(encoded.params, encoded.layers[:count], tokens.shape)
        assert decoded.shape == tokens.shape and decoded.dtype == np.float32
        errors.append(float(np.mean((decoded - tokens) ** 2)))
    assert all(fine < coarse for coarse, fine in zip(errors, errors[1:])), errors
    assert errors[-1] < 0.01 * float(np.mean(tokens**2))


def test_layer_one_alone_keeps_the_large_values() -> None:
    tokens = sparse_relu6_tokens(2)
    codec = SuccessiveRefinementCodec()
    encoded = codec.encode(tokens)
    coarse = codec.decode(encoded.params, encoded.layers[:1], tokens.shape)
    big = tokens > 0.8 * tokens.max()
    assert big.any() and np.abs(coarse[big] - tokens[big]).max() <= 0.5 * encoded.params["steps"][0]
    assert (coarse[tokens == 0] == 0).all()


def test_decoding_a_prefix_equals_decoding_a_shorter_encode() -> None:
    tokens = sparse_relu6_tokens(3)
    full = SuccessiveRefinementCodec(layers=5).encode(tokens)
    short = SuccessiveRefinementCodec(layers=3).encode(tokens)
    assert full.layers[:3] == short.layers
    assert full.params["steps"][:3] == short.params["steps"]


GOLDEN_LAYER_SIZES = [29, 31, 35, 29]
GOLDEN_SHA256 = "9e5b11f863edd39250227ead38713bdcb990ea34fb1f97c01604715fcee49f38"


def test_golden_bytes_are_pinned() -> None:
    encoded = SuccessiveRefinementCodec(layers=4, first_step=1.5).encode(golden_tokens())
    blob = json.dumps(encoded.params, sort_keys=True).encode() + b"".join(encoded.layers)
    assert [len(layer) for layer in encoded.layers] == GOLDEN_LAYER_SIZES
    assert hashlib.sha256(blob).hexdigest() == GOLDEN_SHA256
    step = encoded.params["steps"][0]
    coarse = SuccessiveRefinementCodec().decode(encoded.params, encoded.layers[:1], (6, 8))
    # layer 1: values >= 0.65 step become (1 - 0.35 + 0.5) * step, the middle of their quantiser cell
    expected = np.where(golden_tokens() >= 0.65 * step, np.float32(1.15 * step), 0).astype(np.float32)
    np.testing.assert_allclose(coarse, expected, rtol=1e-6)
    decoded = SuccessiveRefinementCodec().decode(encoded.params, encoded.layers, (6, 8))
    assert np.abs(decoded - golden_tokens()).max() <= 0.65 * encoded.params["steps"][-1]


@settings(max_examples=60, deadline=None)
@given(
    hnp.arrays(
        np.float32,
        hnp.array_shapes(min_dims=2, max_dims=2, min_side=1, max_side=12),
        elements=st.floats(width=32, allow_nan=False, allow_infinity=False),
    ),
    st.integers(1, 6),
)
def test_any_finite_tokens_round_trip_within_the_last_step(tokens: np.ndarray, layers: int) -> None:
    codec = SuccessiveRefinementCodec(layers=layers)
    encoded = codec.encode(tokens)
    decoded = codec.decode(encoded.params, encoded.layers, tokens.shape)
    assert decoded.shape == tokens.shape and decoded.dtype == np.float32 and np.isfinite(decoded).all()
    last_step = encoded.params["steps"][-1]
    error = np.abs(decoded.astype(np.float64) - tokens.astype(np.float64))
    assert error.max() <= last_step * (1 + 1e-6) + 1e-30


@pytest.mark.parametrize(
    "tokens",
    [
        np.zeros((4, 9), np.float32),
        np.full((3, 5), -2.5, np.float32),
        np.full((1, 1), 7.0, np.float32),
        np.array([[1e-42, -1e-42, 0.0]], np.float32),  # subnormals
        np.array([[3e38, -3e38], [1.0, 0.0]], np.float32),
    ],
)
def test_edge_case_tokens_round_trip(tokens: np.ndarray) -> None:
    codec = SuccessiveRefinementCodec()
    encoded = codec.encode(tokens)
    decoded = codec.decode(encoded.params, encoded.layers, tokens.shape)
    assert np.abs(decoded.astype(np.float64) - tokens).max() <= encoded.params["steps"][-1]


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_tokens_are_refused(bad: float) -> None:
    tokens = np.zeros((2, 3), np.float32)
    tokens[1, 2] = bad
    with pytest.raises(CodecError, match="1 non-finite values"):
        SuccessiveRefinementCodec().encode(tokens)


@pytest.mark.parametrize("shape", [(0, 4), (3, 0), (5,), (2, 2, 2)])
def test_wrong_token_shapes_are_refused(shape: tuple[int, ...]) -> None:
    with pytest.raises(CodecError, match=r"\[N, D\]"):
        SuccessiveRefinementCodec().encode(np.zeros(shape, np.float32))


@pytest.fixture(scope="module")
def encoded_sparse():
    tokens = sparse_relu6_tokens(4)
    return tokens, SuccessiveRefinementCodec().encode(tokens)


def test_truncated_layers_raise_codec_error(encoded_sparse) -> None:
    tokens, encoded = encoded_sparse
    codec = SuccessiveRefinementCodec()
    for index, layer in enumerate(encoded.layers):
        for cut in sorted({0, 1, 2, len(layer) // 2, len(layer) - 4, len(layer) - 1}):
            layers = list(encoded.layers[:index]) + [layer[:cut]]
            with pytest.raises(CodecError, match=f"layer {index + 1}"):
                codec.decode(encoded.params, layers, tokens.shape)


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_mutated_layers_raise_only_codec_error(encoded_sparse, data) -> None:
    tokens, encoded = encoded_sparse
    index = data.draw(st.integers(0, len(encoded.layers) - 1))
    layer = bytearray(encoded.layers[index])
    for _ in range(data.draw(st.integers(1, 4))):
        layer[data.draw(st.integers(0, len(layer) - 1))] = data.draw(st.integers(0, 255))
    layers = list(encoded.layers)
    layers[index] = bytes(layer)
    try:
        decoded = SuccessiveRefinementCodec().decode(encoded.params, layers, tokens.shape)
    except CodecError:
        return
    assert decoded.shape == tokens.shape and np.isfinite(decoded).all()


@settings(max_examples=150, deadline=None)
@given(st.lists(st.binary(max_size=300), min_size=1, max_size=5), st.integers(1, 60), st.integers(1, 60))
def test_random_layers_raise_only_codec_error(layers: list[bytes], rows: int, columns: int) -> None:
    params = SuccessiveRefinementCodec().encode(sparse_relu6_tokens(5, (rows, columns))).params
    try:
        decoded = SuccessiveRefinementCodec().decode(params, layers, (rows, columns))
    except CodecError:
        return
    assert decoded.shape == (rows, columns)


def test_layers_from_another_shape_are_refused(encoded_sparse) -> None:
    _, encoded = encoded_sparse
    with pytest.raises(CodecError, match="layer 1: corrupt layer payload"):
        SuccessiveRefinementCodec().decode(encoded.params, encoded.layers, (49, 127))


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda p: p.pop("steps"), "malformed"),
        (lambda p: p.update(steps="321"), "malformed"),
        (lambda p: p.update(steps=[1.0] * 100), "1..16 layer steps"),
        (lambda p: p.update(steps=[]), "1..16 layer steps"),
        (lambda p: p.update(steps=[1.0, 2.0]), "shrink by a ratio"),
        (lambda p: p.update(steps=[1.0, 0.001]), "shrink by a ratio"),
        (lambda p: p.update(steps=[float("nan")]), "finite positive"),
        (lambda p: p.update(steps=["x"]), "malformed"),
        (lambda p: p.update(clip=[1.0, 0.0]), "clip range"),
        (lambda p: p.update(deadzone_rounding=0.0), "deadzone_rounding"),
    ],
)
def test_malformed_params_are_refused(encoded_sparse, change, message: str) -> None:
    tokens, encoded = encoded_sparse
    params = json.loads(json.dumps(encoded.params))
    change(params)
    with pytest.raises(CodecError, match=message):
        SuccessiveRefinementCodec().decode(params, encoded.layers[:1], tokens.shape)


def test_more_layers_than_the_stream_has_are_refused(encoded_sparse) -> None:
    tokens, encoded = encoded_sparse
    with pytest.raises(CodecError, match="decodes 1..5 layers"):
        SuccessiveRefinementCodec().decode(encoded.params, encoded.layers + [b""], tokens.shape)
    with pytest.raises(CodecError, match="decodes 1..5 layers"):
        SuccessiveRefinementCodec().decode(encoded.params, [], tokens.shape)
    with pytest.raises(CodecError, match="layer 2 must be bytes, got NoneType"):
        SuccessiveRefinementCodec().decode(encoded.params, [encoded.layers[0], None], tokens.shape)


@pytest.mark.parametrize(
    "options, message",
    [({"layers": 0}, "layers"), ({"first_step": -1.0}, "first_step"), ({"step_ratio": 100.0}, "step_ratio"),
     ({"deadzone_rounding": 0.9}, "deadzone_rounding must be in"),
     ({"coder_id": "zstd/1"}, "unknown entropy coder id 'zstd/1'")],
)
def test_bad_options_are_refused(options: dict, message: str) -> None:
    with pytest.raises(CodecError, match=message):
        SuccessiveRefinementCodec(**options)


def test_oversized_claimed_shapes_are_refused_before_allocating(encoded_sparse) -> None:
    _, encoded = encoded_sparse
    with pytest.raises(CodecError, match=r"N\*D <= 2\*\*24"):
        SuccessiveRefinementCodec().decode(encoded.params, encoded.layers, (1 << 20, 1 << 20))
    with pytest.raises(CodecError, match="two integers"):
        SuccessiveRefinementCodec().decode(encoded.params, encoded.layers, (49,))


def test_portable_coder_gives_identical_layers() -> None:
    tokens = sparse_relu6_tokens(6, (49, 96))
    native = SuccessiveRefinementCodec().encode(tokens)
    portable_codec = SuccessiveRefinementCodec(portable_coder=True)
    portable = portable_codec.encode(tokens)
    assert portable.layers == native.layers and portable.params == native.params
    np.testing.assert_array_equal(
        portable_codec.decode(native.params, native.layers, tokens.shape),
        SuccessiveRefinementCodec().decode(native.params, native.layers, tokens.shape),
    )


def test_params_are_short_and_round_trip_to_the_same_float32_steps() -> None:
    encoded = SuccessiveRefinementCodec().encode(sparse_relu6_tokens(7))
    text = json.dumps(encoded.params)
    assert len(text) <= 130, text
    steps = json.loads(text)["steps"]
    assert all(np.float32(step) * 2 == np.float32(coarse) for coarse, step in zip(steps, steps[1:]))
