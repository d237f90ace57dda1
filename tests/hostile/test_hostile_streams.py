"""Streams that are too big, endless or stalled: memory follows what is kept, time what arrived, nothing hangs."""

from __future__ import annotations

import json
import runpy
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from hostile_harness import MIB, assert_refused, assert_within_bounds, run_measured, run_prosemc

from prosemc import format as psem
from prosemc.codec import make_codec

HERE = Path(__file__).resolve().parent
STREAMS = runpy.run_path(str(HERE / "make_cases.py"))["streams"]
UNANSWERABLE = "how many cats are there?"  # labels only: the answer needs no language model


@pytest.fixture(scope="module")
def lite_psem() -> bytes:
    """A 5-layer sr-baseline .psem of plausible lite tokens [49, 1280] (ReLU6-like), made without the encoder."""
    rng = np.random.default_rng(7)
    tokens = np.clip(rng.standard_normal((49, 1280)) * 2, 0, 6).astype(np.float32)
    codec = make_codec("baseline")
    encoded = codec.encode(tokens)
    described = codec.describe()
    header = psem.PsemHeader("lite", (49, 1280), {**described["codec"], "params": encoded.params},
                             described["entropy"], len(encoded.layers))
    return psem.dumps(header, encoded.layers)


def layer_ends(data: bytes) -> list[int]:
    return [chunk.end for chunk in psem.PsemReader(data)]


@pytest.mark.parametrize("command", ["decode", "query"])
def test_layers_a_codec_cannot_have_are_refused_at_the_header(command: str, tmp_path: Path, cli_env: dict[str, str]):
    """16 x 64 MiB layers after a header of a one-layer codec: refused before any is read (was 1.18 GB kept)."""
    pieces, size = STREAMS()["garbage-layers"]
    args = ["decode", "-", "-o", "t.safetensors"] if command == "decode" else ["query", "-", UNANSWERABLE]
    outcome = run_prosemc(args, cwd=tmp_path, env=cli_env, stdin=pieces, timeout=120)
    assert_refused(outcome, r"declares 16 layers, but its raw-f32/1 parameters describe 1", input_bytes=0,
                   folder=tmp_path)


def test_truncate_does_not_buffer_extension_chunks(tmp_path: Path, cli_env: dict[str, str]):
    """8 x 64 MiB extension chunks that truncate copies (was: held in memory until the next layer, 1.2 GB)."""
    pieces, size = STREAMS()["extension-flood"]
    outcome = run_prosemc(["truncate", "-", "-o", "-", "--layers", "2"], cwd=tmp_path, env=cli_env, stdin=pieces,
                          keep_stdout=False, timeout=600)
    assert outcome.returncode == 0, outcome.stderr
    assert outcome.stderr_lines == [f"prosemc: kept 1 layer, {size} bytes -> <stdout>"]  # all of it, extensions included
    assert_within_bounds(outcome, size)
    assert outcome.peak_rss_mib < 300, f"peak RSS {outcome.peak_rss_mib:.0f} MiB: extension chunks were buffered"


def test_decode_skips_extension_chunks_without_holding_them(tmp_path: Path, cli_env: dict[str, str]):
    pieces, size = STREAMS()["extension-flood"]
    outcome = run_prosemc(["decode", "-", "-o", "t.safetensors", "--json"], cwd=tmp_path, env=cli_env, stdin=pieces,
                          timeout=600)
    assert outcome.returncode == 0, outcome.stderr
    assert len(json.loads(outcome.stdout)["layers"]) == 1
    assert_within_bounds(outcome, size)
    assert outcome.peak_rss_mib < 100, f"peak RSS {outcome.peak_rss_mib:.0f} MiB: a skipped 64 MiB chunk was held"


@pytest.mark.parametrize("source", ["path", "stdin"])
def test_image_input_is_read_up_to_a_limit(source: str, tmp_path: Path, cli_env: dict[str, str]):
    """`encode /dev/zero` grew by ~150 MB/s until killed."""
    args = ["encode", "/dev/zero" if source == "path" else "-", "-o", "out.psem"]
    outcome = run_prosemc(args, cwd=tmp_path, env=cli_env, stdin=Path("/dev/zero") if source == "stdin" else None,
                          timeout=60)
    assert_refused(outcome, r"is over the 64 MiB limit for an image file", input_bytes=64 * MIB, folder=tmp_path)


def test_crop_before_scale_bounds_the_work_of_a_thin_image(tmp_path: Path, cli_env: dict[str, str]):
    """lite's preprocessing of a 1 x 20000 image (below the aspect-ratio check, straight to the model code): it
    scaled the short side to 224 first, 224 x 4,480,000 pixels, 4.3 GB and 194 s."""
    script = ("from PIL import Image\nfrom prosemc.models.lite import preprocess\n"
              "out = preprocess(Image.new('RGB', (1, 20000), (200, 10, 10)))\n"
              "print(out.shape, round(float(out[0].mean()), 3))\n")
    outcome = run_measured([sys.executable, "-c", script], cwd=tmp_path, env=cli_env, timeout=60)
    assert outcome.returncode == 0, outcome.stderr
    assert outcome.stdout.decode().split() == ["(3,", "224,", "224)", str(round((200 - 127) / 128, 3))]
    assert outcome.peak_rss_mib < 300 and outcome.seconds < 60


def test_stalled_stream_answers_from_complete_layers(lite_psem: bytes, tmp_path: Path, cli_env: dict[str, str]):
    """`(head -c N x.psem; sleep 30) | prosemc query - q` waited for ever; now it answers after --read-timeout."""
    cut = layer_ends(lite_psem)[0] + 7  # layer 1 and 7 bytes of layer 2, then silence with the pipe open
    outcome = run_prosemc(["query", "-", UNANSWERABLE, "--json", "--read-timeout", "1"], cwd=tmp_path, env=cli_env,
                          stdin=_then_silence(lite_psem[:cut], 200), timeout=120)
    out, err, child = outcome.stdout, outcome.stderr.encode(), outcome
    answer = json.loads(out)
    assert child.returncode == 0, err
    assert (answer["stalled"], answer["status"], len(answer["layers"])) == (True, "truncated", 1)
    assert err.decode().splitlines() == [
        f"prosemc: <stdin>: the sender stalled (no byte for 1 s); 1 complete layer, then truncated at byte {cut} "
        f"(inside the chunk starting at byte {cut - 7}); using 1 layer ({cut - 7} bytes)"]


def test_stall_inside_the_header_is_one_line(lite_psem: bytes, tmp_path: Path, cli_env: dict[str, str]):
    stalled = run_prosemc(["decode", "-", "-o", "t.safetensors", "--read-timeout", "1"], cwd=tmp_path, env=cli_env,
                          stdin=_then_silence(lite_psem[:10], 30), timeout=60)
    assert_refused(stalled, r"the sender stalled: no byte for 1 s after 10 bytes, before the \.psem header was "
                            r"complete", input_bytes=10, folder=tmp_path)


def test_a_learned_codec_stream_without_its_weights_hash_is_refused(tmp_path: Path, cli_env: dict[str, str]):
    """A valid metaae/1 stream whose header drops codec.model_sha256 was decoded with whatever weights were installed
    (made at test time with the installed weights, so that only the missing hash can refuse it)."""
    codec = make_codec("metaae")
    encoded = codec.encode(np.clip(np.random.default_rng(5).standard_normal((49, 1280)) * 2, 0, 6).astype(np.float32))
    header = psem.PsemHeader("lite", (49, 1280), {"id": "metaae/1", "params": encoded.params},
                             codec.describe()["entropy"], len(encoded.layers))
    data = psem.dumps(header, encoded.layers)
    outcome = run_prosemc(["decode", "-", "-o", "t.safetensors"], cwd=tmp_path, env=cli_env, stdin=data, timeout=120)
    assert_refused(outcome, r"names no codec.model_sha256, which a learned codec \(metaae/1\) requires",
                   input_bytes=len(data), folder=tmp_path)


def test_the_model_is_resolved_as_soon_as_the_header_arrives(tmp_path: Path, cli_env: dict[str, str]):
    """A stream of another model is refused at its header, while the sender still sends (the model loads then)."""
    header = psem.PsemHeader("someone/other-vlm@0123", (2, 2), {"id": "raw-f32/1", "model_sha256": None},
                             {"id": "none"}, layers=1)
    head = psem.dumps(header, [])
    outcome = run_prosemc(["query", "-", "what is shown?", "--read-timeout", "300"], cwd=tmp_path, env=cli_env,
                          stdin=_then_silence(head, 200), timeout=100)
    assert_refused(outcome, r"this \.psem was made by model 'someone/other-vlm@0123' .*; pass that checkpoint",
                   input_bytes=len(head), folder=tmp_path)


@pytest.mark.skipif(shutil.which("nc") is None, reason="`make test` installs netcat; run the suite through make")
def test_netcat_listener_answers_a_stalled_sender(lite_psem: bytes, cli_env: dict[str, str], tmp_path: Path):
    """cli/psem-serve blocked for ever on a sender that connected, sent part of a stream and went quiet."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**cli_env, "PSEM_READ_TIMEOUT": "2"}
    server = subprocess.Popen(["psem-serve", str(port), UNANSWERABLE, "--json"], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, env=env, cwd=tmp_path)
    try:
        client = _connect(port)
        client.sendall(lite_psem[: layer_ends(lite_psem)[1] + 3])
        out, err = server.communicate(timeout=120)  # the client stays connected and silent all along
        client.close()
    finally:
        server.kill()
    assert server.returncode == 0, err
    answer = json.loads(out)
    assert answer["stalled"] is True and len(answer["layers"]) == 2 and answer["labels"]


def _connect(port: int) -> socket.socket:
    deadline = time.monotonic() + 30
    while True:
        try:
            return socket.create_connection(("127.0.0.1", port))
        except ConnectionRefusedError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def _then_silence(data: bytes, seconds: float):
    """Pieces: `data`, then nothing for `seconds` with the pipe still open (a stalled sender)."""
    yield data
    time.sleep(seconds)
