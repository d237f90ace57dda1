"""Rate control of `prosemc send`: how many layers to send, from a deadline, a bandwidth and a confidence.

    deadline:   now + rtt/2 + 8·(bytes of the prefix + HTTP framing)/bandwidth + answer time + rtt/2 <= deadline
                -> the largest such prefix (layer 1 at least, with a warning when even it is late); the server
                   is told to answer at the matching moment, so a slower link than planned still answers in time
    confidence: the shortest prefix whose quality estimate (the codec's predicted token cosine) reaches P
    both:       the shorter of the two
Bandwidth "auto" is the uplink rate measured at the server on earlier sends to it (layer arrival times),
kept in $PROSEMC_CACHE/links.json; unknown on a first send (then only the server-side deadline cuts).
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from prosemc.errors import InputError

HTTP_OVERHEAD_BYTES = 300  # request line + headers of a query
CHUNK_OVERHEAD_BYTES = 10  # chunked transfer coding per layer: hex size + 2 CRLFs
DEFAULT_ANSWER_S = {"llm": 1.5, "labels": 0.05}  # before the server has answered anything
_RATE = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*([kmg]?)(bit|bps|b)?(/s)?\s*$", re.I)


def parse_rate(text: str) -> float | None:
    """'1mbit', '1Mbps', '250k', '2e6' -> bits per second; 'auto' -> None; InputError otherwise."""
    if text.strip().lower() == "auto":
        return None
    match = _RATE.match(text)
    try:
        value = float(text) if match is None else float(match.group(1)) * {"": 1, "k": 1e3, "m": 1e6, "g": 1e9}[match.group(2).lower()]
    except ValueError:
        raise InputError(f"bandwidth {text!r} is not a rate; write e.g. 1mbit, 250kbit or auto") from None
    if not 1e3 <= value <= 1e12:
        raise InputError(f"bandwidth {text!r} is out of range; give 1kbit .. 1000gbit, e.g. 1mbit")
    return value


@dataclass(frozen=True)
class Plan:
    """The prefix to send and why."""

    layers: int
    reason: str  # "all", "deadline", "confidence", "deadline-miss"
    estimates: list[float | None] = field(default_factory=list)  # per prefix, edge-computed (when available)
    server_deadline_s: float | None = None  # what the server is told (seconds after it gets the request)


def wire_bytes(header_bytes: int, layer_bytes: list[int], k: int) -> int:
    """Bytes on the wire for header + k layers in one chunked HTTP request."""
    return HTTP_OVERHEAD_BYTES + header_bytes + sum(layer_bytes[:k]) + CHUNK_OVERHEAD_BYTES * (k + 1)


def plan_layers(header_bytes: int, layer_bytes: list[int], *, remaining_s: float | None, bandwidth_bps: float | None,
                rtt_s: float, answer_s: float, estimates: list[float | None] | None = None,
                confidence: float | None = None) -> Plan:
    """Choose the prefix (see the module docstring); remaining_s is the time left until the deadline."""
    count = len(layer_bytes)
    layers, reason = count, "all"
    estimates = estimates or []
    if confidence is not None and estimates and all(e is not None for e in estimates):
        reached = [k + 1 for k, e in enumerate(estimates) if e is not None and e >= confidence]
        if reached and reached[0] < count:
            layers, reason = reached[0], "confidence"
    server_deadline = None
    if remaining_s is not None:
        upload_budget = remaining_s - answer_s - rtt_s  # half a round trip up, half down
        server_deadline = max(0.0, upload_budget)  # its clock starts when the request arrives, rtt/2 from now
        if bandwidth_bps:
            fits = [k for k in range(1, count + 1)
                    if wire_bytes(header_bytes, layer_bytes, k) * 8 / bandwidth_bps <= upload_budget]
            best = fits[-1] if fits else 1
            if best < layers:
                layers, reason = best, "deadline" if fits else "deadline-miss"
        elif upload_budget <= 0:
            layers, reason = 1, "deadline-miss"
    return Plan(layers, reason, list(estimates), server_deadline)


class LinkCache:
    """Measured uplink rates per server (bits/s), in $PROSEMC_CACHE/links.json; written atomically."""

    def __init__(self, path: Path | None = None) -> None:
        if path is None:
            from prosemc.models.llm import cache_root

            path = cache_root() / "links.json"
        self.path = path

    def _load(self) -> dict[str, float]:
        try:
            data = json.loads(self.path.read_text())
            return {k: float(v) for k, v in data.items()} if isinstance(data, dict) else {}
        except (OSError, ValueError, TypeError):
            return {}

    def get(self, server: str) -> float | None:
        return self._load().get(server)

    def put(self, server: str, rate_bps: float) -> None:
        data = self._load()
        data[server] = round(rate_bps)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=".links.", dir=self.path.parent)
            with os.fdopen(fd, "w") as stream:
                json.dump(data, stream, indent=1, sort_keys=True)
            os.replace(tmp, self.path)
        except OSError:
            pass  # a read-only cache only costs the next send its measurement


def measured_rate(layer_bytes_end: list[int], arrivals_ms: list[float]) -> float | None:
    """Uplink bits/s from the server's arrival times of layer ends (None when too close together to tell)."""
    if len(arrivals_ms) < 2 or len(layer_bytes_end) < 2:
        return None
    span_s = (arrivals_ms[-1] - arrivals_ms[0]) / 1e3
    sent = layer_bytes_end[len(arrivals_ms) - 1] - layer_bytes_end[0]
    if span_s < 0.005 or sent < 1000:
        return None
    return sent * 8 / span_s
