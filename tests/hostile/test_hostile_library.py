"""Library-level limits: every codec bounds its layers' size and work by the bytes received (and real data stays
within them), the lite answerer refuses implausible tokens, and the idle-timeout stream a server can share."""

from __future__ import annotations

import io
import os
import queue
import threading
import time
import tracemalloc

import numpy as np
import pytest

from prosemc import format as psem
from prosemc.codec import codec_from_header, make_codec
from prosemc.codec.limits import FREE_VALUES, VALUES_PER_BYTE, check_layer_work
from prosemc.errors import CodecError, ModelError
from prosemc.format.idle import IdleTimeoutStream, with_idle_timeout


def tokens(shape: tuple[int, int], seed: int = 0, sparse: bool = False) -> np.ndarray:
    values = np.random.default_rng(seed).standard_normal(shape).astype(np.float32)
    return np.clip(values * 2, 0, 6) if sparse else values


@pytest.mark.parametrize("name", ["baseline", "raw-f32", "raw-f16", "int8", "metaae"])
def test_every_codec_bounds_its_layers_and_real_layers_fit(name: str):
    x = tokens((49, 1280), sparse=True)
    codec = make_codec(name)
    encoded = codec.encode(x)
    bounds = codec.max_layer_bytes(encoded.params, x.shape)
    assert len(bounds) == len(encoded.layers)
    assert all(len(layer) <= bound < 64 << 20 for layer, bound in zip(encoded.layers, bounds))
    if name.startswith(("raw", "int8")):
        assert bounds == [len(encoded.layers[0])]  # exact: nothing else is a valid layer


def test_a_large_dense_grid_decodes_at_every_prefix():
    """Above the free allowance (3.1M values): layer 1 of dense tokens codes only its few outlier channels in a few
    dozen bytes, and must decode (it is charged N per channel it touches, not N*D)."""
    x = tokens((2048, 1536), seed=1)
    x[5, 7], x[900, 100], x[2000, 1500] = 40.0, -35.0, 38.0  # outliers: a few channels active in layer 1
    codec = make_codec("baseline")
    encoded = codec.encode(x)
    assert x.size > FREE_VALUES + VALUES_PER_BYTE * len(encoded.layers[0]) and len(encoded.layers[0]) < 200
    for k in range(1, len(encoded.layers) + 1):
        decoded = codec.decode(encoded.params, encoded.layers[:k], x.shape)
        assert decoded.shape == x.shape and np.isfinite(decoded).all()
        if k == 1:
            active = set(np.flatnonzero(np.abs(decoded).max(axis=0)).tolist())
            assert {7, 100, 1500} <= active and len(active) < 10  # (plus any natural > 5 sigma outlier)
    assert float(np.abs(decoded - x).max()) <= max(encoded.params["steps"][-1], 1e-6)


def test_metaae_refinement_layers_cannot_claim_work_they_do_not_pay_for():
    """metaae/1 at its largest token grid [4096, 1280] with 8-byte layers: refused before any grid is allocated."""
    codec = make_codec("metaae")
    sha = codec.describe()["codec"]["model_sha256"]
    count = codec.weights.layer_count
    header = {"id": "metaae/1", "model_sha256": sha, "params": {"layers": count}}
    decoder = codec_from_header(header, {"id": "constriction-ans/1"})
    tracemalloc.start()
    started = time.perf_counter()
    try:
        with pytest.raises(CodecError, match=r"layer 2: this metaae/1 layer claims 10487040 values of decoding work"):
            decoder.decode({"layers": count}, [b"\0" * 8] * count, (4096, 1280))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4 << 20 and time.perf_counter() - started < 5


def test_the_work_limit_is_the_free_allowance_plus_a_rate_per_byte():
    work = 4096 * 1280 * 2 + 1280  # a metaae/1 refinement layer at [4096, 1280]
    enough = -(-(work - FREE_VALUES) // VALUES_PER_BYTE)
    check_layer_work("metaae/1", work, enough)
    with pytest.raises(CodecError, match=rf"claims {work} values of decoding work in {enough - 1} bytes"):
        check_layer_work("metaae/1", work, enough - 1)
    check_layer_work("sr-baseline/1", FREE_VALUES, 0)  # any grid up to 2**21 values is free


def test_baseline_zero_bit_layers_are_refused_before_any_symbol_is_decoded():
    import runpy
    from pathlib import Path

    bomb = runpy.run_path(str(Path(__file__).parent / "make_cases.py"))["zero_bit_bomb"](rows=1024, columns=4096)
    parsed = psem.loads(bomb)
    codec = codec_from_header(parsed.header.codec, parsed.header.entropy)
    tracemalloc.start()
    try:
        with pytest.raises(CodecError, match=r"layer 1: this sr-baseline/1 layer claims 4198400 values of decoding work"):
            codec.decode(parsed.header.codec_params, parsed.layers, parsed.header.token_shape)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 64 << 20  # the grid's zeros are only reserved, never touched


@pytest.mark.parametrize("value, plausible", [(-1.6, True), (6.0, True), (4.8, True), (12.5, False), (-6.5, False),
                                              (3e38, False)])
def test_lite_refuses_tokens_no_image_could_give(value: float, plausible: bool):
    from prosemc.models.lite import token_array

    x = tokens((49, 1280), sparse=True)
    x[0, 0] = value
    if plausible:
        assert token_array(x).shape == (49, 1280)
    else:
        with pytest.raises(ModelError, match=r"far outside the \[0.0, 6.0\] of the lite encoder's ReLU6 features"):
            token_array(x)


FILE = psem.dumps(psem.PsemHeader("lite", (1, 4), {"id": "raw-f32/1", "model_sha256": None}, {"id": "none"}, 1),
                  [b"\0" * 16])


def test_idle_timeout_stream_over_a_queue_of_pieces():
    """The shape a server has: body pieces arriving on a queue; a quiet client ends the stream as `stalled`."""
    pieces: queue.Queue = queue.Queue()
    for start in range(0, len(FILE) - 5, 7):
        pieces.put(FILE[start:start + 7])
    stream = IdleTimeoutStream(pieces, 0.2, first_byte_timeout=5)
    reader = psem.PsemReader(stream)
    assert list(reader.layers()) == [] and reader.end.status == "truncated"
    assert stream.stalled and stream.bytes_read == (len(FILE) - 5 + 6) // 7 * 7
    pieces = queue.Queue()
    for piece in (FILE[:30], FILE[30:], None):
        pieces.put(piece)
    stream = IdleTimeoutStream(pieces, 0.2)
    assert [len(p) for p in psem.PsemReader(stream).layers()] == [16] and not stream.stalled


def test_idle_timeout_stream_over_a_pipe():
    read_end, write_end = os.pipe()
    with os.fdopen(read_end, "rb", buffering=0) as source, os.fdopen(write_end, "wb", buffering=0) as sink:
        def send() -> None:  # a pause, then the rest, then silence with the pipe left open
            sink.write(FILE[:40])
            time.sleep(0.3)
            sink.write(FILE[40:])

        writer = threading.Thread(target=send)
        writer.start()
        stream = with_idle_timeout(source, 1.0)
        assert isinstance(stream, IdleTimeoutStream)
        started = time.monotonic()
        reader = psem.PsemReader(stream)
        assert [len(p) for p in reader.layers()] == [16]  # the 0.3 s pause is shorter than the timeout
        assert stream.stalled and reader.end.status == "complete" and 1.0 <= time.monotonic() - started < 5
        writer.join()
        quiet = IdleTimeoutStream(source, 1.0, first_byte_timeout=0.2)  # nothing ever arrives
        assert quiet.read(10) == b"" and quiet.stalled and quiet.bytes_read == 0


def test_regular_and_in_memory_streams_are_never_wrapped(tmp_path):
    path = tmp_path / "x.psem"
    path.write_bytes(FILE)
    with open(path, "rb") as stream:
        assert with_idle_timeout(stream, 1.0) is stream
    memory = io.BytesIO(FILE)
    assert with_idle_timeout(memory, 1.0) is memory and with_idle_timeout(memory, None) is memory


def test_read_tokens_over_a_server_queue_decodes_what_arrived_before_the_stall():
    """How a server reads a client's body: pieces on a queue behind an IdleTimeoutStream it made itself."""
    from prosemc.pipeline import read_tokens

    x = tokens((4, 8), seed=2)
    codec = make_codec("baseline")
    encoded = codec.encode(x)
    described = codec.describe()
    data = psem.dumps(psem.PsemHeader("lite", (4, 8), {**described["codec"], "params": encoded.params},
                                      described["entropy"], len(encoded.layers)), encoded.layers)
    first = next(iter(psem.PsemReader(data))).end
    pieces: queue.Queue = queue.Queue()
    pieces.put(data[: first + 3])  # layer 1 and 3 bytes of layer 2, then the client goes quiet
    decoded = read_tokens(IdleTimeoutStream(pieces, 0.2, first_byte_timeout=5), idle_timeout=None)
    assert (decoded.layers_used, decoded.stalled_after_s, decoded.end.status) == (1, 0.2, "truncated")
    np.testing.assert_array_equal(decoded.edge.tokens, codec.decode(encoded.params, encoded.layers[:1], x.shape))
