"""The HTTP protocol shared by `prosemc serve` and `prosemc send`: paths, parameters, events, error statuses.

    GET  /healthz                      {"status": "ok", "model": ...}
    GET  /v1/models                    {"model", "codecs", "weights_sha256", "answer_ms", "llm", ...}
    PUT|POST /v1/query?q=QUESTION      body: a .psem stream (chunked or not), read layer by layer
         [&deadline=SECONDS]           answer from what arrived SECONDS after the request started
         [&confidence=P]               answer as soon as the quality estimate of the layers reaches P
         [&llm=0]                      label-only reply (no language model)
         [&events=1]                   stream NDJSON events (header, layer + estimate, answer | error)
         [&estimate=1]                 report the layers' quality estimate without events (one more decode)
    reply: the `prosemc query --json` report (+ "estimate", "stopped_by", "layer_arrivals_ms"), or
           {"error": MESSAGE, "status": CODE} with a 4xx status.
"""

from __future__ import annotations

import json
from typing import Any

from prosemc.errors import CodecError, InputError, ModelError, ProsemcError
from prosemc.format import ChunkTooLargeError, HeaderTooLargeError, LimitError, PsemError

HEALTH_PATH = "/healthz"
MODELS_PATH = "/v1/models"
QUERY_PATH = "/v1/query"
EVENTS_TYPE = "application/x-ndjson"
MAX_QUESTION_BYTES = 4096


class RequestError(ProsemcError):
    """A request the server refuses: an HTTP status and a one-line message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def status_for(error: BaseException) -> int:
    """The HTTP status of a library error: 413 over limits, 400 bad stream or input, 409 model, 422 codec."""
    if isinstance(error, RequestError):
        return error.status
    if isinstance(error, (HeaderTooLargeError, ChunkTooLargeError, LimitError)):
        return 413
    if isinstance(error, ModelError):
        return 409
    if isinstance(error, CodecError):
        return 422
    if isinstance(error, (PsemError, InputError)):
        return 400
    return 500


def error_body(error: BaseException) -> dict[str, Any]:
    """{"error": one line, "status": code} for any error (never a traceback)."""
    message = str(error).splitlines()[0] if str(error) else type(error).__name__
    if status_for(error) == 500:
        message = f"internal error ({type(error).__name__}: {message}); see the server log"
    return {"error": message, "status": status_for(error)}


def event_line(event: str, **data: Any) -> bytes:
    """One NDJSON event line."""
    return json.dumps({"event": event, **data}, sort_keys=True).encode() + b"\n"


def parse_flag(value: str | None, name: str, default: bool) -> bool:
    """A boolean query parameter: 1/0, true/false, yes/no."""
    if value is None:
        return default
    lowered = value.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise RequestError(400, f"parameter {name}={value!r} is not a boolean; use 1 or 0")


def parse_number(value: str | None, name: str, low: float, high: float) -> float | None:
    """A numeric query parameter within [low, high], or None when absent."""
    if value is None or value == "":
        return None
    try:
        number = float(value)
    except ValueError:
        raise RequestError(400, f"parameter {name}={value!r} is not a number") from None
    if not low <= number <= high:
        raise RequestError(400, f"parameter {name}={value!r} must be between {low:g} and {high:g}")
    return number


def parse_question(value: str | None) -> str:
    """The question parameter, stripped; RequestError when missing, empty or too long."""
    question = " ".join((value or "").split())
    if not question:
        raise RequestError(400, "the question is missing; add ?q=what+is+shown (URL-encoded)")
    if len(question.encode()) > MAX_QUESTION_BYTES:
        raise RequestError(400, f"the question is over {MAX_QUESTION_BYTES} bytes; ask a shorter one")
    return question
