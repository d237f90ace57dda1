"""Codec registry and the raw one-layer codecs."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from prosemc.codec import CODECS, codec_from_header, codec_names, codec_record, make_codec, record_for_id
from prosemc.errors import CodecError

TOKENS = (np.arange(60, dtype=np.float32).reshape(5, 12) - 20.0) / 7.0


@pytest.mark.parametrize(
    "name, codec_id, entropy_id",
    [
        ("baseline", "sr-baseline/1", "constriction-ans/1"),
        ("raw-f32", "raw-f32/1", "none"),
        ("raw-f16", "raw-f16/1", "none"),
        ("int8", "int8/1", "none"),
    ],
)
def test_header_sections_rebuild_the_same_codec(name: str, codec_id: str, entropy_id: str) -> None:
    codec = make_codec(name)
    described = codec.describe()
    assert described == {"codec": {"id": codec_id, "model_sha256": None}, "entropy": {"id": entropy_id}}
    assert codec_record(name).codec_id == codec_id and record_for_id(codec_id).name == name
    encoded = codec.encode(TOKENS)
    decoder = codec_from_header({**described["codec"], "params": encoded.params}, described["entropy"])
    np.testing.assert_array_equal(
        decoder.decode(encoded.params, encoded.layers, TOKENS.shape),
        codec.decode(encoded.params, encoded.layers, TOKENS.shape),
    )


def test_raw_f32_is_lossless_and_sized() -> None:
    codec = make_codec("raw-f32")
    encoded = codec.encode(TOKENS)
    assert len(encoded.layers) == 1 and len(encoded.layers[0]) == TOKENS.size * 4
    assert encoded.layers[0][:4] == np.float32(TOKENS[0, 0]).astype("<f4").tobytes()
    np.testing.assert_array_equal(codec.decode(encoded.params, encoded.layers, TOKENS.shape), TOKENS)


def test_raw_f16_and_int8_errors_are_bounded() -> None:
    f16 = make_codec("raw-f16")
    out = f16.decode({}, f16.encode(TOKENS).layers, TOKENS.shape)
    assert np.abs(out - TOKENS).max() <= np.abs(TOKENS).max() * 2**-11
    int8 = make_codec("int8")
    encoded = int8.encode(TOKENS)
    assert len(encoded.layers[0]) == 5 * 4 + TOKENS.size
    out = int8.decode({}, encoded.layers, TOKENS.shape)
    scales = np.abs(TOKENS).max(axis=1, keepdims=True) / 127
    assert (np.abs(out - TOKENS) <= 0.5 * scales * (1 + 1e-5)).all()


def test_raw_f16_saturates_instead_of_overflowing() -> None:
    codec = make_codec("raw-f16")
    out = codec.decode({}, codec.encode(np.array([[1e6, -1e6]], np.float32)).layers, (1, 2))
    assert out.tolist() == [[65504.0, -65504.0]]


def test_int8_all_zero_token() -> None:
    codec = make_codec("int8")
    out = codec.decode({}, codec.encode(np.zeros((2, 3), np.float32)).layers, (2, 3))
    assert (out == 0).all()


@pytest.mark.parametrize("name", ["raw-f32", "raw-f16", "int8"])
def test_raw_codecs_refuse_wrong_sizes_and_layer_counts(name: str) -> None:
    codec = make_codec(name)
    layer = codec.encode(TOKENS).layers[0]
    with pytest.raises(CodecError, match="truncated or the header's token shape is wrong"):
        codec.decode({}, [layer[:-1]], TOKENS.shape)
    with pytest.raises(CodecError, match="truncated or the header's token shape is wrong"):
        codec.decode({}, [layer], (5, 13))
    with pytest.raises(CodecError, match="exactly one layer"):
        codec.decode({}, [layer, layer], TOKENS.shape)
    with pytest.raises(CodecError, match="layer 1 must be bytes, got str"):
        codec.decode({}, ["text"], TOKENS.shape)
    with pytest.raises(CodecError, match="non-finite"):
        codec.encode(np.full((1, 2), np.nan, np.float32))


@settings(max_examples=100, deadline=None)
@given(st.sampled_from(["raw-f32", "raw-f16", "int8"]), st.binary(max_size=64), st.integers(1, 4), st.integers(1, 4))
def test_raw_codecs_random_bytes_raise_only_codec_error(name: str, payload: bytes, rows: int, columns: int) -> None:
    try:
        out = make_codec(name).decode({}, [payload], (rows, columns))
    except CodecError:
        return
    assert out.shape == (rows, columns) and np.isfinite(out).all()


def test_registry_holds_one_record_per_codec_with_unique_names_and_ids() -> None:
    assert codec_names() == ["metaae", "baseline", "raw-f32", "raw-f16", "int8"]
    assert len({r.codec_id for r in CODECS}) == len(CODECS)
    assert [r.name for r in CODECS if r.entropy_coded] == ["metaae", "baseline"]
    assert [r.name for r in CODECS if r.learned] == ["metaae"]
    assert codec_record("baseline").per_image_params == ("steps", "clip")
    assert record_for_id("jpeg/1") is None


def test_cli_choices_come_from_the_registry() -> None:
    from prosemc.cli import cli

    option = next(o for o in cli.commands["encode"].params if o.name == "codec_name")
    assert list(option.type.choices) == codec_names()


def test_registry_import_does_not_load_numpy_or_a_codec() -> None:
    import subprocess
    import sys

    code = "import sys, prosemc.codec; print(sorted(m for m in ('numpy', 'prosemc.codec.baseline') if m in sys.modules))"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "[]"


def test_unknown_names_and_ids_are_refused() -> None:
    with pytest.raises(CodecError, match="unknown codec 'jpeg'; choose one of: metaae, baseline, raw-f32, raw-f16, int8"):
        make_codec("jpeg")
    with pytest.raises(CodecError, match="unknown codec id 'mae/7'"):
        codec_from_header({"id": "mae/7"}, {"id": "constriction-ans/1"})
    with pytest.raises(CodecError, match="unknown entropy coder id 'numpy-rans/1'"):
        codec_from_header({"id": "sr-baseline/1"}, {"id": "numpy-rans/1"})
    with pytest.raises(CodecError, match="entropy id must be 'none'"):
        codec_from_header({"id": "raw-f32/1"}, {"id": "constriction-ans/1"})
    with pytest.raises(CodecError, match="names no entropy coder"):
        codec_from_header({"id": "sr-baseline/1"}, {})
    with pytest.raises(CodecError, match="does not take these options"):
        make_codec("raw-f32", layers=3)
