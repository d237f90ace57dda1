"""Cut a `.psem` stream to a layer prefix: by layer count or by byte budget; the output is a byte prefix.

    input  = header | L1 | L2 | L3 | L4
    output = header | L1 | L2              (--layers 2, or the largest prefix within --max-bytes)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import BinaryIO

from prosemc.errors import InputError
from prosemc.format.reader import PsemReader, ReadEnd
from prosemc.format.spec import DEFAULT_LIMITS, Limits


@dataclass(frozen=True)
class TruncateResult:
    """What a truncation kept: layers, bytes, and how the input ended."""

    layers: int
    bytes: int
    input_end: ReadEnd | None  # None when the input was not read to its end


def truncate(
    source: BinaryIO | bytes,
    out: BinaryIO,
    *,
    layers: int | None = None,
    max_bytes: int | None = None,
    limits: Limits = DEFAULT_LIMITS,
) -> TruncateResult:
    """Copy the longest layer prefix of `source` that has at most `layers` layers and `max_bytes` bytes.

    Streams chunk by chunk and buffers nothing: each chunk is written as soon as it is known to fit, so extension
    chunks between kept layers are kept, and those after the last kept layer too when they fit the budget.
    Raises InputError when not even one layer fits.
    """
    if layers is None and max_bytes is None:
        raise InputError("say how to truncate: pass --layers K or --max-bytes N")
    if layers is not None and layers < 1:
        raise InputError(f"--layers must be at least 1, got {layers}")
    reader = PsemReader(source, limits)
    head = reader.header_bytes
    if max_bytes is not None and max_bytes < len(head):
        raise InputError(
            f"--max-bytes {max_bytes} is smaller than the header alone ({len(head)} bytes); raise it"
        )
    out.write(head)
    written, kept = len(head), 0
    for chunk in reader:
        size = written + chunk.size
        if max_bytes is not None and size > max_bytes:
            if kept == 0:
                raise InputError(
                    f"no layer fits in --max-bytes {max_bytes}: the header and layer 1 need at least {size} bytes; "
                    f"raise --max-bytes to at least {size}"
                )
            break
        out.write(chunk.to_bytes())
        out.flush()
        written = size
        if chunk.is_layer:
            kept += 1
            if layers is not None and kept == layers:
                break
    if kept == 0:
        raise InputError("the input holds no complete layer, so there is nothing to keep; encode it again")
    return TruncateResult(kept, written, reader.end)
