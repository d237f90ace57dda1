"""The edge side of the loop (`prosemc send`): encode, plan the prefix, stream it, print the cloud's answer.

    t0 ─┬─ thread: connect + GET /v1/models (handshake and model check overlap the encode)
        └─ read the image, load the edge (torch model, or the bundle: onnxruntime + numpy codec), encode:
           header + layer chunks (+ quality estimate per prefix, for --confidence)
    refuse another model's server (before any layer is sent)
    plan: deadline × bandwidth × answer time, confidence  (prosemc.serve.plan)
    PUT /v1/query?events=1 on the same connection: header + layer 1, layer 2, ... (or, with estimates from the
    cloud, one layer at a time until its estimate reaches the confidence) -> end of body -> answer event
A transport failure (server down, killed mid-stream) is retried with exponential backoff, said on stderr;
when the server stays down, ServerUnreachable (the CLI: one line, exit 2).
"""

from __future__ import annotations

import threading
import time
import urllib.parse
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Callable

from prosemc.errors import InputError, ModelError, ProsemcError
from prosemc.serve.client import HttpConnection, Upload
from prosemc.serve.plan import DEFAULT_ANSWER_S, LinkCache, Plan, measured_rate, parse_rate, plan_layers
from prosemc.serve.protocol import MODELS_PATH, QUERY_PATH
from prosemc.report import layers_list

Log = Callable[[str], None]


class ServerUnreachable(ProsemcError):
    """The server could not be reached (or kept failing mid-stream) after every retry."""


class ServerRefused(ProsemcError):
    """The server answered the query with an error status (4xx)."""


@dataclass
class SendOptions:
    url: str
    question: str
    model: str = "lite"
    bundle: str | None = None
    codec_name: str | None = None
    compact: bool = False
    deadline_s: float | None = None
    bandwidth: str = "auto"
    confidence: float | None = None
    estimate_from: str = "edge"  # "edge": predict the estimate locally; "cloud": wait for it after each layer
    llm: bool = True
    token: str | None = None
    retries: int = 4
    connect_timeout_s: float = 10.0
    reply_timeout_s: float = 120.0


@dataclass
class EdgeStream:
    """An encoded image as wire pieces: the header, then one framed chunk per layer, coarse to fine."""

    model_id: str
    codec: Any
    header: Any
    header_bytes: bytes
    chunks: list[bytes]
    payloads: list[bytes]
    encode_s: float
    estimates: list[float | None] = field(default_factory=list)

    def layer_ends(self) -> list[int]:
        """File offset after each layer."""
        ends, total = [], len(self.header_bytes)
        for chunk in self.chunks:
            total += len(chunk)
            ends.append(total)
        return ends

    def compute_estimates(self) -> list[float | None]:
        from prosemc.serve.session import quality_estimate

        self.estimates = [quality_estimate(self.codec, self.header, self.payloads[:k])
                          for k in range(1, len(self.payloads) + 1)]
        return self.estimates


def encode_edge(image: Any, model_name: str, bundle: str | None, codec_name: str | None,
                compact: bool = False) -> EdgeStream:
    """Run the edge half (the torch model, or the torch-free bundle with its own codec) and frame the pieces."""
    start = time.perf_counter()
    if bundle is not None:
        if codec_name is not None:
            raise InputError("an edge bundle fixes its codec, so no other codec can be chosen; export another bundle")
        edge_bundle = load_bundle(bundle)
        return frame_tokens(edge_bundle.vision.encode_image(image), edge_bundle.model_id, edge_bundle.codec,
                            compact, start)
    from prosemc.models import load_model
    from prosemc.pipeline import codec_for, default_codec

    model = load_model(model_name)
    tokens = model.encode_image(image)
    codec = codec_for(codec_name or default_codec(model.model_id), model.model_id, None)
    return frame_tokens(tokens, model.model_id, codec, compact, start)


def frame_tokens(tokens: Any, model_id: str, codec: Any, compact: bool = False,
                 start: float | None = None) -> EdgeStream:
    """EdgeTokens of `model_id` -> the codec's layers as `.psem` pieces (header, one chunk per layer), written by
    the format's own writer in the full or the compact form."""
    import io

    from prosemc.format import PsemWriter
    from prosemc.pipeline import build_psem
    from prosemc.profiles import profile_of

    start = time.perf_counter() if start is None else start
    header, payloads = build_psem(tokens, model_id, codec)
    buffer = io.BytesIO()
    writer = PsemWriter(buffer, header, profile=profile_of(header) if compact else None)
    head = buffer.getvalue()
    chunks = []
    for payload in payloads:
        before = buffer.tell()
        writer.add_layer(payload)
        chunks.append(buffer.getvalue()[before:])
    return EdgeStream(model_id, codec, header, head, chunks, payloads, time.perf_counter() - start)


def load_bundle(folder: str) -> Any:
    """The torch-free edge bundle (prosemc.export: onnxruntime vision encoder + numpy codec) in `folder`."""
    from prosemc.export.bundle import EdgeBundle

    return EdgeBundle.load(folder)


def describe_server(url: str, token: str | None, timeout: float) -> tuple[HttpConnection, dict[str, Any]]:
    """Open a connection and read GET /v1/models; ConnectionError for transport trouble, ServerRefused for 4xx."""
    connection = HttpConnection.open(url, token, timeout)
    try:
        status, body = connection.request("GET", MODELS_PATH)
    except BaseException:
        connection.close()
        raise
    import json

    if status >= 500:
        connection.close()
        raise ConnectionError(f"GET {MODELS_PATH} answered {status}")
    try:
        data = json.loads(body)
    except ValueError:
        data = {}
    if status != 200:
        connection.close()
        raise ServerRefused(f"the server at {url} refused: {data.get('error', body[:200])} ({status})")
    return connection, data


def _query_path(options: SendOptions, plan: Plan) -> str:
    params = {"q": options.question}
    if plan.server_deadline_s is not None:
        params["deadline"] = f"{plan.server_deadline_s:.3f}"
    if not options.llm:
        params["llm"] = "0"
    return f"{QUERY_PATH}?{urllib.parse.urlencode(params)}"


def _stream(upload: Upload, edge: EdgeStream, plan: Plan, options: SendOptions,
            wait_until: float | None) -> tuple[int, str]:
    """Send the planned layers (header rides with layer 1); how many were sent, and why that many."""
    sent, reason = 0, plan.reason
    for k in range(plan.layers):
        piece = edge.chunks[k] if k else edge.header_bytes + edge.chunks[0]
        if not upload.send(piece):
            reason = "server-answered"  # its deadline passed, or its confidence was reached
            break
        sent = k + 1
        if options.estimate_from == "cloud" and options.confidence is not None and sent < plan.layers:
            timeout = max(0.0, wait_until - time.perf_counter()) if wait_until else options.reply_timeout_s
            event = upload.wait_event(lambda e: e.get("event") in ("answer", "error")
                                      or (e.get("event") == "layer" and e.get("layer") == sent), timeout)
            if event is None or event.get("event") != "layer":
                reason = "deadline" if event is None else "server-answered"
                break
            if event.get("estimate") is not None and event["estimate"] >= options.confidence:
                reason = "confidence"
                break
    upload.finish()
    return sent, reason


def send(image: Any, options: SendOptions, log: Log, edge: EdgeStream | None = None) -> dict[str, Any]:
    """Encode `image` (unless `edge` is already encoded), send the planned prefix to the server, and return
    its report plus a "send" section.

    image: an RGB PIL image, or a function that loads one: it is called once the connection to the server is
    being opened, so the round trips of the handshake and the model check overlap reading and encoding it."""
    start = time.perf_counter()
    bandwidth = parse_rate(options.bandwidth)
    cache = LinkCache()

    def describe() -> tuple[HttpConnection, dict[str, Any]]:
        return describe_server(options.url, options.token, options.connect_timeout_s)

    probe: Future | None = in_background(describe)
    try:
        if edge is None:
            picture = image() if callable(image) else image
            edge = encode_edge(picture, options.model, options.bundle, options.codec_name, options.compact)
    except BaseException:
        close_when_done(probe)
        raise
    attempt, delay = 1, 0.5
    while True:
        try:
            first, probe = probe, None
            connection, info = first.result() if first is not None else describe()
            try:
                return _query(connection, info, edge, options, bandwidth, cache, start, attempt, log)
            finally:
                connection.close()
        except OSError as error:  # refused, reset, timed out, closed mid-stream: the request is retried whole
            if attempt > options.retries:
                raise ServerUnreachable(f"cannot reach the server at {options.url} ({_reason(error)}) after "
                                        f"{attempt} attempts; start it with `prosemc serve`, or check the URL "
                                        "and the server's log") from None
            log(f"server at {options.url} not reachable ({_reason(error)}); retrying in {delay:g} s "
                f"(attempt {attempt + 1} of {options.retries + 1})")
            time.sleep(delay)
            delay *= 2
            attempt += 1


def in_background(work: Callable[[], Any]) -> Future:
    """Run work() on a daemon thread (one that never holds up the process's exit); its result as a Future."""
    future: Future = Future()

    def run() -> None:
        try:
            future.set_result(work())
        except BaseException as error:  # noqa: BLE001 - handed to whoever asks for the result
            future.set_exception(error)

    threading.Thread(target=run, daemon=True).start()
    return future


def close_when_done(probe: Future) -> None:
    """Close the connection a server probe opens, once it has, when nobody will use it."""
    probe.add_done_callback(lambda done: done.exception() is None and done.result()[0].close())


def _query(connection: HttpConnection, info: dict[str, Any], edge: EdgeStream, options: SendOptions,
           bandwidth: float | None, cache: LinkCache, start: float, attempt: int, log: Log) -> dict[str, Any]:
    served = info.get("model")
    if served != edge.model_id:
        raise ModelError(f"the server at {options.url} serves model {served!r}, but this edge encodes for "
                         f"{edge.model_id!r}; send to a server of {edge.model_id!r}, or encode for {served!r}")
    if options.llm and info.get("llm") is False:
        raise InputError(f"the server at {options.url} answers label-only; ask for a label-only reply")
    server_key = f"{connection.host}{connection.base_path}"
    measured = bandwidth is None and cache.get(server_key)
    rate = bandwidth or measured or None
    mode = "llm" if options.llm else "labels"
    answer_ms = (info.get("answer_ms") or {}).get(mode)
    answer_s = answer_ms / 1e3 if isinstance(answer_ms, (int, float)) else DEFAULT_ANSWER_S[mode]
    confidence_on_edge = options.confidence is not None and options.estimate_from == "edge"
    if confidence_on_edge and not edge.estimates:
        edge.compute_estimates()
    deadline_at = start + options.deadline_s if options.deadline_s is not None else None
    remaining = deadline_at - time.perf_counter() if deadline_at is not None else None
    layer_sizes = [len(chunk) for chunk in edge.chunks]
    plan = plan_layers(len(edge.header_bytes), layer_sizes, remaining_s=remaining, bandwidth_bps=rate,
                       rtt_s=connection.rtt_s, answer_s=answer_s,
                       estimates=edge.estimates if confidence_on_edge else None,
                       confidence=options.confidence if confidence_on_edge else None)
    if plan.reason == "deadline-miss":
        log(f"the deadline cannot be met even with layer 1 (about {answer_s:.2f} s to answer, "
            f"{connection.rtt_s * 1e3:.0f} ms round trip); sending layer 1 only")
    # per-layer events (the cloud's estimates) only when a confidence is asked for: they cost the server a decode each
    upload = connection.upload("PUT", _query_path(options, plan), events=options.confidence is not None)
    wait_until = deadline_at - answer_s - connection.rtt_s if deadline_at is not None else None
    sent, reason = _stream(upload, edge, plan, options, wait_until)
    events = list(upload.events(options.reply_timeout_s))
    if upload.status is not None and upload.status >= 500:
        raise ConnectionError(f"the server answered {upload.status}")
    final = next((e for e in reversed(events) if e.get("event") in ("answer", "error")), None)
    if final is None:
        raise ConnectionError("the reply ended without an answer")
    if final["event"] == "error":
        raise ServerRefused(f"the server refused the stream ({final.get('status', upload.status)}): {final.get('error')}")
    report = {k: v for k, v in final.items() if k != "event"}
    layer_ends = edge.layer_ends()
    back_to_back = not (options.estimate_from == "cloud" and options.confidence is not None)
    rate_now = measured_rate(layer_ends, report.get("layer_arrivals_ms") or []) if back_to_back else None
    if rate_now:
        cache.put(server_key, rate_now)
    report["send"] = {
        "layers": layers_list(layer_sizes[:sent], len(edge.header_bytes)), "layers_declared": len(edge.chunks),
        "bytes": layer_ends[sent - 1] if sent else 0,
        "plan": reason, "estimates": plan.estimates or None,
        "cloud_estimates": [e.get("estimate") for e in events if e.get("event") == "layer"],
        "bandwidth_bps": rate, "measured_bandwidth_bps": round(rate_now) if rate_now else None,
        "rtt_ms": round(connection.rtt_s * 1e3, 2), "server_deadline_s": plan.server_deadline_s,
        "attempts": attempt,
        "timings_ms": {"encode": round(edge.encode_s * 1e3, 2), "total": round((time.perf_counter() - start) * 1e3, 2)},
    }
    return report


def _reason(error: BaseException) -> str:
    if isinstance(error, ConnectionRefusedError):
        return "connection refused"
    text = getattr(error, "strerror", None) or str(error) or type(error).__name__
    return str(text).splitlines()[0]
