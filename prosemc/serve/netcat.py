"""The netcat side door of `prosemc serve --nc-port`: a question line, then the `.psem` stream; one JSON line back.

    { printf '%s\\n' "what is shown?"; prosemc encode cam.jpg -o -; } | nc -N cloud 9000
    -> {"schema": 1, "command": "query", "answer": ..., "labels": ..., "layers": [...], ...}   (the `query --json` report)
With a token, the first line must be `Bearer <token>`. Errors come back as {"error": ..., "status": ...}.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import socket
import time
from typing import AsyncIterator

from prosemc.format import MAGIC
from prosemc.serve.app import ServerConfig, log_line
from prosemc.serve.cloud import CloudModel
from prosemc.serve.protocol import RequestError, error_body, parse_question
from prosemc.serve.session import ClientGone, QueryOptions, run_query

MAX_LINE = 4096


async def _line(reader: asyncio.StreamReader, timeout: float) -> str:
    try:
        raw = await asyncio.wait_for(reader.readuntil(b"\n"), timeout)
    except asyncio.TimeoutError:
        raise RequestError(408, f"no question line within {timeout:g} s; send the question, a newline, then the stream") from None
    except asyncio.LimitOverrunError:
        raise RequestError(413, f"the first line is over {MAX_LINE} bytes; send the question on one short line") from None
    except asyncio.IncompleteReadError as error:
        raw = error.partial
    if raw.startswith(MAGIC[:4]):
        raise RequestError(400, "the stream started without a question line; send the question and a newline first: "
                                "{ printf 'what is shown?\\n'; prosemc encode IMG -o -; } | nc -N HOST PORT")
    try:
        return raw.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise RequestError(400, "the question line is not UTF-8 text") from None


async def _chunks(reader: asyncio.StreamReader) -> AsyncIterator[bytes]:
    try:
        while piece := await reader.read(1 << 16):
            yield piece
    except ConnectionError:
        raise ClientGone("the client reset the connection mid-stream") from None


def handler(config: ServerConfig, cloud: CloudModel):
    """The asyncio connection handler for the netcat port."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        started = time.monotonic()
        peer = writer.get_extra_info("peername") or ("?", 0)
        client = f"{peer[0]}:{peer[1]} (nc)"
        try:
            first = await _line(reader, config.read_timeout)
            if config.token:
                if not hmac.compare_digest(first.encode(), f"Bearer {config.token}".encode()):
                    raise RequestError(401, "missing or wrong token line; send `Bearer <token>` as the first line")
                first = await _line(reader, config.read_timeout)
            options = QueryOptions(question=parse_question(first), llm=config.llm)
            report = await run_query(_chunks(reader), options, cloud, read_timeout=config.read_timeout,
                                     max_bytes=config.max_body_bytes)
            log_line(client, 200, started, bytes=report["bytes"],
                     layers=f"{len(report['layers'])}/{report['layers_declared']}", stop=report["stopped_by"])
            reply = report
        except ClientGone:
            log_line(client, 499, started, error="client-gone")
            writer.close()
            return
        except Exception as error:  # noqa: BLE001 - every failure is one JSON line
            reply = error_body(error)
            log_line(client, reply["status"], started, error=json.dumps(reply["error"][:120]))
        try:
            writer.write(json.dumps(reply).encode() + b"\n")
            await writer.drain()
            writer.close()
        except ConnectionError:
            pass

    return handle


async def start(config: ServerConfig, cloud: CloudModel, sock: socket.socket) -> asyncio.AbstractServer:
    """Serve the netcat protocol on an already bound, listening socket."""
    return await asyncio.start_server(handler(config, cloud), sock=sock, limit=MAX_LINE)
