"""HTTP/1.1 for `prosemc send` over one kept-alive socket (h11 does the framing): a plain request, and a
full-duplex streamed upload whose NDJSON reply is read while the body is still being sent.

    connection = HttpConnection.open("http://cloud:8000", token)     (connect time ~ one round trip)
    status, body = connection.request("GET", "/v1/models")
    upload = connection.upload("PUT", "/v1/query?q=..&events=1")
    upload.send(piece) ... upload.wait_event(pred, timeout) ... upload.finish() ... upload.events()
Transport failures raise ConnectionError (send retries those); a server's refusal is an HTTP status.
"""

from __future__ import annotations

import json
import select
import socket
import ssl
import struct
import time
import urllib.parse
from typing import Any, Callable, Iterator

import h11

from prosemc.errors import InputError

USER_AGENT = "prosemc-send"
TCP_INFO_RTT_OFFSET = 68  # struct tcp_info: 8 one-byte fields, then u32 rto .. rcv_ssthresh (15), then tcpi_rtt (µs)


class HttpConnection:
    """One HTTP/1.1 connection to the server named by a base URL."""

    def __init__(self, sock: socket.socket, host: str, base_path: str, token: str | None, connect_s: float) -> None:
        self.sock = sock
        self.host = host
        self.base_path = base_path.rstrip("/")
        self.token = token
        self.connect_s = connect_s
        self.conn = h11.Connection(our_role=h11.CLIENT)

    @classmethod
    def open(cls, url: str, token: str | None, timeout: float = 10.0) -> "HttpConnection":
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise InputError(f"URL {url!r} is not http(s)://HOST[:PORT]; e.g. http://127.0.0.1:8000")
        port = parts.port or (443 if parts.scheme == "https" else 80)
        start = time.perf_counter()
        sock = socket.create_connection((parts.hostname, port), timeout=timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if parts.scheme == "https":
            sock = ssl.create_default_context().wrap_socket(sock, server_hostname=parts.hostname)
        return cls(sock, parts.netloc, parts.path, token, time.perf_counter() - start)

    @property
    def rtt_s(self) -> float:
        """The kernel's smoothed round-trip time of this connection (TCP_INFO tcpi_rtt), else the connect time.

        Unlike a wall-clock measurement it is not stretched by other work in this process (the edge encodes
        while the connection opens)."""
        try:
            info = self.sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 104)
            rtt_us = struct.unpack_from("I", info, TCP_INFO_RTT_OFFSET)[0]
        except (OSError, AttributeError, struct.error):
            return self.connect_s
        return rtt_us / 1e6 if rtt_us else self.connect_s

    def _headers(self, extra: list[tuple[str, str]]) -> list[tuple[str, str]]:
        headers = [("Host", self.host), ("User-Agent", USER_AGENT), *extra]
        if self.token:
            headers.append(("Authorization", f"Bearer {self.token}"))
        return headers

    def _send(self, event: Any) -> None:
        data = self.conn.send(event)
        if data:
            self.sock.sendall(data)

    def _next_event(self, timeout: float | None = None) -> Any:
        """The next h11 event from the server; ConnectionError when it closes or breaks the protocol."""
        while True:
            try:
                event = self.conn.next_event()
            except h11.RemoteProtocolError as error:
                raise ConnectionError(f"the server broke HTTP/1.1 ({error})") from None
            if event is not h11.NEED_DATA:
                if isinstance(event, h11.ConnectionClosed):
                    raise ConnectionError("the server closed the connection before replying")
                return event
            if timeout is not None:
                ready, _, _ = select.select([self.sock], [], [], timeout)
                if not ready:
                    return None
            self.conn.receive_data(self.sock.recv(1 << 16))

    def request(self, method: str, path: str) -> tuple[int, bytes]:
        """A body-less request; (status, body). Keeps the connection for the next request."""
        if self.conn.our_state is h11.DONE and self.conn.their_state is h11.DONE:
            self.conn.start_next_cycle()
        self._send(h11.Request(method=method, target=self.base_path + path, headers=self._headers([])))
        self._send(h11.EndOfMessage())
        response, body = None, bytearray()
        while True:
            event = self._next_event()
            if isinstance(event, h11.Response):
                response = event
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                assert response is not None
                return response.status_code, bytes(body)

    def upload(self, method: str, path: str, events: bool = True) -> "Upload":
        """Start a chunked upload; events=True asks for the NDJSON event stream, else one JSON reply."""
        if self.conn.our_state is h11.DONE and self.conn.their_state is h11.DONE:
            self.conn.start_next_cycle()
        accept = "application/x-ndjson" if events else "application/json"
        self._send(h11.Request(method=method, target=self.base_path + path, headers=self._headers(
            [("Transfer-Encoding", "chunked"), ("Content-Type", "application/x-psem"), ("Accept", accept)])))
        return Upload(self)

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


class Upload:
    """A streamed request body; the reply is read as it arrives, NDJSON events one by one."""

    def __init__(self, connection: HttpConnection) -> None:
        self.connection = connection
        self.status: int | None = None
        self._buffer = bytearray()
        self._events: list[dict[str, Any]] = []
        self.reply_done = False
        self.sent_bytes = 0

    def _absorb(self, event: Any) -> None:
        if isinstance(event, h11.Response):
            self.status = event.status_code
        elif isinstance(event, h11.Data):
            self._buffer += event.data
            while b"\n" in self._buffer:
                line, _, rest = bytes(self._buffer).partition(b"\n")
                self._buffer = bytearray(rest)
                if line.strip():
                    self._events.append(self._parse(line))
        elif isinstance(event, h11.EndOfMessage):
            if self._buffer.strip():
                self._events.append(self._parse(bytes(self._buffer)))
            self._buffer.clear()
            self.reply_done = True

    def _parse(self, line: bytes) -> dict[str, Any]:
        try:
            data = json.loads(line)
        except ValueError:
            raise ConnectionError(f"the server replied something that is not JSON: {line[:80]!r}") from None
        if not isinstance(data, dict):
            raise ConnectionError(f"the server replied something that is not a JSON object: {line[:80]!r}")
        if "event" not in data:  # a plain JSON reply (an error before any event)
            data = {"event": "error" if self.status and self.status >= 400 else "answer", **data}
        return data

    def poll(self, timeout: float = 0.0) -> None:
        """Absorb whatever reply bytes arrived within `timeout` seconds."""
        deadline = time.perf_counter() + timeout
        while not self.reply_done:
            event = self.connection._next_event(max(0.0, deadline - time.perf_counter()))
            if event is None:
                return
            self._absorb(event)

    def send(self, data: bytes) -> bool:
        """Send a body piece unless the server already replied in full; False when it did (stop sending)."""
        self.poll()
        if self.reply_done:
            return False
        try:
            self.connection._send(h11.Data(data=data))
        except (BrokenPipeError, ConnectionResetError):
            self.poll(1.0)  # the reply may already be here
            if not self.reply_done:
                raise
            return False
        self.sent_bytes += len(data)
        return True

    def finish(self) -> None:
        """End the body (the server answers from what it has)."""
        if not self.reply_done and self.connection.conn.our_state is h11.SEND_BODY:
            try:
                self.connection._send(h11.EndOfMessage())
            except (BrokenPipeError, ConnectionResetError):
                self.poll(1.0)
                if not self.reply_done:
                    raise

    def wait_event(self, accept: Callable[[dict[str, Any]], bool], timeout: float) -> dict[str, Any] | None:
        """The first event (new or seen) that `accept`s, waiting up to `timeout` s; None if none came."""
        deadline = time.perf_counter() + timeout
        while True:
            for event in self._events:
                if accept(event):
                    return event
            left = deadline - time.perf_counter()
            if self.reply_done or left <= 0:
                return None
            self.poll(min(left, 0.05))

    def events(self, timeout: float) -> Iterator[dict[str, Any]]:
        """Every event until the reply ends; ConnectionError if it has not within `timeout` s."""
        deadline = time.perf_counter() + timeout
        while not self.reply_done:
            if time.perf_counter() > deadline:
                raise ConnectionError(f"no complete reply within {timeout:g} s")
            self.poll(0.5)
        yield from self._events
