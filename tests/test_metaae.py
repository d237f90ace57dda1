"""metaae/1 (the Meta AutoEncoder codec): shipped weights, round trips, quality per level, refusals, torch match."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from prosemc.codec import codec_from_header, make_codec
from prosemc.codec.metaae import MetaAutoEncoderCodec, default_weights_path, load_weights, mlp
from prosemc.errors import CodecError

# Pinned: re-training (prosemc fit ... --seed 0) must reproduce this file; update only with a new shipped model.
SHIPPED_SHA256 = "4aeb230666d2d5878bc6dab16827b731b06f4fd89fabe7a7112ce80f1e814bbe"


def token_cosine(reference: np.ndarray, decoded: np.ndarray) -> float:
    dot = (reference * decoded).sum(1)
    norms = np.linalg.norm(reference, axis=1) * np.linalg.norm(decoded, axis=1)
    return float(np.where(norms > 0, dot / np.where(norms > 0, norms, 1.0), 1.0).mean())


@pytest.fixture(scope="module")
def lite():
    from prosemc.models.lite import LiteModel

    return LiteModel()


@pytest.fixture(scope="module")
def heldout_tokens(lite, chelsea, coffee) -> list[np.ndarray]:
    """Real lite tokens [49, 1280] of two held-out photos (never in the training set)."""
    from prosemc.models.images import load_image

    return [lite.encode_image(load_image(path)).tokens for path in (chelsea, coffee)]


@pytest.fixture(scope="module")
def codec() -> MetaAutoEncoderCodec:
    return make_codec("metaae")


def test_shipped_weights_are_pinned() -> None:
    data = default_weights_path().read_bytes()
    assert hashlib.sha256(data).hexdigest() == SHIPPED_SHA256
    weights = load_weights()
    assert weights.sha256 == SHIPPED_SHA256 and weights.model == "lite" and weights.token_dim == 1280


def test_describe_names_the_weights(codec) -> None:
    described = codec.describe()
    assert described["codec"]["id"] == "metaae/1"
    assert described["codec"]["model_sha256"] == SHIPPED_SHA256
    assert described["entropy"]["id"] == "constriction-ans/1"


def test_round_trip_every_prefix(codec, heldout_tokens) -> None:
    tokens = heldout_tokens[0]
    encoded = codec.encode(tokens)
    assert len(encoded.layers) == codec.weights.layer_count >= 4
    assert encoded.params == {"layers": len(encoded.layers)}
    for k in range(1, len(encoded.layers) + 1):
        decoded = codec.decode(encoded.params, encoded.layers[:k], tokens.shape)
        assert decoded.shape == (49, 1280) and decoded.dtype == np.float32
        assert np.isfinite(decoded).all() and decoded.min() >= 0.0 and decoded.max() <= 6.0
    # deterministic bytes; a header-made decoder gives the same tokens
    assert codec.encode(tokens).layers == encoded.layers
    described = codec.describe()
    other = codec_from_header({**described["codec"], "params": encoded.params}, described["entropy"])
    np.testing.assert_array_equal(other.decode(encoded.params, encoded.layers, tokens.shape),
                                  codec.decode(encoded.params, encoded.layers, tokens.shape))


def test_other_token_counts(codec, heldout_tokens) -> None:
    tokens = heldout_tokens[1][:5]
    encoded = codec.encode(tokens)
    assert codec.decode(encoded.params, encoded.layers, (5, 1280)).shape == (5, 1280)


def test_quality_improves_every_level_on_heldout(codec, lite, heldout_tokens) -> None:
    for tokens in heldout_tokens:
        encoded = codec.encode(tokens)
        sizes = np.cumsum([len(layer) for layer in encoded.layers])
        errors, cosines = [], []
        for k in range(1, len(encoded.layers) + 1):
            decoded = codec.decode(encoded.params, encoded.layers[:k], tokens.shape)
            errors.append(float(((decoded - tokens) ** 2).mean()))
            cosines.append(token_cosine(tokens, decoded))
        assert all(b < a for a, b in zip(errors, errors[1:])), errors
        assert all(b > a for a, b in zip(cosines, cosines[1:])), cosines
        assert sizes[0] <= 512, sizes  # level 1: at most 512 bytes of payload
        assert cosines[-1] >= 0.99, cosines
        full = codec.decode(encoded.params, encoded.layers, tokens.shape)
        assert lite.classify(full, 1)[0][0] == lite.classify(tokens, 1)[0][0]


def test_wrong_weights_refused_naming_both_hashes(codec, heldout_tokens) -> None:
    encoded = codec.encode(heldout_tokens[0])
    other = "ab" * 32
    with pytest.raises(CodecError) as error:
        codec.decode({**encoded.params, "model_sha256": other}, encoded.layers, (49, 1280))
    assert other in str(error.value) and SHIPPED_SHA256 in str(error.value) and "re-encode" in str(error.value)
    described = codec.describe()
    with pytest.raises(CodecError) as error:
        codec_from_header({**described["codec"], "model_sha256": other}, described["entropy"])
    assert other in str(error.value) and SHIPPED_SHA256 in str(error.value)


def test_hostile_payloads_raise_codec_error_only(codec, heldout_tokens) -> None:
    tokens = heldout_tokens[0]
    encoded = codec.encode(tokens)
    rng = np.random.default_rng(0)
    attempts = []
    for k, layer in enumerate(encoded.layers):
        prefix = list(encoded.layers[:k])
        attempts.append(prefix + [layer[:-4]])  # truncated
        attempts.append(prefix + [layer + b"\0\0\0\1"])  # trailing data
        attempts.append(prefix + [layer[:-1]])  # not whole words
        for _ in range(3):
            mutated = bytearray(layer)
            mutated[int(rng.integers(len(mutated)))] ^= 1 << int(rng.integers(8))
            attempts.append(prefix + [bytes(mutated)])
        attempts.append(prefix + [rng.integers(0, 256, len(layer) // 4 * 4 + 4, dtype=np.uint8).tobytes()])
        attempts.append(prefix + [b""])
    for layers in attempts:
        try:
            decoded = codec.decode(encoded.params, layers, tokens.shape)
        except CodecError:
            continue
        assert decoded.shape == tokens.shape and np.isfinite(decoded).all()  # a flip may still decode
    for params in ({}, {"model_sha256": SHIPPED_SHA256}, {"model_sha256": SHIPPED_SHA256, "layers": 99},
                   {"model_sha256": SHIPPED_SHA256, "layers": "2"}, [], None):
        with pytest.raises(CodecError):
            codec.decode(params, encoded.layers, tokens.shape)
    for shape in ((49, 1000), (0, 1280), (4097, 1280), (1 << 20, 1280), ("a", 2), (49,)):
        with pytest.raises(CodecError):
            codec.decode(encoded.params, encoded.layers, shape)
    with pytest.raises(CodecError):
        codec.decode(encoded.params, [], tokens.shape)
    for bad in (np.zeros((49, 1000), np.float32), np.full((2, 1280), np.nan, np.float32), np.zeros((2, 2, 1280))):
        with pytest.raises(CodecError):
            codec.encode(bad)


def test_numpy_matches_torch(codec, heldout_tokens) -> None:
    torch = pytest.importorskip("torch")
    from prosemc.training.fit import load_model

    model = load_model(default_weights_path())
    weights = codec.weights
    tokens = heldout_tokens[1]
    assert weights.pooled  # the shipped model codes the mean token
    pooled = np.clip(tokens, 0, 6).mean(axis=0, keepdims=True, dtype=np.float64).astype(np.float32)  # [1, D]
    with torch.no_grad():
        y_torch = model.encoders[0](torch.from_numpy(pooled)).numpy()
    y_numpy = mlp(weights.encoders[0], pooled)
    np.testing.assert_allclose(y_numpy, y_torch, atol=1e-4, rtol=1e-6)  # float32 rounding only
    # the integer symbols agree except where a latent sits within float error of a rounding boundary
    symbols = codec.symbols(tokens)
    assert symbols.shape == (1, weights.levels[-1])
    centred = y_torch - weights.mean
    torch_symbols = np.clip(np.rint(centred), -weights.radius, weights.radius)
    near_half = np.abs(np.abs(centred - np.floor(centred)) - 0.5) < 1e-4
    assert near_half.mean() < 0.01
    assert np.array_equal(symbols[~near_half], torch_symbols[~near_half])
    # decoder: the same symbols give the same tokens within float32 rounding, every token the decoded mean
    with torch.no_grad():
        latent = torch.from_numpy(symbols.astype(np.float32)) + model.latent_mean
        decoded = model.clamp(model.decoders[0](latent)).numpy()
        outputs, _ = model(torch.from_numpy(pooled)[None], train=False)
    numpy_tokens = codec.reconstruct(symbols, len(weights.levels), 49)
    assert numpy_tokens.shape == (49, 1280)
    np.testing.assert_allclose(numpy_tokens, np.repeat(decoded, 49, axis=0), atol=1e-5, rtol=0)
    clipped = (np.abs(symbols) == weights.radius)[0]  # the numpy encoder clips to the table alphabet; torch does not
    assert clipped.mean() < 0.01
    np.testing.assert_allclose(numpy_tokens[0, ~clipped], outputs[-1][0, 0].numpy()[~clipped], atol=1e-4, rtol=0)
