"""Hypothesis properties of the container: round trip, layer prefixes, streamed == whole-file reading."""

from __future__ import annotations

import io
import random

from hypothesis import given, settings
from hypothesis import strategies as st

from prosemc import format as psem

json_scalars = st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20)
json_values = st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=12)


@st.composite
def headers_and_layers(draw):
    payloads = draw(st.lists(st.binary(max_size=300), max_size=8))
    header = psem.PsemHeader(
        encoder=draw(st.text(min_size=1, max_size=40)),
        token_shape=tuple(draw(st.lists(st.integers(1, 2**31 - 1), min_size=1, max_size=4))),
        token_dtype=draw(st.sampled_from(["float32", "float16", "bfloat16"])),
        codec={"id": draw(st.text(min_size=1, max_size=20)), "model_sha256": draw(st.none() | st.text("0123456789abcdef", min_size=64, max_size=64)),
               "params": draw(st.dictionaries(st.text(max_size=8), json_values, max_size=4))},
        entropy={"id": draw(st.text(min_size=1, max_size=20))},
        layers=len(payloads) + draw(st.integers(0, 3)),
        metadata=draw(st.dictionaries(st.text(max_size=8), json_values, max_size=4)),
    )
    return header, payloads


class Trickle(io.RawIOBase):
    """A stream that returns at most the next scheduled number of bytes per read, like a pipe or socket."""

    def __init__(self, data: bytes, sizes: list[int]):
        self._data, self._sizes, self._pos, self._i = data, sizes or [1], 0, 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        out = self.read(len(buffer))
        buffer[: len(out)] = out
        return len(out)

    def read(self, n: int = -1) -> bytes:
        step = self._sizes[self._i % len(self._sizes)]
        self._i += 1
        n = min(n if n >= 0 else len(self._data), step)
        out = self._data[self._pos : self._pos + n]
        self._pos += len(out)
        return out


@given(headers_and_layers())
@settings(max_examples=150, deadline=None)
def test_round_trip(case):
    header, payloads = case
    parsed = psem.loads(psem.dumps(header, payloads))
    assert parsed.header == header
    assert parsed.layers == payloads
    assert parsed.end.layers == len(payloads)
    assert parsed.end.status == ("complete" if len(payloads) == header.layers else "prefix")


@given(headers_and_layers(), st.data())
@settings(max_examples=100, deadline=None)
def test_prefix_to_layer_k_reads_as_exactly_k_layers_and_truncate_makes_it(case, data):
    header, payloads = case
    out = io.BytesIO()
    writer = psem.PsemWriter(out, header)
    for p in payloads:
        writer.add_layer(p)
    whole = out.getvalue()
    ends = [len(psem.dumps(header, []))] + writer.layer_ends
    k = data.draw(st.integers(0, len(payloads)))
    prefix = whole[: ends[k]]
    parsed = psem.loads(prefix)
    assert parsed.layers == payloads[:k] and parsed.end.cut_at is None
    if k >= 1:
        by_layers, by_bytes = io.BytesIO(), io.BytesIO()
        assert psem.truncate(whole, by_layers, layers=k).layers == k
        assert by_layers.getvalue() == prefix
        budget = data.draw(st.integers(ends[k], (ends[k + 1] - 1) if k < len(payloads) else ends[k] + 100))
        assert psem.truncate(whole, by_bytes, max_bytes=budget).layers == k
        assert by_bytes.getvalue() == prefix
    if k < len(payloads):  # a cut strictly inside layer k+1 keeps exactly k layers
        cut = data.draw(st.integers(ends[k] + 1, ends[k + 1] - 1))
        parsed = psem.loads(whole[:cut])
        assert parsed.layers == payloads[:k]
        assert (parsed.end.status, parsed.end.bytes_read, parsed.end.cut_at) == ("truncated", cut, ends[k])


@given(headers_and_layers(), st.lists(st.integers(1, 64), min_size=1, max_size=20), st.integers(0, 10_000))
@settings(max_examples=150, deadline=None)
def test_streamed_reading_equals_whole_file_reading_for_any_chunking(case, sizes, cut_seed):
    header, payloads = case
    whole = psem.dumps(header, payloads)
    data = whole[: random.Random(cut_seed).randint(len(psem.dumps(header, [])), len(whole))]
    expected = psem.loads(data)
    streamed = psem.read(io.BufferedReader(Trickle(data, sizes), buffer_size=7))
    raw = psem.read(Trickle(data, sizes))
    for got in (streamed, raw):
        assert got.header == expected.header
        assert got.layers == expected.layers
        assert got.end == expected.end


def contains_null(value) -> bool:
    if isinstance(value, dict):
        return any(v is None or contains_null(v) for v in value.values())
    if isinstance(value, list):
        return any(contains_null(v) for v in value)
    return False


@st.composite
def compact_cases(draw):
    """A header, its layers, and a profile that differs from it in params, layer count and metadata (or not at all)."""
    header, payloads = draw(headers_and_layers())
    if draw(st.booleans()):
        return header, payloads, header
    profile = psem.PsemHeader(header.encoder, header.token_shape,
                              {**header.codec, "params": draw(st.dictionaries(st.text(max_size=8), json_values, max_size=3))},
                              header.entropy, layers=draw(st.integers(0, 64)), token_dtype=header.token_dtype)
    return header, payloads, profile


@given(compact_cases())
@settings(max_examples=150, deadline=None)
def test_compact_round_trip_and_conversion_both_ways(case):
    header, payloads, profile = case
    try:
        compact = psem.dumps(header, payloads, profile=profile)
    except psem.InvalidHeaderError as error:  # a null a merge patch cannot carry: refused, never written wrong
        assert "merge patch cannot carry" in str(error) and contains_null(header.to_dict())
        return
    store = psem.ProfileStore(profiles=[psem.Profile.of(profile)])
    parsed = psem.loads(compact, profiles=store)
    assert (parsed.header, parsed.layers) == (header, payloads)
    assert len(compact) == psem.header_size(header, profile) + sum(psem.chunk_sizes(payloads, compact=True))
    full = psem.dumps(header, payloads)
    expanded, recompacted = io.BytesIO(), io.BytesIO()
    psem.truncate(compact, expanded, form="full", profiles=store)
    psem.truncate(full, recompacted, form="compact", profile_for=lambda h: profile)
    assert expanded.getvalue() == full and recompacted.getvalue() == compact
    patched = header.to_json_bytes() != profile.to_json_bytes()
    assert bool(compact[5] & 1) == patched  # the flag byte: a patch follows only when the header differs
    assert patched or psem.header_size(header, profile) == 18


@given(compact_cases(), st.data())
@settings(max_examples=100, deadline=None)
def test_compact_prefixes_truncation_and_budgets(case, data):
    header, payloads, profile = case
    if contains_null(header.to_dict()):
        return
    out = io.BytesIO()
    writer = psem.PsemWriter(out, header, profile=profile)
    for p in payloads:
        writer.add_layer(p)
    whole, store = out.getvalue(), psem.ProfileStore(profiles=[psem.Profile.of(profile)])
    ends = [writer.header_size] + writer.layer_ends
    assert ends == [writer.header_size] + psem.prefix_sizes(writer.header_size, psem.chunk_sizes(payloads, True))
    k = data.draw(st.integers(0, len(payloads)))
    parsed = psem.loads(whole[: ends[k]], profiles=store)
    assert parsed.layers == payloads[:k] and parsed.end.cut_at is None
    if k >= 1:
        budget = data.draw(st.integers(ends[k], (ends[k + 1] - 1) if k < len(payloads) else ends[k] + 100))
        assert psem.layers_within(writer.header_size, psem.chunk_sizes(payloads, True), None, budget) == k
        by_bytes = io.BytesIO()
        assert psem.truncate(whole, by_bytes, max_bytes=budget, profiles=store).layers == k
        assert by_bytes.getvalue() == whole[: ends[k]]
    if k < len(payloads):
        cut = data.draw(st.integers(ends[k] + 1, ends[k + 1] - 1))
        parsed = psem.loads(whole[:cut], profiles=store)
        assert parsed.layers == payloads[:k]
        assert (parsed.end.status, parsed.end.bytes_read, parsed.end.cut_at) == ("truncated", cut, ends[k])


@given(compact_cases(), st.lists(st.integers(1, 64), min_size=1, max_size=20), st.integers(0, 10_000))
@settings(max_examples=100, deadline=None)
def test_compact_streamed_reading_equals_whole_file_reading_for_any_chunking(case, sizes, cut_seed):
    header, payloads, profile = case
    if contains_null(header.to_dict()):
        return
    store = psem.ProfileStore(profiles=[psem.Profile.of(profile)])
    whole = psem.dumps(header, payloads, profile=profile)
    data = whole[: random.Random(cut_seed).randint(psem.header_size(header, profile), len(whole))]
    expected = psem.loads(data, profiles=store)
    for stream in (io.BufferedReader(Trickle(data, sizes), buffer_size=7), Trickle(data, sizes)):
        got = psem.read(stream, profiles=store)
        assert (got.header, got.layers, got.end) == (expected.header, expected.layers, expected.end)
