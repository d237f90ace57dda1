"""Entropy coding: exact integer tables, constriction ANS round trips, pinned bytes, corrupt payloads."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from prosemc.codec.entropy import (
    MAX_ALPHABET,
    PRECISION_BITS,
    FrequencyTable,
    coder_for_id,
    read_table,
    write_table,
)
from prosemc.errors import CodecError

ANS = "constriction-ans/1"


def encode_groups(groups: list[np.ndarray]) -> tuple[bytes, list[FrequencyTable]]:
    tables = [FrequencyTable.from_symbols(group)[0] for group in groups]
    return coder_for_id(ANS).encode(list(zip(groups, tables))), tables


def decode_groups(payload: bytes, tables: list[FrequencyTable], counts: list[int]) -> list[np.ndarray]:
    reader = coder_for_id(ANS).reader(payload)
    out = [reader.read(table, count) for table, count in zip(tables, counts)]
    reader.finish()
    return out


def test_table_weights_are_exact_integers_summing_to_precision() -> None:
    table = FrequencyTable.from_counts(-2, np.array([0, 5, 1000, 3, 0]))
    assert table.weights.sum() == 1 << PRECISION_BITS
    assert table.weights.min() >= 1
    assert table.weights.tolist() == [1, 83221, 16644060, 49933, 1]


@given(st.lists(st.integers(0, 10**6), min_size=1, max_size=300).filter(lambda counts: sum(counts) > 0))
def test_table_weights_always_valid(counts: list[int]) -> None:
    table = FrequencyTable.from_counts(0, np.array(counts))
    assert table.weights.sum() == 1 << PRECISION_BITS
    assert table.weights.min() >= 1
    assert int(np.argmax(table.weights)) == int(np.argmax(counts))


def test_coded_size_follows_the_integer_weights() -> None:
    # a symbol of weight w costs -log2(w / 2**24) bits: the table reaches constriction unchanged
    table = FrequencyTable(offset=0, weights=np.array([2, (1 << 24) - 3, 1], dtype=np.int64))
    symbols = np.ones(2000, dtype=np.int64)
    symbols[::2] = 2  # 1000 symbols of weight 1 (24 bits each) + 1000 nearly free
    payload = coder_for_id(ANS).encode([(symbols, table)])
    assert 24 * 1000 <= 8 * len(payload) <= 24 * 1000 + 96


def test_groups_round_trip_and_single_symbol_groups_cost_nothing() -> None:
    rng = np.random.default_rng(7)
    groups = [rng.integers(-3, 4, 500), np.full(40, 9), rng.integers(0, 2, 1000), np.array([-5])]
    payload, tables = encode_groups(groups)
    decoded = decode_groups(payload, tables, [g.size for g in groups])
    for group, back in zip(groups, decoded):
        np.testing.assert_array_equal(group, back)
    payload_without_constants, _ = encode_groups([groups[0], groups[2]])
    assert payload == payload_without_constants


def test_golden_bytes_are_pinned() -> None:
    symbols = (np.arange(300) * 7919 % 11 - 5).astype(np.int64)
    zeros_and_ones = (np.arange(200) % 7 == 0).astype(np.int64)
    payload, _ = encode_groups([symbols, zeros_and_ones])
    assert len(payload) == 148
    assert hashlib.sha256(payload).hexdigest() == GOLDEN_ENTROPY_SHA256


GOLDEN_ENTROPY_SHA256 = "4eb0a69d66086c9e25bd8bc0d1e2255a28c02e8ba6ba753a24fbf47493957103"


def test_table_serialisation_round_trip_and_empty_marker() -> None:
    out = bytearray()
    write_table(np.array([3, 0, 7]), -1, out)
    write_table(None, 0, out)
    table, total, position = read_table(bytes(out), 0, 100)
    assert (table.offset, table.weights.sum(), total) == (-1, 1 << 24, 10)
    empty, total, end = read_table(bytes(out), position, 100)
    assert (empty, total, end) == (None, 0, len(out))


@pytest.mark.parametrize(
    "data, message",
    [
        (b"\x80\x80", "truncated"),  # ends inside a varint
        (b"\x00\x81\x80\x01", "exceeds the limit"),  # alphabet larger than MAX_ALPHABET
        (b"\x00\x02\xff\xff\x7f", "exceeds the limit"),  # count above max_total
        (b"\x00\x01\x00", "outside 1.."),  # a table counting no symbols
    ],
)
def test_corrupt_tables_are_refused(data: bytes, message: str) -> None:
    with pytest.raises(CodecError, match=message):
        read_table(data, 0, 1000)
    assert MAX_ALPHABET < 0x4001


def test_unknown_coder_id_is_refused_by_name() -> None:
    with pytest.raises(CodecError, match="unknown entropy coder id 'numpy-rans/9'.*constriction-ans/1"):
        coder_for_id("numpy-rans/9")


def test_payload_not_whole_words_is_refused() -> None:
    with pytest.raises(CodecError, match="not a whole number of 32-bit words"):
        coder_for_id(ANS).reader(b"\x01\x02\x03")


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=64), st.integers(1, 50))
def test_random_payloads_raise_only_codec_error(payload: bytes, count: int) -> None:
    table = FrequencyTable.from_counts(-1, np.array([1, 10, 1]))
    try:
        reader = coder_for_id(ANS).reader(payload)
        symbols = reader.read(table, count)
        reader.finish()
    except CodecError:
        return
    assert symbols.shape == (count,) and symbols.min() >= -1 and symbols.max() <= 1


@settings(max_examples=100, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(1, 6), st.integers(1, 300), st.integers(0, 2**32 - 1)),
        min_size=1,
        max_size=4,
    )
)
def test_portable_coder_writes_constriction_bytes(group_specs: list[tuple[int, int, int]]) -> None:
    groups = []
    for alphabet, count, seed in group_specs:
        rng = np.random.default_rng(seed)
        probabilities = rng.dirichlet(np.full(alphabet, 0.3))
        groups.append(rng.choice(alphabet, size=count, p=probabilities) - 2)
    tables = [FrequencyTable.from_symbols(group)[0] for group in groups]
    native = coder_for_id(ANS).encode(list(zip(groups, tables)))
    portable = coder_for_id(ANS, portable=True)
    assert portable.encode(list(zip(groups, tables))) == native
    reader = portable.reader(native)
    for group, table in zip(groups, tables):
        np.testing.assert_array_equal(reader.read(table, group.size), group)
    reader.finish()


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=40).filter(lambda data: len(data) % 4 == 0), st.integers(1, 30))
def test_portable_reader_matches_constriction_on_arbitrary_words(payload: bytes, count: int) -> None:
    table = FrequencyTable.from_counts(-1, np.array([3, 10, 1]))

    def outcome(portable: bool):
        try:
            reader = coder_for_id(ANS, portable=portable).reader(payload)
            symbols = reader.read(table, count).tolist()
        except CodecError:
            return "refused"
        try:
            reader.finish()
        except CodecError:
            return symbols, "left over"
        return symbols, "exact"

    assert outcome(True) == outcome(False)


def test_without_constriction_the_portable_coder_takes_over() -> None:
    import subprocess
    import sys

    script = (
        "import sys; sys.modules['constriction'] = None\n"  # as on a machine without its wheel
        "from prosemc.codec.entropy import coder_for_id\n"
        "print(type(coder_for_id('constriction-ans/1')).__name__)\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "PortableAnsCoder"
