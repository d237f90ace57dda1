"""Clients of `prosemc bench serve`, run at the edge end of the thin link (`python -m prosemc.bench.serve_client`).

    latency URL PSEM... --repeats R        per request: a new connection, GET /healthz (pure link time), then
                                           PUT the .psem (label-only and full answer); seconds of each
    load URL PSEM... --clients C --seconds S [--stall] [--kill]
                                           C threads sending label-only queries back to back for S seconds
                                           (+ a client that stalls mid-stream, + one killed mid-stream, looping)
Prints one JSON object on stdout.
"""

from __future__ import annotations

import argparse
import json
import socket
import threading
import time
import urllib.parse
from pathlib import Path
from typing import Any

from prosemc.serve.client import HttpConnection

QUESTION = "what is shown?"


def query_once(url: str, data: bytes, llm: bool) -> tuple[float, float, dict[str, Any]]:
    """(seconds for a new connection + GET /healthz, seconds for a new connection + the query, the reply)."""
    start = time.perf_counter()
    probe = HttpConnection.open(url, None)
    probe.request("GET", "/healthz")
    probe.close()
    link_s = time.perf_counter() - start
    start = time.perf_counter()
    connection = HttpConnection.open(url, None)
    path = "/v1/query?" + urllib.parse.urlencode({"q": QUESTION, "llm": "1" if llm else "0"})
    upload = connection.upload("PUT", path, events=False)
    upload.send(data)
    upload.finish()
    events = list(upload.events(300))
    seconds = time.perf_counter() - start
    connection.close()
    reply = events[-1] if events else {}
    if upload.status != 200:
        raise RuntimeError(f"query failed ({upload.status}): {reply}")
    return link_s, seconds, reply


def latency(url: str, streams: list[bytes], repeats: int) -> dict[str, Any]:
    rows = []
    for llm in (False, True):
        for index, data in enumerate(streams):
            for _ in range(repeats):
                link_s, total_s, reply = query_once(url, data, llm)
                rows.append({"mode": "llm" if llm else "label_only", "photo": index, "bytes": len(data), "link_s": link_s,
                             "total_s": total_s, "server_ms": reply["timings_ms"], "top1": reply["labels"][0]["label"]})
    return {"rows": rows}


def _raw_stall(url: str, data: bytes, stop: threading.Event, kill: bool, counts: dict[str, int]) -> None:
    """Loop: send the header and half of layer 1, then stall (until the server's read timeout) or vanish."""
    host, port = urllib.parse.urlsplit(url).hostname, urllib.parse.urlsplit(url).port
    piece = data[: max(1, len(data) // 4)]
    while not stop.is_set():
        try:
            sock = socket.create_connection((host, port), timeout=60)
            sock.sendall(f"PUT /v1/query?q=x HTTP/1.1\r\nHost: {host}\r\nTransfer-Encoding: chunked\r\n\r\n".encode()
                         + f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
            if kill:
                time.sleep(0.2)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")  # RST
            else:
                sock.recv(4096)  # the server's 408 after its read timeout
            sock.close()
            counts["killed" if kill else "stalled"] += 1
        except OSError:
            time.sleep(0.1)


def load(url: str, streams: list[bytes], clients: int, seconds: float, stall: bool, kill: bool) -> dict[str, Any]:
    stop = threading.Event()
    latencies: list[list[float]] = [[] for _ in range(clients)]
    failures: list[str] = []
    counts = {"stalled": 0, "killed": 0}

    def client(index: int) -> None:
        turn = index
        while not stop.is_set():
            data = streams[turn % len(streams)]
            turn += 1
            start = time.perf_counter()
            try:
                connection = HttpConnection.open(url, None, timeout=60)
                upload = connection.upload("PUT", "/v1/query?q=what&llm=0", events=False)
                upload.send(data)
                upload.finish()
                events = list(upload.events(120))
                connection.close()
                if upload.status != 200 or not events or "answer" not in events[-1]:
                    failures.append(f"{upload.status}: {events[-1] if events else None}")
                    continue
            except (OSError, ConnectionError) as error:
                failures.append(repr(error))
                continue
            latencies[index].append(time.perf_counter() - start)

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(clients)]
    if stall:
        threads.append(threading.Thread(target=_raw_stall, args=(url, streams[0], stop, False, counts), daemon=True))
    if kill:
        threads.append(threading.Thread(target=_raw_stall, args=(url, streams[0], stop, True, counts), daemon=True))
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    time.sleep(seconds)
    stop.set()
    for thread in threads:
        thread.join(timeout=130)
    elapsed = time.perf_counter() - started
    return {"latencies_s": [x for per in latencies for x in per], "failures": failures, "elapsed_s": elapsed, **counts}


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m prosemc.bench.serve_client")
    parser.add_argument("mode", choices=["latency", "load"])
    parser.add_argument("url")
    parser.add_argument("psem", nargs="+", type=Path)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=120)
    parser.add_argument("--stall", action="store_true")
    parser.add_argument("--kill", action="store_true")
    args = parser.parse_args()
    streams = [path.read_bytes() for path in args.psem]
    if args.mode == "latency":
        result = latency(args.url, streams, args.repeats)
    else:
        result = load(args.url, streams, args.clients, args.seconds, args.stall, args.kill)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
