"""Per-token metaae/1 (lite-dense's shipped token/2 weights): pinned sha, round trips, error head, bounded decoding,
refusals; round 1's token/1 weights still load; the lite-dense split itself; per-token training of a tiny Hugging
Face model end to end."""

from __future__ import annotations

import hashlib
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from prosemc.codec import codec_from_header, make_codec
from prosemc.codec.metaae_planes import PlaneMetaAECodec, PlaneWeights
from prosemc.codec.metaae_token import TokenMetaAECodec
from prosemc.codec.metaae_weights import MIN_SYMBOL_BITS, parse, shipped_weights_path, to_bytes
from prosemc.errors import CodecError, ModelError

# Pinned: after `make photos`, `prosemc fit --model lite-dense --images builtin --images photos/debian -o
# metaae-lite-dense.safetensors --seed 0 --threads 1` must reproduce this file (token extraction threads change float
# rounding, hence --threads 1); update only with a new shipped model (and docs/metaae-token.md).
SHIPPED_DENSE_SHA256 = "0ce170e9b31d3acc5cf6508828f33f97708133f2ac17174c046b5111e6023b48"
# Round 1's lite-dense weights (format prosemc-metaae-token/1), kept to show that old weights files still load.
TOKEN1_WEIGHTS = Path(__file__).resolve().parent / "data" / "metaae-lite-dense-token1.safetensors"


def per_token(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


@pytest.fixture(scope="module")
def tiny_smolvlm(tmp_path_factory) -> Path:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from tiny_vlms import build_tiny_smolvlm

    return build_tiny_smolvlm(tmp_path_factory.mktemp("smolvlm"))


@pytest.fixture(scope="module")
def dense():
    from prosemc.models.lite_dense import LiteDenseModel

    return LiteDenseModel()


@pytest.fixture(scope="module")
def tokens(dense, chelsea, coffee) -> list[np.ndarray]:
    from prosemc.models.images import load_image

    return [dense.encode_image(load_image(path)).tokens for path in (chelsea, coffee)]


@pytest.fixture(scope="module")
def codec() -> PlaneMetaAECodec:
    return make_codec("metaae", model="lite-dense")


def test_lite_dense_split_matches_the_unsplit_network(dense, tokens, chelsea) -> None:
    import torch

    from prosemc.models.images import load_image
    from prosemc.models.lite import preprocess

    assert tokens[0].shape == (196, 112) and tokens[0].dtype == np.float32
    assert 0.3 < float((tokens[0] < 0).mean()) < 0.7  # dense and signed, not ReLU features
    with torch.inference_mode():
        whole = dense.encoder(torch.from_numpy(preprocess(load_image(chelsea)))[None])[0].double().numpy()
    np.testing.assert_allclose(dense.logits(tokens[0]), whole, atol=1e-4)
    assert dense.classify(tokens[0], 1)[0][0] == dense.labels[int(np.argmax(whole))]
    with pytest.raises(ModelError, match=r"\[196, 112\]"):
        dense.logits(tokens[0][:49])


def test_shipped_weights_are_pinned(codec) -> None:
    data = shipped_weights_path("lite-dense").read_bytes()
    assert hashlib.sha256(data).hexdigest() == SHIPPED_DENSE_SHA256 == codec.weights.sha256
    assert codec.weights.model == "lite-dense" and codec.weights.token_dim == 112
    assert codec.describe()["codec"] == {"id": "metaae/1", "model_sha256": SHIPPED_DENSE_SHA256}


def test_every_prefix_round_trips_and_improves(codec, tokens, dense) -> None:
    for x in tokens:
        encoded = codec.encode(x)
        assert len(encoded.layers) == codec.weights.layer_count >= 8
        assert codec.encode(x).layers == encoded.layers  # deterministic bytes
        cosines, estimates = [], []
        for k in range(1, len(encoded.layers) + 1):
            decoded = codec.decode(encoded.params, encoded.layers[:k], x.shape)
            assert decoded.shape == x.shape and decoded.dtype == np.float32 and np.isfinite(decoded).all()
            cosines.append(float(per_token(x, decoded).mean()))
            estimates.append(codec.quality_estimate(encoded.params, encoded.layers[:k], x.shape))
        assert all(b >= a - 1e-6 for a, b in zip(cosines, cosines[1:])), cosines
        assert cosines[-1] > 0.99 and 0.45 < cosines[0] < 0.8  # layer 1 (~180 B) is coarse but useful
        assert all(0.0 <= e <= 1.0 for e in estimates)
        assert np.corrcoef(cosines, estimates)[0, 1] > 0.9  # the error head follows the true quality
        assert max(abs(a - b) for a, b in zip(cosines, estimates)) < 0.15
        full = codec.decode(encoded.params, encoded.layers, x.shape)
        assert dense.classify(full, 1)[0][0] == dense.classify(x, 1)[0][0]
        # a header-made decoder (weights found by sha256) gives the same tokens
        described = codec.describe()
        other = codec_from_header({**described["codec"], "params": encoded.params}, described["entropy"])
        np.testing.assert_array_equal(other.decode(encoded.params, encoded.layers[:3], x.shape),
                                      codec.decode(encoded.params, encoded.layers[:3], x.shape))


def test_decoding_work_is_bounded_by_the_payload(codec, tokens) -> None:
    encoded = codec.encode(tokens[0])
    # a legitimate layer always carries enough bits for its symbols ...
    for k, layer in enumerate(encoded.layers):
        assert len(codec.weights.plan(k, 196).index) * MIN_SYMBOL_BITS <= 8 * len(layer) + 96
    # ... and a header claiming 3920 tokens (20 tiles) for a few bytes is refused before anything is decoded
    with pytest.raises(CodecError, match="cannot hold"):
        codec.decode(encoded.params, [b"\1\0\0\0"], (3920, 112))


def test_hostile_input_raises_codec_error_only(codec, tokens) -> None:
    x = tokens[1]
    encoded = codec.encode(x)
    rng = np.random.default_rng(0)
    for k, layer in enumerate(encoded.layers[:5]):
        prefix = list(encoded.layers[:k])
        for bad in (layer[:-4], layer + b"\0\0\0\1", layer[:-1], b"",
                    rng.integers(0, 256, len(layer) // 4 * 4 + 4, dtype=np.uint8).tobytes()):
            try:
                decoded = codec.decode(encoded.params, prefix + [bad], x.shape)
            except CodecError:
                continue
            assert decoded.shape == x.shape and np.isfinite(decoded).all()
    for params in ({}, {"layers": 99}, {"layers": "2"}, None, {"layers": 2, "model_sha256": "ab" * 32}):
        with pytest.raises(CodecError):
            codec.decode(params, encoded.layers[:1], x.shape)
    for shape in ((196, 111), (0, 112), (5000, 112), ("a", 2)):
        with pytest.raises(CodecError):
            codec.decode(encoded.params, encoded.layers[:1], shape)
    for bad in (np.zeros((4, 111), np.float32), np.full((4, 112), np.nan, np.float32)):
        with pytest.raises(CodecError):
            codec.encode(bad)
    with pytest.raises(CodecError, match="does not ship"):
        codec_from_header({"id": "metaae/1", "model_sha256": "cd" * 32}, {"id": "constriction-ans/1"})


def test_damaged_weights_are_refused(tmp_path) -> None:
    tensors, metadata, _ = parse(shipped_weights_path("lite-dense").read_bytes())
    for name, change in (("tables.size", lambda t: t * 0), ("schedule.level", lambda t: t[::-1].copy()),
                         ("transform.rotation", lambda t: t[:, :5]), ("transform.gain", lambda t: -t),
                         ("schedule.step0", lambda t: t * 3)):
        broken = tmp_path / f"{name}.safetensors"
        broken.write_bytes(to_bytes({**tensors, name: change(tensors[name])}, metadata))
        with pytest.raises(CodecError, match="not a valid"):
            make_codec("metaae", weights=broken)
    with pytest.raises(CodecError, match="ships no metaae weights"):
        make_codec("metaae", model="some/vlm@1234")
    tensors, metadata, _ = parse(TOKEN1_WEIGHTS.read_bytes())
    for name, change in (("schedule.step", lambda t: t[::-1].copy()), ("dec.weight", lambda t: t[:5])):
        broken = tmp_path / f"token1-{name}.safetensors"
        broken.write_bytes(to_bytes({**tensors, name: change(tensors[name])}, metadata))
        with pytest.raises(CodecError, match="not a valid prosemc-metaae-token/1"):
            make_codec("metaae", weights=broken)


def test_round_one_token1_weights_still_load_and_code(tokens) -> None:
    """Weights files of the first per-token layout (a per-token linear latent, no grid) keep working."""
    codec = make_codec("metaae", weights=TOKEN1_WEIGHTS)
    assert isinstance(codec, TokenMetaAECodec) and codec.weights.layer_count == 19
    x = tokens[0]
    encoded = codec.encode(x)
    cosines = [float(per_token(x, codec.decode(encoded.params, encoded.layers[:k], x.shape)).mean())
               for k in (1, 10, 19)]
    assert cosines[0] < 0.5 < cosines[1] < cosines[2] and cosines[2] > 0.99, cosines
    assert 0.0 <= codec.quality_estimate(encoded.params, encoded.layers[:10], x.shape) <= 1.0


def test_hf_model_trains_through_the_same_path(tmp_path, tiny_smolvlm, chelsea, coffee) -> None:
    """A tiny random SmolVLM: fit a few steps on two photos, the weights make a codec, a .psem decodes."""
    from prosemc.codec.metaae import load_weights
    from prosemc.models import load_model
    from prosemc.models.images import load_image
    from prosemc.pipeline import encode_image, read_tokens

    folder = tmp_path / "photos"
    folder.mkdir()
    for path in (chelsea, coffee):
        shutil.copy(path, folder / path.name)
    from prosemc.training.fit import fit

    out = tmp_path / "tiny.safetensors"
    report = fit(str(tiny_smolvlm), folder, out, seed=1, views=3, cache_dir=tmp_path / "cache", quiet=True,
                 config_overrides={"steps": 8, "batch": 6, "levels_per_step": 6, "levels": 6, "lr": 0.02})
    weights = load_weights(out)
    assert report.sha256 == weights.sha256 and isinstance(weights, PlaneWeights) and 4 <= weights.layer_count <= 11
    assert (weights.transform.rows, weights.transform.cols) == (4, 4)  # 32 px / 4 px patches / pixel shuffle 2
    assert report.steps == 8 and np.mean(report.loss[-3:]) < np.mean(report.loss[:3]), report.loss
    model = load_model(str(tiny_smolvlm))
    import io

    stream = io.BytesIO()
    encode_image(load_image(coffee), stream, model, codec_weights=str(out))
    stream.seek(0)
    decoded = read_tokens(stream, codec_weights=str(out))
    reference = model.encode_image(load_image(coffee)).tokens
    assert decoded.edge.tokens.shape == reference.shape and decoded.layers_used == weights.layer_count
    assert per_token(reference, decoded.edge.tokens).mean() > 0.9  # 6 step levels of a random tiny model
    stream.seek(0)
    with pytest.raises(CodecError, match="does not ship"):
        read_tokens(stream)


def test_cli_encodes_lite_dense_with_metaae_by_default(tmp_path, coffee) -> None:
    import json

    from click.testing import CliRunner
    from safetensors.numpy import load_file

    from prosemc.cli import cli
    from prosemc.pipeline import model_for

    out = tmp_path / "c.psem"
    result = CliRunner().invoke(cli, ["encode", str(coffee), "-o", str(out), "--model", "lite-dense", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["codec"]["id"] == "metaae/1" and report["tokens"]["shape"] == [196, 112]
    assert len(report["layers"]) == report["layers_declared"] == make_codec("metaae", model="lite-dense").weights.layer_count
    result = CliRunner().invoke(cli, ["decode", str(out), "-o", str(tmp_path / "t.safetensors"), "--layers", "5"])
    assert result.exit_code == 0, result.output
    assert load_file(str(tmp_path / "t.safetensors"))["tokens"].shape == (196, 112)
    assert model_for("lite-dense").model_id == "lite-dense"  # query finds the built-in model from the header
    result = CliRunner().invoke(cli, ["encode", str(coffee), "-o", str(tmp_path / "x.psem"), "--codec", "baseline",
                                      "--codec-weights", str(shipped_weights_path("lite-dense"))])
    assert result.exit_code == 2 and "--codec-weights applies to the metaae codec" in result.output
    assert not (tmp_path / "x.psem").exists()
