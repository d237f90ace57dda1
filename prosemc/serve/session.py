"""One query: a `.psem` stream read layer by layer as it arrives, answered from the complete layers it has.

    body chunks (async) ──pump──► FeedStream ──► PsemReader (its own thread: every check of the format)
                                                   │ header, verified layers, end      (events queue)
    run_query  ◄───────────────────────────────────┘
      header: served model? codec known (weights hash)?       else ModelError / CodecError (-> 409 / 422)
      layer k: quality estimate (decode pool) -> event        stop early at `confidence`
      stop at end of body, `deadline`, or confidence -> decode the complete layers -> answer (model thread)
A stalled client (no byte for read_timeout) gets RequestError 408, a body over max_bytes 413; a client that
goes away mid-stream raises ClientGone and is never answered.
"""

from __future__ import annotations

import asyncio
import dataclasses
import threading
import time
from dataclasses import dataclass
from typing import Any, AsyncIterator, Awaitable, Callable

from prosemc.codec import Codec, codec_from_header
from prosemc.codec.base import has_quality_estimate
from prosemc.errors import ModelError
from prosemc.format import PsemHeader, PsemReader
from prosemc.pipeline import decode_prefix
from prosemc.report import answer_report, codec_object, tokens_object
from prosemc.serve.cloud import CloudModel
from prosemc.serve.protocol import RequestError

Emit = Callable[[str, dict[str, Any]], Awaitable[None]]
STREAM_NAME = "<request>"  # the reply's "input": the request body the layers came in


class ClientGone(Exception):
    """The client closed the connection before the stream ended; nobody is left to answer."""


@dataclass(frozen=True)
class QueryOptions:
    """What one request asks for (see prosemc.serve.protocol)."""

    question: str
    deadline_s: float | None = None
    confidence: float | None = None
    llm: bool = True
    events: bool = False
    estimate: bool = False  # report the layers' quality estimate even without events or confidence


class FeedStream:
    """A blocking file-like `read(n)` over bytes pushed by the event loop; b"" once closed and drained."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._closed = False
        self._ready = threading.Condition()

    def feed(self, data: bytes) -> None:
        with self._ready:
            self._buffer += data
            self._ready.notify()

    def close(self) -> None:
        with self._ready:
            self._closed = True
            self._ready.notify_all()

    def read(self, size: int = -1) -> bytes:
        with self._ready:
            while not self._buffer and not self._closed:
                self._ready.wait()
            size = len(self._buffer) if size < 0 else size
            out = bytes(self._buffer[:size])
            del self._buffer[:size]
            return out


def _parse(stream: FeedStream, post: Callable[[tuple], None]) -> None:
    """Thread body: read the stream with PsemReader and post ("header"|"layer"|"end"|"error", ...) items."""
    try:
        from prosemc.profiles import default_store

        reader = PsemReader(stream, profiles=default_store())  # type: ignore[arg-type]  # full or compact form
        post(("header", reader.header, len(reader.header_bytes)))
        for chunk in reader:
            if chunk.is_layer:
                post(("layer", chunk.payload, chunk.end, time.monotonic(), chunk.size))
        post(("end", reader.end))
    except Exception as error:  # noqa: BLE001 - the format's own errors, reported to the client
        post(("error", error))
    finally:
        stream.close()


async def _pump(chunks: AsyncIterator[bytes], stream: FeedStream, events: asyncio.Queue, read_timeout: float,
                max_bytes: int) -> None:
    """Move body chunks into the stream; a stall, an oversized body or a vanished client becomes an error item."""
    total = 0
    iterator = chunks.__aiter__()
    try:
        while True:
            try:
                piece = await asyncio.wait_for(iterator.__anext__(), read_timeout)
            except StopAsyncIteration:
                break
            except asyncio.TimeoutError:
                raise RequestError(408, f"no data for {read_timeout:g} s (after {total} bytes); the stream stalled, "
                                        "send it again") from None
            total += len(piece)
            if total > max_bytes:
                raise RequestError(413, f"the body is over the server's {max_bytes}-byte limit; send fewer layers")
            stream.feed(piece)
    except (RequestError, ClientGone) as error:
        events.put_nowait(("error", error))
    finally:
        stream.close()


def quality_estimate(codec: Codec, header: PsemHeader, layers: list[bytes]) -> float | None:
    """The codec's predicted token cosine for these layers, or None when it has no estimate."""
    if not has_quality_estimate(codec):
        return None
    try:
        return round(float(codec.quality_estimate(header.codec_params, layers, tuple(header.token_shape))), 4)  # type: ignore[attr-defined]
    except NotImplementedError:
        return None


def check_stream(header: PsemHeader, cloud: CloudModel) -> Codec:
    """The decoder for a stream's header, refusing another model's stream (ModelError) or unknown codec."""
    if header.encoder != cloud.model_id:
        raise ModelError(f"this stream was made by model {header.encoder!r}, but this server serves "
                         f"{cloud.model_id!r}; send it to a server of that model, or encode for {cloud.model_id!r}")
    return codec_from_header(header.codec, header.entropy)


async def run_query(chunks: AsyncIterator[bytes], options: QueryOptions, cloud: CloudModel, *,
                    read_timeout: float, max_bytes: int, emit: Emit | None = None) -> dict[str, Any]:
    """Read a stream, answer it, and return the report; emit(event, data) after the header and each layer."""
    loop = asyncio.get_running_loop()
    start = time.monotonic()
    events: asyncio.Queue = asyncio.Queue()
    stream = FeedStream()
    threading.Thread(target=_parse, args=(stream, lambda item: loop.call_soon_threadsafe(events.put_nowait, item)),
                     daemon=True, name="prosemc-stream").start()
    pump = asyncio.create_task(_pump(chunks, stream, events, read_timeout, max_bytes))
    header: PsemHeader | None = None
    codec: Codec | None = None
    layers: list[bytes] = []
    layer_bytes: list[int] = []  # file bytes of each layer, frame included
    arrivals: list[float] = []
    bytes_used, header_bytes, estimate, stopped_by, late = 0, 0, None, "end", False

    def stop(reason: str) -> None:
        nonlocal stopped_by
        if stopped_by == "end":
            stopped_by = reason
            pump.cancel()
            stream.close()

    try:
        while True:
            wait = None
            if options.deadline_s is not None and stopped_by == "end":
                wait = max(0.0, start + options.deadline_s - time.monotonic())
            try:
                item = await asyncio.wait_for(events.get(), wait)
            except asyncio.TimeoutError:
                if layers:
                    stop("deadline")
                else:
                    late = True  # nothing to answer from yet: answer as soon as layer 1 is complete
                    options = dataclasses.replace(options, deadline_s=None)
                continue
            kind = item[0]
            if kind == "error":
                raise item[1]
            if kind == "end":
                end = item[1]
                break
            if kind == "header":
                header, bytes_used = item[1], item[2]
                header_bytes = bytes_used
                codec = check_stream(header, cloud)
                if emit:
                    await emit("header", {"model": header.encoder, "codec": codec_object(header.codec, header.entropy),
                                          "tokens": tokens_object(header.token_shape, header.token_dtype),
                                          "layers_declared": header.layers, "header_bytes": header_bytes})
                continue
            assert header is not None and codec is not None
            if stopped_by != "end" and stopped_by != "deadline":
                continue  # confidence reached: later layers that were already buffered are not used
            layers.append(item[1])
            layer_bytes.append(item[4])
            bytes_used = item[2]
            arrivals.append(round((item[3] - start) * 1e3, 2))
            if options.events or options.confidence is not None:
                estimate = await loop.run_in_executor(cloud.decode_pool, quality_estimate, codec, header, list(layers))
                if emit:
                    await emit("layer", {"layer": len(layers), "bytes": bytes_used, "estimate": estimate,
                                         "arrived_ms": arrivals[-1]})
                if options.confidence is not None and estimate is not None and estimate >= options.confidence:
                    stop("confidence")
            if late:
                stop("deadline")
    finally:
        pump.cancel()
        stream.close()
    assert header is not None and codec is not None
    waited = time.monotonic() - start

    decoded = await loop.run_in_executor(cloud.decode_pool, decode_prefix, header, codec, layers, bytes_used, end,
                                         layer_bytes, header_bytes)
    decoded_at = time.monotonic()
    answering = loop.run_in_executor(cloud.model_thread, cloud.answer, decoded.edge, options.question, options.llm)
    per_layer = options.events or options.confidence is not None  # then `estimate` is already these layers'
    if options.estimate and not per_layer:  # a second decode: only on request (it costs a label-only reply ~30 %)
        estimate = await loop.run_in_executor(cloud.decode_pool, quality_estimate, codec, header, layers)
    answer = await answering
    report = answer_report(decoded, answer, {"read_decode": (decoded_at - start) * 1e3,
                                              "answer": (time.monotonic() - decoded_at) * 1e3},
                           input=STREAM_NAME, question=options.question)
    report["timings_ms"]["stream"] = round(waited * 1e3, 2)
    report.update({"estimate": estimate, "stopped_by": stopped_by, "layer_arrivals_ms": arrivals})
    return report
