"""A real thin link between an "edge" and a "cloud" on this machine, shared by the tests and `prosemc bench serve`.

    namespaces (root, the default where permitted):
      netns <name>-edge                                              netns <name>-cloud
      198.18.0.1 ── tun ──tbf(rate)──► [delay stage: hold each packet `delay`] ──► tun ── 198.18.0.2
                     ◄──────────────── [delay stage] ◄──tbf(rate)── tun ◄─────
      The kernel's TCP runs at both ends (handshake, slow start, ACK clocking); tbf paces each direction,
      a small userspace stage (this module, `stage`) moves IP packets between the two TUN devices after a
      fixed one-way delay (this kernel has no netem). 198.18.0.0/15 is the RFC 2544 benchmarking range; no
      route leaves the namespaces.
    relay (fallback where namespaces or TUN are not permitted):
      edge -> 127.0.0.1:relay ──► [pace bytes at `rate`, hold `delay`] ──► 127.0.0.1:server, and back.
      It models rate and delay of the bytes, not TCP's own handshake or slow start.

    with thin_link(rate_bps=1_000_000, rtt_s=0.2) as link:
        link.cloud_command(argv)   -> argv that runs inside the cloud end (server binds link.cloud_host)
        link.edge_command(argv)    -> argv that runs inside the edge end
        link.address(port)         -> (host, port) the edge dials to reach cloud_host:port

Run by hand: `python -m prosemc.bench.link up` prints the namespaces and waits; Ctrl-C removes them.
Every namespace it adds is removed on exit, and leftovers of dead processes are swept at the next start.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import heapq
import os
import selectors
import shutil
import socket
import struct
import subprocess
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Iterator

EDGE_IP, CLOUD_IP = "198.18.0.1", "198.18.0.2"
PREFIX = "prosemc-link-"
MTU = 1500
_TUNSETIFF = 0x400454CA
_IFF_TUN, _IFF_NO_PI = 0x0001, 0x1000


@dataclass
class ThinLink:
    """Where the edge and the cloud run and how the edge reaches the cloud; see the module docstring."""

    kind: str  # "netns" or "relay"
    rate_bps: int
    rtt_s: float
    reason: str = ""  # why the relay is used instead of namespaces
    name: str = ""
    _relays: list["Relay"] = field(default_factory=list)

    @property
    def cloud_host(self) -> str:
        return CLOUD_IP if self.kind == "netns" else "127.0.0.1"

    def cloud_command(self, argv: list[str]) -> list[str]:
        return ["ip", "netns", "exec", f"{self.name}-cloud", *argv] if self.kind == "netns" else list(argv)

    def edge_command(self, argv: list[str]) -> list[str]:
        return ["ip", "netns", "exec", f"{self.name}-edge", *argv] if self.kind == "netns" else list(argv)

    def address(self, port: int) -> tuple[str, int]:
        """The (host, port) the edge dials to reach the cloud's port (starts a relay in relay mode)."""
        if self.kind == "netns":
            return CLOUD_IP, port
        relay = Relay(port, self.rate_bps, self.rtt_s / 2)
        self._relays.append(relay)
        return "127.0.0.1", relay.port

    def describe(self) -> str:
        what = ("network namespaces + tbf + userspace delay (kernel TCP at both ends)" if self.kind == "netns"
                else f"throttling TCP relay on loopback ({self.reason})")
        return f"{self.rate_bps / 1e6:g} Mbps, {self.rtt_s * 1e3:g} ms round trip: {what}"


def _run(*argv: str) -> None:
    done = subprocess.run(argv, capture_output=True, text=True)
    if done.returncode:
        raise OSError(f"{' '.join(argv)}: {done.stderr.strip() or done.returncode}")


def namespaces_unavailable() -> str:
    """Why the namespace link cannot be built here ("" when it can)."""
    if os.geteuid() != 0:
        return "not root, so no network namespaces"
    if shutil.which("ip") is None or shutil.which("tc") is None:
        return "iproute2 (ip, tc) is not installed"
    if not os.path.exists("/dev/net/tun"):
        return "no /dev/net/tun"
    return ""


def sweep_stale() -> None:
    """Remove namespaces this module made in processes that no longer run."""
    listing = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    for line in listing.splitlines():
        name = line.split()[0] if line.split() else ""
        if name.startswith(PREFIX):
            pid = name[len(PREFIX):].split("-")[0]
            if pid.isdigit() and not os.path.exists(f"/proc/{pid}"):
                subprocess.run(["ip", "netns", "del", name], capture_output=True)


@contextlib.contextmanager
def thin_link(rate_bps: int = 1_000_000, rtt_s: float = 0.2, kind: str = "auto") -> Iterator[ThinLink]:
    """A link of `rate_bps` each way and `rtt_s` round trip; kind "auto" prefers namespaces, else the relay."""
    reason = namespaces_unavailable() if kind in ("auto", "netns") else "relay requested"
    if kind == "netns" and reason:
        raise OSError(f"cannot build the namespace link: {reason}")
    link = ThinLink("relay", rate_bps, rtt_s, reason)
    stage = None
    if not reason:
        link.name = f"{PREFIX}{os.getpid()}-{time.monotonic_ns() % 10**6}"
        try:
            sweep_stale()
            stage = _namespace_link(link.name, rate_bps, rtt_s / 2)
            link.kind = "netns"
        except OSError as error:
            _remove_namespaces(link.name)
            if kind == "netns":
                raise
            link.reason = f"namespaces not permitted: {error}"
    try:
        yield link
    finally:
        for relay in link._relays:
            relay.close()
        if stage is not None:
            stage.terminate()
            stage.wait(timeout=10)
        if link.kind == "netns":
            _remove_namespaces(link.name)


def _remove_namespaces(name: str, patience_s: float = 10.0) -> None:
    """Delete both namespaces of a link, retrying while the kernel still reports them busy (processes that ran
    inside them, e.g. under `ip netns exec`, may take a moment to exit)."""
    deadline = time.monotonic() + patience_s
    for end in ("edge", "cloud"):
        ns = f"{name}-{end}"
        while os.path.exists(f"/var/run/netns/{ns}"):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
            if not os.path.exists(f"/var/run/netns/{ns}") or time.monotonic() > deadline:
                break
            time.sleep(0.1)


def _namespace_link(name: str, rate_bps: int, delay_s: float) -> subprocess.Popen:
    """Two namespaces joined by TUN devices through a delay-stage child; tbf on both TUN devices."""
    tag = name[len(PREFIX):].replace("-", "")[-9:]
    devices = {"edge": f"pe{tag}", "cloud": f"pc{tag}"}
    stage = subprocess.Popen([sys.executable, "-m", "prosemc.bench.link", "stage", devices["edge"], devices["cloud"],
                              "--delay-ms", str(delay_s * 1e3)], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert stage.stdout is not None
        ready = stage.stdout.readline()
        if ready.strip() != b"ready":
            raise OSError(f"delay stage failed: {(ready + stage.stderr.read()).decode(errors='replace').strip()}")
        burst = max(MTU + 100, rate_bps // 8 // 250)  # one packet, or 4 ms of traffic at high rates
        for end, (here, there) in (("edge", (EDGE_IP, CLOUD_IP)), ("cloud", (CLOUD_IP, EDGE_IP))):
            ns, dev = f"{name}-{end}", devices[end]
            _run("ip", "netns", "add", ns)
            _run("ip", "link", "set", dev, "netns", ns)
            _run("ip", "-n", ns, "link", "set", "lo", "up")
            _run("ip", "-n", ns, "addr", "add", here, "peer", there, "dev", dev)
            _run("ip", "-n", ns, "link", "set", dev, "mtu", str(MTU), "up")
            _run("ip", "netns", "exec", ns, "tc", "qdisc", "add", "dev", dev, "root", "tbf", "rate", f"{rate_bps}bit",
                 "burst", str(burst), "latency", "2s")
    except BaseException:
        stage.terminate()
        stage.wait(timeout=10)
        raise
    return stage


# --- the userspace delay stage (a child process holding both TUN devices) --------------------------------


def _open_tun(name: str) -> int:
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK)
    fcntl.ioctl(fd, _TUNSETIFF, struct.pack("16sH", name.encode(), _IFF_TUN | _IFF_NO_PI))
    return fd


def run_stage(edge_device: str, cloud_device: str, delay_s: float) -> None:
    """Move IP packets between two TUN devices, each held `delay_s` (in order, per direction), until killed."""
    edge, cloud = _open_tun(edge_device), _open_tun(cloud_device)
    print("ready", flush=True)
    peer = {edge: cloud, cloud: edge}
    selector = selectors.DefaultSelector()
    for fd in (edge, cloud):
        selector.register(fd, selectors.EVENT_READ)
    pending: list[tuple[float, int, int, bytes]] = []  # (due, sequence, target fd, packet)
    sequence = 0
    while True:
        timeout = max(0.0, pending[0][0] - time.monotonic()) if pending else None
        for key, _ in selector.select(timeout):
            with contextlib.suppress(BlockingIOError):
                while True:
                    packet = os.read(key.fd, 65536)
                    sequence += 1
                    heapq.heappush(pending, (time.monotonic() + delay_s, sequence, peer[key.fd], packet))
        now = time.monotonic()
        while pending and pending[0][0] <= now:
            _, _, target, packet = heapq.heappop(pending)
            with contextlib.suppress(OSError):  # a device going away at shutdown
                os.write(target, packet)


# --- the fallback: a throttling TCP relay on loopback --------------------------------------------------------


class Relay:
    """127.0.0.1:port -> 127.0.0.1:target, each direction paced at rate_bps and held delay_s (threads)."""

    def __init__(self, target: int, rate_bps: int, delay_s: float) -> None:
        self.target, self.rate_bps, self.delay_s = target, rate_bps, delay_s
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.closed = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.closed.is_set():
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target))
            except OSError:
                client.close()
                continue
            for sock in (client, upstream):  # pacing is the relay's job: no Nagle delays on top
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(source, sink), daemon=True).start()

    def _pipe(self, source: socket.socket, sink: socket.socket) -> None:
        """Read from source; deliver each piece to sink when its last bit would arrive over the link."""
        queue: deque[tuple[float, bytes]] = deque()
        ready = threading.Condition()
        done = threading.Event()

        def deliver() -> None:
            while True:
                with ready:
                    while not queue and not done.is_set():
                        ready.wait()
                    if not queue:
                        break
                    due, data = queue.popleft()
                time.sleep(max(0.0, due - time.monotonic()))
                try:
                    sink.sendall(data)
                except OSError:
                    break
            with contextlib.suppress(OSError):
                sink.shutdown(socket.SHUT_WR)

        writer = threading.Thread(target=deliver, daemon=True)
        writer.start()
        wire_free = 0.0  # when the link finishes serialising what is queued
        try:
            while data := source.recv(MTU - 40):
                now = time.monotonic()
                wire_free = max(wire_free, now) + len(data) * 8 / self.rate_bps
                with ready:
                    queue.append((wire_free + self.delay_s, data))
                    ready.notify()
        except OSError:
            pass
        with ready:
            done.set()
            ready.notify()
        writer.join(timeout=30)

    def close(self) -> None:
        self.closed.set()
        self.listener.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m prosemc.bench.link", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="build a link, print how to use it, keep it until Ctrl-C")
    up.add_argument("--rate", type=float, default=1.0, help="Mbps each way (default 1)")
    up.add_argument("--rtt-ms", type=float, default=200.0, help="round trip in ms (default 200)")
    up.add_argument("--kind", choices=["auto", "netns", "relay"], default="auto")
    up.add_argument("--relay-port", type=int, default=8000, help="relay mode: the loopback port to forward to")
    stage = sub.add_parser("stage", help="(internal) the delay stage between two TUN devices")
    stage.add_argument("edge_device")
    stage.add_argument("cloud_device")
    stage.add_argument("--delay-ms", type=float, required=True)
    args = parser.parse_args(argv)
    if args.command == "stage":
        with contextlib.suppress(KeyboardInterrupt):
            run_stage(args.edge_device, args.cloud_device, args.delay_ms / 1e3)
        return
    with thin_link(int(args.rate * 1e6), args.rtt_ms / 1e3, args.kind) as link:
        print(link.describe())
        if link.kind == "netns":
            print(f"cloud: {' '.join(link.cloud_command(['prosemc', 'serve', '--host', CLOUD_IP]))}")
            print(f"edge:  {' '.join(link.edge_command(['prosemc', 'send', 'photo.jpg', f'http://{CLOUD_IP}:8000', 'what is shown?']))}")
        else:
            host, port = link.address(args.relay_port)
            print(f"edge dials {host}:{port} to reach 127.0.0.1:{args.relay_port}")
        with contextlib.suppress(KeyboardInterrupt):
            threading.Event().wait()


if __name__ == "__main__":
    main()
