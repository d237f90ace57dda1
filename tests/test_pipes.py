"""Edge to cloud through real pipes and real `nc` on loopback: whole streams, cut streams, the ssh contract."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time

import pytest

from prosemc import format as psem

CAT_LABELS = {"tabby cat", "tiger cat", "Persian cat", "Siamese cat", "Egyptian Mau", "lynx"}


def sh(command: str, env: dict[str, str], pipefail: bool = True) -> subprocess.CompletedProcess:
    """Run a shell pipeline; with pipefail, any failing stage fails it."""
    options = ["-o", "pipefail"] if pipefail else []
    return subprocess.run(["bash", *options, "-c", command], capture_output=True, env=env, timeout=300)


def test_encode_to_stdout_writes_only_psem_bytes(chelsea, cli_env):
    result = sh(f"prosemc encode {chelsea} -o -", cli_env)
    assert result.returncode == 0, result.stderr
    parsed = psem.loads(result.stdout)
    assert parsed.end.status == "complete" and parsed.header.encoder == "lite"
    assert b"layers" in result.stderr  # the human report went to stderr


def test_encode_pipe_query_answers(chelsea, cli_env):
    """The ssh recipe's contract: `prosemc query -` reads the stream on stdin and prints only the answer."""
    result = sh(f"prosemc encode {chelsea} -o - | sh -c 'prosemc query - \"what is shown?\" --json'", cli_env)
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout)
    assert answer["status"] == "complete" and answer["labels"][0]["label"] in CAT_LABELS


def test_stream_cut_mid_layer_answers_from_complete_layers(chelsea, cli_env, tmp_path):
    whole = sh(f"prosemc encode {chelsea} -o -", cli_env).stdout
    reader = psem.PsemReader(whole)
    ends = [chunk.end for chunk in reader]
    cut = ends[1] + 7  # two complete layers and 7 bytes of the third
    # head closes the pipe early, as a dropped link would: the edge side sees EPIPE, so no pipefail here
    result = sh(f"prosemc encode {chelsea} -o - | head -c {cut} | prosemc query - 'what is shown?' --json", cli_env,
                pipefail=False)
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout)
    assert (len(answer["layers"]), answer["status"], answer["bytes"]) == (2, "truncated", ends[1])
    assert f"prosemc: <stdin>: 2 complete layers, then truncated at byte {cut}" in result.stderr.decode()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_listening(port: int, timeout: float = 30) -> None:
    """Wait until something listens on `port` (read from /proc, so no connection is used up)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for table in ("/proc/net/tcp", "/proc/net/tcp6"):
            with open(table) as f:
                for line in f.readlines()[1:]:
                    local, state = line.split()[1], line.split()[3]
                    if state == "0A" and int(local.split(":")[1], 16) == port:
                        return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on port {port}")


@pytest.mark.skipif(shutil.which("nc") is None, reason="`make test` installs netcat; run the suite through make")
@pytest.mark.parametrize("budget, form", [(None, []), (1500, []), (384, ["--compact"])])
def test_netcat_recipe_on_loopback(chelsea, cli_env, budget, form):
    port = free_port()
    server = subprocess.Popen(["psem-serve", str(port), "what is shown?", "--json"], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, env=cli_env)
    try:
        wait_listening(port)
        extra = form + (["--max-bytes", str(budget)] if budget else [])
        sent = subprocess.run(["psem-send", str(chelsea), "127.0.0.1", str(port), *extra], capture_output=True,
                              env=cli_env, timeout=300)
        assert sent.returncode == 0, sent.stderr
        out, err = server.communicate(timeout=300)
    finally:
        server.kill()
    assert server.returncode == 0, err
    answer = json.loads(out)
    assert answer["model"] == "lite" and answer["answer"]
    assert answer["labels"][0]["label"] in CAT_LABELS
    if budget:
        assert answer["bytes"] <= budget and answer["status"] == "prefix"
    else:
        assert answer["status"] == "complete"
