"""The per-token metaae codec's compiled encoder (numba) writes exactly the numpy path's bytes."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from prosemc.codec import make_codec
from prosemc.codec.entropy import FrequencyTable
from prosemc.codec.metaae_planes import PlaneMetaAECodec
from prosemc.codec.metaae_planes_kernel import reciprocals
from prosemc.codec.metaae_weights import MAX_TABLE_WEIGHT
from prosemc.errors import CodecError

pytest.importorskip("numba")


@pytest.fixture(scope="module")
def weights():
    return make_codec("metaae", model="lite-dense").weights


@pytest.fixture(scope="module")
def tokens(chelsea, coffee) -> list[np.ndarray]:
    from prosemc.models.images import load_image
    from prosemc.models.lite_dense import LiteDenseModel

    model = LiteDenseModel()
    return [model.encode_image(load_image(path)).tokens for path in (chelsea, coffee)]


def both_encode(weights, x: np.ndarray, layers: int | None = None) -> tuple[list[bytes], list[bytes]]:
    compiled = PlaneMetaAECodec(weights, layers, compiled=True).encode(x).layers
    return compiled, PlaneMetaAECodec(weights, layers, compiled=False).encode(x).layers


def test_compiled_encoder_writes_the_numpy_bytes(weights, tokens) -> None:
    rng = np.random.default_rng(0)
    cases = [(x, None) for x in tokens] + [(tokens[0], 3), (np.concatenate(tokens), None)]  # a prefix; two tiles
    cases += [((x * scale + rng.normal(0, 0.2, x.shape)).astype(np.float32), None)  # far from the training tokens
              for x in tokens for scale in (0.3, 1.7, 40.0)]
    for x, layers in cases:
        compiled, numpy = both_encode(weights, x, layers)
        assert len(compiled) == (layers or weights.layer_count) and compiled == numpy
    assert sum(map(len, both_encode(weights, tokens[0])[0])) > 5000  # a real stream, not an empty one


def test_random_tables_with_rare_and_dominant_symbols_code_identically(weights, tokens) -> None:
    """Weight-1 symbols and one near-certain symbol per table push the ANS state through every branch (division
    for weight 1, a state above 2**63 with its true division)."""
    rng = np.random.default_rng(1)
    tables = []
    for table in weights.tables:
        counts = rng.integers(0, 3, table.alphabet_size) * rng.integers(1, 1000, table.alphabet_size)
        counts[rng.integers(table.alphabet_size)] += 10**9  # one dominant symbol: weight near MAX_TABLE_WEIGHT
        made = FrequencyTable.from_counts(table.offset, counts)
        top = int(np.argmax(made.weights))
        excess = int(made.weights[top]) - MAX_TABLE_WEIGHT
        if excess > 0 and made.alphabet_size > 1:  # keep codec's bound on a symbol's probability
            spread = made.weights.copy()
            spread[top] -= excess
            spread[(top + 1) % made.alphabet_size] += excess
            made = FrequencyTable(made.offset, spread)
        tables.append(made)
    assert any((t.weights == 1).any() for t in tables)
    odd = dataclasses.replace(weights, tables=tuple(tables))
    for x in tokens:
        compiled, numpy = both_encode(odd, x)
        assert compiled == numpy


def test_tables_that_miss_symbols_are_refused_by_both_paths(weights, tokens) -> None:
    # a weights file whose first-coding tables are too narrow for what its schedule codes (damaged, or hand-made):
    # the numpy path finds the symbols outside, the compiled one (which does not check symbols) refuses the tables
    narrow = tuple(FrequencyTable.from_counts(-1, np.array([1, 8, 1])) if t.offset < -1 else t for t in weights.tables)
    odd = dataclasses.replace(weights, tables=narrow)
    with pytest.raises(CodecError, match="tables do not cover the symbols their schedule codes"):
        PlaneMetaAECodec(odd, compiled=True)
    with pytest.raises(CodecError, match=r"layer \d+: symbols outside the trained alphabet"):
        PlaneMetaAECodec(odd, compiled=False).encode(tokens[0] * 3)
    reach = weights.symbol_reach  # the shipped tables cover exactly what the schedule can code
    assert reach.max() > 1 and (reach >= 0).sum() > 20
    assert all(t.offset <= -r and t.offset + t.alphabet_size - 1 >= r
               for t, r in zip(weights.tables[:len(reach)], reach) if r >= 0 and t.offset < 0)


def test_reciprocals_divide_exactly_below_2_63() -> None:
    rng = np.random.default_rng(2)
    weights = [2, 3, 5, 7, 1 << 12, (1 << 12) + 1, (1 << 23) - 1, 1 << 23, (1 << 23) + 1, MAX_TABLE_WEIGHT,
               (1 << 24) - 1, 1 << 24] + rng.integers(2, 1 << 24, 300).tolist()
    r, s = reciprocals(np.array(weights, dtype=np.int64))
    for f, rf, sf in zip(weights, r.tolist(), s.tolist()):
        states = [0, 1, f - 1, f, f + 1, (1 << 63) - 1, (1 << 63) - f, min((f << 40) - 1, (1 << 63) - 1)]
        states += rng.integers(0, 1 << 63, 200, dtype=np.int64).tolist()
        for x in states:
            assert (x * rf >> 64) >> sf == x // f, (f, x)


def test_the_compiled_encoder_is_chosen_where_asked(weights) -> None:
    from prosemc.pipeline import encoder_codec

    assert encoder_codec("lite-dense", compiled=True).compiled is True
    assert encoder_codec("lite-dense").compiled is False  # one image: the numpy path starts in milliseconds
    assert encoder_codec("lite", compiled=True).codec_id == "metaae/1"  # the mean-token codec has no kernel
    assert encoder_codec("lite-dense", "baseline", compiled=True).codec_id == "sr-baseline/1"
