"""The protocol over a real thin link (1 Mbps, 200 ms round trip; prosemc.bench.link): network namespaces with
tbf and a userspace delay stage where permitted (root), and the throttling TCP relay in every case."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from prosemc.bench.link import PREFIX, namespaces_unavailable, thin_link
from serving import ServerProcess

NO_NAMESPACES = namespaces_unavailable()
needs_namespaces = pytest.mark.skipif(bool(NO_NAMESPACES), reason=f"namespace link not permitted here "
                                      f"({NO_NAMESPACES}); the relay test below covers the protocol")


def namespaces() -> set[str]:
    listing = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    return {line.split()[0] for line in listing.splitlines() if line.startswith(PREFIX)}


def send_over(link, url: str, chelsea, env, *extra: str) -> dict:
    done = subprocess.run(link.edge_command([sys.executable, "-m", "prosemc", "send", str(chelsea), url,
                                             "what is shown?", "--no-llm", "--json", *extra]),
                          capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@needs_namespaces
def test_send_over_the_namespace_link(chelsea, cli_env):
    with thin_link(1_000_000, 0.2, kind="netns") as link:
        assert link.kind == "netns" and namespaces() >= {f"{link.name}-edge", f"{link.name}-cloud"}
        server = ServerProcess(["--host", link.cloud_host, "--port", "0", "--no-llm"], cli_env,
                               wrap=link.cloud_command([]))
        try:
            start = time.monotonic()
            report = send_over(link, server.url, chelsea, cli_env, "--deadline", "8", "--bandwidth", "1mbit")
            sent = report["send"]
            # the TCP handshake crosses the link: one 200 ms round trip, not loopback's microseconds
            assert 190 <= sent["rtt_ms"] <= 600 and time.monotonic() - start > 0.4
            assert len(report["layers"]) == 6 == len(sent["layers"]) and report["stopped_by"] == "end"
            if sent["measured_bandwidth_bps"]:  # layer arrivals at the server, ~40 ms apart: the order of 1 Mbps
                assert 0.25e6 <= sent["measured_bandwidth_bps"] <= 2.5e6  # tbf burst and timing jitter blur it
        finally:
            server.stop()
    assert not {name for name in namespaces() if name.startswith(link.name)}  # the link's namespaces are gone


def test_send_over_the_throttling_relay(chelsea, cli_env):
    """The fallback link: rate and delay of the bytes on loopback (runs with or without namespaces)."""
    server = ServerProcess(["--port", "0", "--no-llm"], cli_env)
    try:
        with thin_link(1_000_000, 0.2, kind="relay") as link:
            host, port = link.address(server.port)
            start = time.monotonic()
            report = send_over(link, f"http://{host}:{port}", chelsea, cli_env, "--confidence", "0.9")
            # GET /v1/models and the query each cross the relay both ways: at least two 200 ms round trips
            assert time.monotonic() - start > 0.4
            assert report["send"]["plan"] == "confidence" and len(report["layers"]) < 6
    finally:
        server.stop()
