"""Edge to cloud through real pipes: whole streams, cut streams, the ssh contract (netcat: tests/test_serve.py)."""

from __future__ import annotations

import json
import subprocess


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
    assert (answer["layers_used"], answer["status"], answer["bytes_used"]) == (2, "truncated", ends[1])
    assert f"2 complete layers, then truncated at byte {cut}" in result.stderr.decode()
