"""quality_estimate: the codecs' predicted token cosine, checked against the truth on held-out photos."""

from __future__ import annotations

import numpy as np
import pytest

from prosemc.bench.estimator import mean_token_cosine
from prosemc.codec import make_codec
from prosemc.codec.base import has_quality_estimate
from prosemc.codec.quality import dead_zone_energy, mean_cosine
from prosemc.errors import CodecError


@pytest.fixture(scope="module")
def photo_tokens(chelsea, coffee):
    from prosemc.models import load_model
    from prosemc.models.images import load_image

    model = load_model("lite")
    return [model.encode_image(load_image(str(path))).tokens for path in (chelsea, coffee)]


@pytest.mark.parametrize("codec_name", ["metaae", "baseline"])
def test_estimate_tracks_the_true_cosine_and_never_falls(codec_name, photo_tokens):
    codec = make_codec(codec_name)
    truths, estimates = [], []
    for tokens in photo_tokens:
        encoded = codec.encode(tokens)
        ladder = [codec.quality_estimate(encoded.params, encoded.layers[:k], tokens.shape)
                  for k in range(1, len(encoded.layers) + 1)]
        assert all(0.0 <= e <= 1.0 for e in ladder) and ladder == sorted(ladder)
        for k, estimate in enumerate(ladder, 1):
            truth = mean_token_cosine(tokens, codec.decode(encoded.params, encoded.layers[:k], tokens.shape))
            assert abs(estimate - truth) < 0.16, (k, estimate, truth)
            truths.append(truth)
            estimates.append(estimate)
        assert ladder[-1] > 0.99
    assert np.corrcoef(truths, estimates)[0, 1] > 0.9


def test_only_progressive_codecs_estimate():
    assert has_quality_estimate(make_codec("metaae")) and has_quality_estimate(make_codec("baseline"))
    assert not any(has_quality_estimate(make_codec(name)) for name in ("raw-f32", "raw-f16", "int8"))


def test_estimate_refuses_damaged_layers_like_decode(photo_tokens):
    codec = make_codec("baseline")
    encoded = codec.encode(photo_tokens[0])
    with pytest.raises(CodecError):
        codec.quality_estimate(encoded.params, [encoded.layers[0][:10]], photo_tokens[0].shape)
    with pytest.raises(CodecError):
        codec.quality_estimate(encoded.params, [], photo_tokens[0].shape)


def test_dead_zone_energy_and_mean_cosine_arithmetic():
    # 100 new values at T = 1 growing 2x per octave: 100 * 7/3 * (1/2) / (1/2) = 233.3, capped by 1000 * 1/3
    assert dead_zone_energy(100, 50, 1.0, 1000, 2.0) == pytest.approx(700 / 3)
    assert dead_zone_energy(100, 1, 1.0, 30, 2.0) == pytest.approx(10.0)  # the uniform cap
    assert mean_cosine(np.array([1.0, 0.0]), np.array([4.0, 1.0]), np.array([1.0, 0.0])) == pytest.approx(0.25)
