"""A real `prosemc serve` process for tests: started on an ephemeral port, its log collected, stopped at the end."""

from __future__ import annotations

import re
import subprocess
import sys
import threading
import time

LISTENING = re.compile(r"listening on (http://\S+?)(?:,| \(|$)(?:.*netcat on port (\d+))?")


class ServerProcess:
    """`prosemc serve ARGS` (or another command line that runs it, e.g. under `ip netns exec` or cli/psem-serve);
    url and nc_port from its `listening` line."""

    def __init__(self, args: list[str], env: dict[str, str], wrap: list[str] | None = None, timeout: float = 240,
                 argv: list[str] | None = None) -> None:
        argv = argv or [sys.executable, "-m", "prosemc", "serve", *args]
        self.process = subprocess.Popen((wrap or []) + argv, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                        env=env, text=True)
        self.lines: list[str] = []
        self._ready = threading.Event()
        self.url = ""
        self.nc_port: int | None = None
        threading.Thread(target=self._read, daemon=True).start()
        if not self._ready.wait(timeout) or not self.url:
            self.stop()
            raise RuntimeError("prosemc serve did not start:\n" + "\n".join(self.lines[-20:]))

    def _read(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.lines.append(line.rstrip("\n"))
            match = LISTENING.search(line)
            if match and not self._ready.is_set():
                self.url = match.group(1)
                self.nc_port = int(match.group(2)) if match.group(2) else None
                self._ready.set()
        self._ready.set()

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    def log_after(self, mark: int, contains: str, timeout: float = 10) -> str:
        """The first log line after line index `mark` that contains `contains` (waits for it)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in self.lines[mark:]:
                if contains in line:
                    return line
            time.sleep(0.05)
        raise AssertionError(f"no log line with {contains!r}; log:\n" + "\n".join(self.lines[mark:]))

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def http(url: str, method: str = "GET", path: str = "/healthz", pieces: list[bytes] | None = None,
         headers: dict[str, str] | None = None, pause_s: float = 0.0, close_after: int | None = None,
         timeout: float = 60) -> tuple[int, bytes]:
    """A raw HTTP/1.1 request; a body goes chunked, piece by piece, with `pause_s` after the first piece.

    close_after=K: close the socket after K pieces without ending the body (a client killed mid-stream).
    """
    import http.client
    import socket

    host, port = url.split("//")[1].rsplit(":", 1)
    sock = socket.create_connection((host, int(port)), timeout=timeout)
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}", "Connection: close",
             *(f"{k}: {v}" for k, v in (headers or {}).items())]
    if pieces is not None:
        lines.append("Transfer-Encoding: chunked")
    sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
    try:
        for index, piece in enumerate(pieces or []):
            if close_after is not None and index == close_after:
                sock.close()
                return 0, b""
            sock.sendall(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
            if index == 0 and pause_s:
                time.sleep(pause_s)
        if pieces is not None:
            sock.sendall(b"0\r\n\r\n")
    except (BrokenPipeError, ConnectionResetError):
        pass  # the server answered (and closed) before the body ended: read what it said
    response = http.client.HTTPResponse(sock)
    response.begin()
    body = response.read()
    sock.close()
    return response.status, body
