"""The ASGI app of `prosemc serve` (starlette): health, models, and the streaming query endpoint.

    build_app(ServerConfig(...)) -> Starlette app      (uvicorn runs it; Ray Serve wraps the same app)
Every request is checked for the bearer token first (constant-time compare) when one is set; every reply
to /v1/query writes one log line on stderr: client, status, bytes, layers used, stop reason, latency.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import os
import sys
import time
from dataclasses import dataclass, field
from typing import Any, AsyncIterator

from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from prosemc.format import DEFAULT_LIMITS
from prosemc.serve.cloud import CloudModel
from prosemc.serve.protocol import (
    EVENTS_TYPE, HEALTH_PATH, MODELS_PATH, QUERY_PATH, RequestError, error_body, event_line, parse_flag,
    parse_number, parse_question,
)
from prosemc.serve.session import ClientGone, QueryOptions, run_query

LOG = logging.getLogger("prosemc.serve")
MAX_DEADLINE_S = 3600.0


@dataclass
class ServerConfig:
    """What `prosemc serve` was started with."""

    model: str = "lite"
    token: str | None = None
    llm: bool = True
    read_timeout: float = 30.0
    max_body_bytes: int = DEFAULT_LIMITS.chunk_bytes
    warm: bool = True
    extra: dict[str, Any] = field(default_factory=dict)


def log_line(client: str, status: int, started: float, **fields: Any) -> None:
    """One request log line on stderr."""
    parts = " ".join(f"{key}={value}" for key, value in fields.items() if value is not None)
    LOG.info("%s %d %s latency=%.3fs", client, status, parts, time.monotonic() - started)


class BearerAuth:
    """ASGI middleware: 401 unless the request carries `Authorization: Bearer <token>` (constant-time compare)."""

    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app = app
        self.expected = f"Bearer {token}".encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        given = dict(scope.get("headers") or []).get(b"authorization", b"")
        if hmac.compare_digest(given, self.expected):
            return await self.app(scope, receive, send)
        client = scope.get("client") or ("?", 0)
        log_line(f"{client[0]}:{client[1]}", 401, time.monotonic(), path=scope.get("path"), error="bad-token")
        response = JSONResponse({"error": "missing or wrong bearer token; send the header "
                                          "Authorization: Bearer <token> (PROSEMC_TOKEN)", "status": 401}, status_code=401,
                                headers={"WWW-Authenticate": "Bearer"})
        await response(scope, receive, send)


async def body_chunks(request: Request) -> AsyncIterator[bytes]:
    """The request body as it arrives; ClientGone when the client disconnects first."""
    try:
        async for piece in request.stream():
            if piece:
                yield piece
    except ClientDisconnect:
        raise ClientGone("the client closed the connection mid-stream") from None


class EventStream:
    """An NDJSON response fed by a queue (None ends it). Unlike starlette's StreamingResponse it never calls
    receive(), which would swallow the request body that is still arriving while events go out."""

    def __init__(self, queue: "asyncio.Queue[bytes | None]", task: "asyncio.Task[None]") -> None:
        self.queue, self.task = queue, task

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-type", EVENTS_TYPE.encode()), (b"cache-control", b"no-store")]})
            while (line := await self.queue.get()) is not None:
                await send({"type": "http.response.body", "body": line, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        except OSError:
            pass  # the client went away; the work task is cancelled below
        finally:
            self.task.cancel()


def build_app(config: ServerConfig, cloud: CloudModel | None = None) -> ASGIApp:
    """The app serving `config.model`; loads (and warms) the model unless `cloud` is given."""
    if cloud is None:
        cloud = CloudModel(config.model, llm=config.llm)
        if config.warm:
            cloud.warm()

    async def health(request: Request) -> Response:
        return JSONResponse({"status": "ok", "model": cloud.model_id, "pid": os.getpid()})

    async def models(request: Request) -> Response:
        return JSONResponse({**cloud.describe(), "read_timeout_s": config.read_timeout,
                             "max_body_bytes": config.max_body_bytes})

    async def query(request: Request) -> Response:
        started = time.monotonic()
        client = f"{request.client.host}:{request.client.port}" if request.client else "?"
        try:
            params = request.query_params
            options = QueryOptions(
                question=parse_question(params.get("q")),
                deadline_s=parse_number(params.get("deadline"), "deadline", 0.0, MAX_DEADLINE_S),
                confidence=parse_number(params.get("confidence"), "confidence", 0.0, 1.0),
                llm=parse_flag(params.get("llm"), "llm", config.llm),
                events=parse_flag(params.get("events"), "events", False) or EVENTS_TYPE in request.headers.get("accept", ""),
                estimate=parse_flag(params.get("estimate"), "estimate", False),
            )
        except RequestError as error:
            log_line(client, error.status, started, error=error_body(error)["error"][:80])
            return JSONResponse(error_body(error), status_code=error.status)
        if options.events:
            return await _streamed_query(request, options, client, started)
        try:
            report = await run_query(body_chunks(request), options, cloud, read_timeout=config.read_timeout,
                                     max_bytes=config.max_body_bytes)
        except ClientGone:
            log_line(client, 499, started, error="client-gone")
            return Response(status_code=499)
        except Exception as error:  # noqa: BLE001 - every failure is one JSON line, never a crash
            return _failure(error, client, started)
        _log_report(client, 200, started, report)
        return JSONResponse(report)

    async def _streamed_query(request: Request, options: QueryOptions, client: str, started: float) -> Response:
        """NDJSON events: the status line goes out with the first event, so header errors still get a 4xx."""
        queue: asyncio.Queue[bytes | None] = asyncio.Queue()
        first: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        async def emit(event: str, data: dict[str, Any]) -> None:
            queue.put_nowait(event_line(event, **data))
            if not first.done():
                first.set_result(None)

        async def work() -> None:
            try:
                report = await run_query(body_chunks(request), options, cloud, read_timeout=config.read_timeout,
                                         max_bytes=config.max_body_bytes, emit=emit)
                _log_report(client, 200, started, report)
                queue.put_nowait(event_line("answer", **report))
            except ClientGone:
                log_line(client, 499, started, error="client-gone")
            except Exception as error:  # noqa: BLE001
                if not first.done():
                    first.set_exception(error)
                    return
                _failure(error, client, started)
                queue.put_nowait(event_line("error", **error_body(error)))
            finally:
                queue.put_nowait(None)
                if not first.done():
                    first.set_result(None)

        task = asyncio.create_task(work())
        try:
            await first
        except Exception as error:  # noqa: BLE001 - refused before any event: a plain 4xx reply
            return _failure(error, client, started)

        return EventStream(queue, task)

    routes = [
        Route(HEALTH_PATH, health, methods=["GET"]),
        Route(MODELS_PATH, models, methods=["GET"]),
        Route(QUERY_PATH, query, methods=["PUT", "POST"]),
    ]
    app: ASGIApp = Starlette(routes=routes)
    if config.token:
        app = BearerAuth(app, config.token)
    return app


def _failure(error: BaseException, client: str, started: float) -> Response:
    body = error_body(error)
    if body["status"] == 500:
        LOG.exception("internal error", exc_info=error)
    log_line(client, body["status"], started, error=json.dumps(body["error"][:120]))
    return JSONResponse(body, status_code=body["status"])


def _log_report(client: str, status: int, started: float, report: dict[str, Any]) -> None:
    log_line(client, status, started, bytes=report["bytes"], layers=f"{len(report['layers'])}/{report['layers_declared']}",
             stop=report["stopped_by"], answer_ms=report["timings_ms"]["answer"])


def configure_logging() -> None:
    """Request lines on stderr: `prosemc: <client> <status> key=value ... latency=<s>`."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("prosemc: %(message)s"))
    LOG.handlers[:] = [handler]
    LOG.setLevel(logging.INFO)
    LOG.propagate = False
