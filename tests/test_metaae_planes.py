"""token/2's grid transform (DCT over the token grid + per-band rotations) and its codec's refusals, numpy only."""

from __future__ import annotations

import numpy as np
import pytest

from prosemc.codec import make_codec
from prosemc.codec.metaae_transform import GridTransform, dct_basis, zigzag_index
from prosemc.errors import CodecError


def random_rotations(count: int, dim: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.array([np.linalg.qr(rng.normal(size=(dim, dim)))[0] for _ in range(count)], dtype=np.float32)


def test_dct_basis_is_orthonormal_and_zigzag_orders_by_frequency() -> None:
    for size in (1, 2, 7, 14):
        basis = dct_basis(size)
        np.testing.assert_allclose(basis @ basis.T, np.eye(size), atol=1e-12)
    np.testing.assert_allclose(dct_basis(4)[0], np.full(4, 0.5))  # frequency 0 is the mean
    assert zigzag_index(2, 3).tolist() == [0, 1, 2, 1, 2, 3]


@pytest.mark.parametrize("grid, starts", [((4, 3), (0, 1, 3)), ((0, 0), (0,))])
def test_forward_is_exactly_inverted_and_keeps_energy(grid, starts) -> None:
    dim, rng = 6, np.random.default_rng(1)
    transform = GridTransform(rng.normal(size=dim).astype(np.float32), random_rotations(len(starts), dim, 2),
                              np.array([1, 2, 4, 0.5, 1, 3], np.float32), grid[0], grid[1], starts)
    tokens = rng.normal(size=(24, dim)).astype(np.float32)  # two 4 x 3 tiles, or 24 tokens without a grid
    assert transform.tiles(24) == (2 if grid[0] else 24) and transform.tiles(25) == (0 if grid[0] else 25)
    coefficients = transform.forward(tokens)
    assert coefficients.shape == (24, dim)
    np.testing.assert_allclose(transform.inverse(coefficients), tokens, atol=1e-5)
    # orthonormal DCT and rotations: with unit gains the energy of the centred tokens is kept exactly
    unit = GridTransform(transform.mean, transform.rotation, np.ones(dim, np.float32), *grid, starts)
    centred = tokens - transform.mean
    np.testing.assert_allclose((unit.forward(tokens) ** 2).sum(), (centred.astype(np.float64) ** 2).sum(), rtol=1e-5)
    if grid[0]:  # the first coefficient row of a tile is its mean token (scaled), rotated
        expected = centred[:12].mean(axis=0) * np.sqrt(12) @ transform.rotation[0] * transform.gain
        np.testing.assert_allclose(coefficients[0], expected, rtol=1e-4, atol=1e-5)
    spread = transform.error_spread()
    np.testing.assert_allclose(spread.sum(axis=1), 1.0, atol=1e-12)  # a unit error's energy lands on the tile


def test_tokens_that_do_not_fill_whole_tiles_are_refused() -> None:
    codec = make_codec("metaae", model="lite-dense")
    with pytest.raises(CodecError, match="14 x 14 grid"):
        codec.encode(np.zeros((100, 112), np.float32))
    with pytest.raises(CodecError, match="14 x 14 grid"):
        codec.max_layer_bytes({"layers": codec.weights.layer_count}, (100, 112))
    two_tiles = np.random.default_rng(0).normal(size=(392, 112)).astype(np.float32)
    encoded = codec.encode(two_tiles)  # two tiles of the grid are fine
    assert codec.decode(encoded.params, encoded.layers, two_tiles.shape).shape == (392, 112)


def test_band_groups_with_too_few_samples_for_a_pca_are_merged() -> None:
    from prosemc.training.token_fit import merged_band_groups

    assert merged_band_groups((0, 1, 3, 7), np.array([10, 50, 300, 1000]), 100) == (0, 7)
    assert merged_band_groups((0, 1, 3, 7), np.array([200, 500, 300, 1000]), 100) == (0, 1, 3, 7)
    assert merged_band_groups((0, 1), np.array([500, 20]), 100) == (0,)  # the last one joins the one before
    assert merged_band_groups((0,), np.array([5]), 100) == (0,)
