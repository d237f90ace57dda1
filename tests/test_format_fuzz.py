"""Fixed-seed fuzzing of both forms: every prefix and 10,000+ mutations parse or raise PsemError, nothing else;
memory bounded."""

from __future__ import annotations

import io
import random
import struct
import tracemalloc

import pytest

from prosemc import format as psem
from prosemc.format.framing import encode_varint, read_varint
from prosemc.format.spec import CHUNK_FRAME, COMPACT_HEAD, PREAMBLE

HEADER = psem.PsemHeader("lite", (49, 1280), {"id": "sr-baseline/1", "model_sha256": None, "params": {"s": [1, 2]}},
                         {"id": "constriction-ans/1"}, layers=4, metadata={"k": "v"})
PROFILE = psem.PsemHeader("lite", (49, 1280), {"id": "sr-baseline/1", "params": {}}, {"id": "constriction-ans/1"},
                          layers=4)  # the compact file patches params and metadata onto it
PROFILES = psem.ProfileStore(profiles=[psem.Profile.of(PROFILE)])
PAYLOADS = [bytes(range(i, i + 40 * (i + 1))) for i in range(4)]
FILE = psem.dumps(HEADER, PAYLOADS)
COMPACT = psem.dumps(HEADER, PAYLOADS, profile=PROFILE)
FILES = {"full": FILE, "compact": COMPACT}


def compact_varint_offsets(data: bytes) -> list[tuple[int, int]]:
    """(offset, byte length) of the patch length and of every chunk tag in a valid compact file."""
    stream = io.BytesIO(data[COMPACT_HEAD.size:])
    patch_length, raw = read_varint(stream)
    fields = [(COMPACT_HEAD.size, len(raw))]
    pos = COMPACT_HEAD.size + len(raw) + patch_length + 4
    while pos < len(data):
        tag, raw = read_varint(io.BytesIO(data[pos:]))
        fields.append((pos, len(raw)))
        pos += len(raw) + (tag >> 2) + 4
    return fields


def length_field_offsets(data: bytes) -> list[int]:
    """Offsets of the header length field and of every chunk length field in a valid file."""
    offsets = [12]
    pos = PREAMBLE.size + struct.unpack_from("<I", data, 12)[0] + 4
    while pos + CHUNK_FRAME.size <= len(data):
        offsets.append(pos + 8)
        pos += CHUNK_FRAME.size + struct.unpack_from("<I", data, pos + 8)[0] + 4
    return offsets


def parse_or_psem_error(data: bytes) -> None:
    try:
        parsed = psem.loads(data, profiles=PROFILES)
    except psem.PsemError:
        return
    assert parsed.end is not None and len(parsed.layers) <= HEADER.layers


@pytest.mark.parametrize("form", FILES)
def test_every_prefix_parses_or_raises_psem_error(form):
    data = FILES[form]
    for n in range(len(data) + 1):
        parse_or_psem_error(data[:n])


def test_random_mutations_raise_only_psem_errors():
    rng = random.Random(20261127)
    fields = length_field_offsets(FILE)
    assert len(fields) == 5
    outcomes = {"ok": 0, "error": 0}
    for i in range(12_000):
        data = bytearray(FILE)
        kind = i % 6
        if kind == 0:  # bit flips
            for _ in range(rng.randint(1, 4)):
                pos = rng.randrange(len(data))
                data[pos] ^= 1 << rng.randrange(8)
        elif kind == 1:  # inserted bytes
            pos = rng.randrange(len(data) + 1)
            data[pos:pos] = rng.randbytes(rng.randint(1, 16))
        elif kind == 2:  # deleted bytes
            pos = rng.randrange(len(data))
            del data[pos : pos + rng.randint(1, 16)]
        else:  # a length field set to 0, to the cap, to the cap + 1, or to 2^32-1
            value = rng.choice([0, psem.DEFAULT_LIMITS.header_bytes, psem.DEFAULT_LIMITS.chunk_bytes,
                                psem.DEFAULT_LIMITS.chunk_bytes + 1, 2**32 - 1])
            struct.pack_into("<I", data, rng.choice(fields), value)
        try:
            psem.loads(bytes(data))
            outcomes["ok"] += 1
        except psem.PsemError:
            outcomes["error"] += 1
    assert outcomes["ok"] + outcomes["error"] == 12_000
    assert outcomes["error"] > 9_000  # CRCs catch nearly every mutation


def test_random_mutations_of_a_compact_file_raise_only_psem_errors():
    rng = random.Random(20261205)
    fields = compact_varint_offsets(COMPACT)
    assert len(fields) == 5  # the patch length and four chunk tags
    cap = psem.DEFAULT_LIMITS.chunk_bytes
    outcomes = {"ok": 0, "error": 0}
    for i in range(12_000):
        data = bytearray(COMPACT)
        kind = i % 6
        if kind == 0:
            for _ in range(rng.randint(1, 4)):
                pos = rng.randrange(len(data))
                data[pos] ^= 1 << rng.randrange(8)
        elif kind == 1:
            pos = rng.randrange(len(data) + 1)
            data[pos:pos] = rng.randbytes(rng.randint(1, 16))
        elif kind == 2:
            pos = rng.randrange(len(data))
            del data[pos : pos + rng.randint(1, 16)]
        else:  # a varint rewritten: 0, the cap, the cap + 1, a run-on, or a non-minimal spelling; any kind bits
            offset, size = rng.choice(fields)
            value = rng.choice([0, cap, cap + 1, psem.DEFAULT_LIMITS.header_bytes + 1]) << 2 | rng.randrange(4)
            data[offset : offset + size] = rng.choice([encode_varint(value), b"\xff" * 6, encode_varint(value)[:-1]
                                                       + bytes([encode_varint(value)[-1] | 0x80, 0])])
        try:
            psem.loads(bytes(data), profiles=PROFILES)
            outcomes["ok"] += 1
        except psem.PsemError:
            outcomes["error"] += 1
    assert outcomes["ok"] + outcomes["error"] == 12_000
    assert outcomes["error"] > 9_000


@pytest.mark.parametrize("claimed", [psem.DEFAULT_LIMITS.chunk_bytes, psem.DEFAULT_LIMITS.header_bytes])
def test_compact_memory_follows_what_arrived_not_what_a_length_claims(claimed):
    offset, size = compact_varint_offsets(COMPACT)[2]  # the second layer's tag
    data = COMPACT[:offset] + encode_varint(claimed << 2) + b"\0" * 100
    tracemalloc.start()
    try:
        parsed = psem.loads(data, profiles=PROFILES)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert parsed.end.status == "truncated" and parsed.layers == PAYLOADS[:1]
    assert peak < 2 * 1024 * 1024


@pytest.mark.parametrize("claimed", [psem.DEFAULT_LIMITS.chunk_bytes, psem.DEFAULT_LIMITS.header_bytes])
def test_memory_follows_what_arrived_not_what_a_length_claims(claimed):
    data = bytearray(FILE[: length_field_offsets(FILE)[1] + 4])
    struct.pack_into("<I", data, length_field_offsets(FILE)[1], claimed)
    data += b"\0" * 100
    tracemalloc.start()
    try:
        parsed = psem.loads(bytes(data))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert parsed.end.status == "truncated" and parsed.layers == []
    assert peak < 2 * 1024 * 1024
