"""`prosemc serve --ray --replicas 2`: the same app and API as a Ray Serve deployment on a local Ray instance."""

from __future__ import annotations

import importlib.util
import json
import socket

import pytest

from serving import ServerProcess, http

pytestmark = pytest.mark.skipif(importlib.util.find_spec("ray") is None,
                                reason="Ray Serve is the optional extra prosemc[cluster]; `make test` installs it")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_replicas_behind_rays_proxy_serve_the_same_api(cli_env, chelsea, tmp_path):
    import subprocess
    import sys

    psem = tmp_path / "c.psem"
    subprocess.run([sys.executable, "-m", "prosemc", "encode", str(chelsea), "-o", str(psem)], check=True, env=cli_env,
                   capture_output=True)
    server = ServerProcess(["--ray", "--replicas", "2", "--no-llm", "--port", str(free_port())], cli_env, timeout=300)
    try:
        pids = set()
        for _ in range(40):
            status, body = http(server.url, path="/healthz")
            assert status == 200 and json.loads(body)["model"] == "lite"
            pids.add(json.loads(body)["pid"])
            if len(pids) == 2:
                break
        assert len(pids) == 2  # two replica processes answer behind one address
        status, body = http(server.url, path="/v1/models")
        assert status == 200 and json.loads(body)["default_codec"] == "metaae/1"
        status, body = http(server.url, "PUT", "/v1/query?q=what+is+shown%3F&llm=0", [psem.read_bytes()])
        reply = json.loads(body)
        assert status == 200 and len(reply["layers"]) == 6
        assert reply["labels"][0]["label"] in {"tabby cat", "tiger cat", "Egyptian Mau"}
        status, body = http(server.url, "PUT", "/v1/query?q=what", [b"not a psem"])
        assert status == 400 and "bad magic" in json.loads(body)["error"]
    finally:
        server.stop()
    assert server.process.returncode is not None
