"""Sizes and byte budgets of `.psem` files of either form: the one place that knows what a header or a chunk costs.

    header_size(header[, profile])      bytes before the first chunk (full: 20 + JSON; compact: 18 + patch)
    chunk_size(payload[, compact])      frame + payload + CRC of one layer (full: 16 bytes more; compact: 5-9)
    prefix_sizes(header, chunks)        file size after layer 1, 2, ...
    PrefixBudget / layers_within        the longest layer prefix within K layers and N bytes
"""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import accumulate
from typing import Iterable

from prosemc.errors import InputError
from prosemc.format.compact import encode_compact_header
from prosemc.format.framing import encode_varint
from prosemc.format.header import PsemHeader
from prosemc.format.spec import CHUNK_FRAME, CRC, DEFAULT_LIMITS, Limits
from prosemc.format.writer import encode_header


def header_size(header: PsemHeader, profile: PsemHeader | None = None, limits: Limits = DEFAULT_LIMITS) -> int:
    """Bytes of the header in the file: the full form, or the compact form naming `profile`."""
    if profile is None:
        return len(encode_header(header, limits)[0])
    return len(encode_compact_header(header, profile, limits)[0])


def chunk_size(payload_bytes: int, compact: bool = False) -> int:
    """Bytes one layer of `payload_bytes` takes in the file: frame, payload and CRC."""
    frame = len(encode_varint(payload_bytes << 2)) if compact else CHUNK_FRAME.size
    return frame + payload_bytes + CRC.size


def chunk_sizes(payloads: Iterable[bytes], compact: bool = False) -> list[int]:
    """File bytes of each layer."""
    return [chunk_size(len(payload), compact) for payload in payloads]


def prefix_sizes(header_bytes: int, chunk_bytes: Iterable[int]) -> list[int]:
    """File size after each layer: [header + layer 1, header + layers 1-2, ...]."""
    return list(accumulate(chunk_bytes, initial=header_bytes))[1:]


@dataclass
class PrefixBudget:
    """Decides layer by layer the longest prefix within `max_layers` layers and `max_bytes` file bytes (None: any).

    Feed each layer's file bytes (plus any extension chunks written before it) to `admit`, in order; the first
    layer that does not fit ends the prefix.
    """

    header_bytes: int
    max_layers: int | None = None
    max_bytes: int | None = None
    layers: int = field(default=0, init=False)
    bytes: int = field(default=0, init=False)
    closed: bool = field(default=False, init=False)

    def __post_init__(self) -> None:
        self.bytes = self.header_bytes

    @property
    def full(self) -> bool:
        """True once `max_layers` layers were admitted (nothing more can be)."""
        return self.max_layers is not None and self.layers >= self.max_layers

    def admit(self, chunk_bytes: int) -> bool:
        """Count the next layer if it fits; once one does not, no later one does."""
        if self.closed or self.full or (self.max_bytes is not None and self.bytes + chunk_bytes > self.max_bytes):
            self.closed = True
            return False
        self.bytes += chunk_bytes
        self.layers += 1
        return True

    def admit_extension(self, chunk_bytes: int) -> bool:
        """Count an extension chunk (it adds no layer) if it fits the byte budget; once one does not, nothing does."""
        if self.closed or (self.max_bytes is not None and self.bytes + chunk_bytes > self.max_bytes):
            self.closed = True
            return False
        self.bytes += chunk_bytes
        return True

    def too_small(self, first_chunk_bytes: int) -> InputError:
        """The error for a byte budget that holds no layer: what layer 1 needs and how far to raise the budget."""
        need = self.header_bytes + first_chunk_bytes
        return InputError(f"a budget of {self.max_bytes} bytes holds no layer: the header and layer 1 need {need} "
                          f"bytes; raise the budget to at least {need}")


def layers_within(header_bytes: int, chunk_bytes: Iterable[int], max_layers: int | None = None,
                  max_bytes: int | None = None) -> int:
    """The largest k such that the first k layers respect both limits (0 if even layer 1 does not fit)."""
    budget = PrefixBudget(header_bytes, max_layers, max_bytes)
    for size in chunk_bytes:
        if not budget.admit(size):
            break
    return budget.layers
