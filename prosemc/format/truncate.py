"""Cut a `.psem` stream to a layer prefix, by layer count or byte budget, and convert it between the two forms.

    input  = header | L1 | L2 | L3 | L4
    output = header | L1 | L2              (layers=2, or the largest prefix within max_bytes)

In its own form the output is a byte prefix of the input. Converted (form="full" or "compact"), the header and
every chunk are framed anew, their CRCs seeded with the new header's CRC.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import BinaryIO, Callable

from prosemc.errors import InputError
from prosemc.format.budget import PrefixBudget
from prosemc.format.compact import encode_compact_header
from prosemc.format.header import PsemHeader
from prosemc.format.profiles import ProfileStore
from prosemc.format.reader import Chunk, PsemReader, ReadEnd
from prosemc.format.spec import COMPACT_HEAD, DEFAULT_LIMITS, Limits
from prosemc.format.writer import encode_any_chunk, encode_header

FORMS = ("full", "compact")


@dataclass(frozen=True)
class TruncateResult:
    """What a truncation kept: layers, bytes, how the input ended, and the output's form (and profile, if compact)."""

    layers: int
    bytes: int
    input_end: ReadEnd | None  # None when the input was not read to its end
    form: str = "full"
    profile_id: bytes | None = None
    converted: bool = False  # the output's form differs from the input's
    header: PsemHeader | None = None  # the (full) header of the input and output
    header_bytes: int = 0  # bytes of the output's header
    layer_bytes: tuple[int, ...] = ()  # bytes of each layer chunk written, frame included


def truncate(
    source: BinaryIO | bytes,
    out: BinaryIO,
    *,
    layers: int | None = None,
    max_bytes: int | None = None,
    limits: Limits = DEFAULT_LIMITS,
    form: str | None = None,
    profiles: ProfileStore | None = None,
    profile_for: Callable[[PsemHeader], PsemHeader] | None = None,
) -> TruncateResult:
    """Copy the longest layer prefix of `source` that has at most `layers` layers and `max_bytes` bytes.

    form: None keeps the input's form; "full" or "compact" converts to it. A full header becomes compact against
    the profile `profile_for(header)` (default: the header itself); `profiles` resolves a compact input.
    Streams chunk by chunk and buffers nothing: each chunk is written as soon as it is known to fit, so extension
    chunks between kept layers are kept, and those after the last kept layer too when they fit the budget.
    Raises InputError when a layer count or byte budget is given and not even one layer fits.
    """
    if layers is None and max_bytes is None and form is None:
        raise InputError("say how to truncate: give a layer count, a byte budget or an output form")
    if layers is not None and layers < 1:
        raise InputError(f"keep at least 1 layer, not {layers}")
    if form not in (None, *FORMS):
        raise InputError(f"unknown .psem form {form!r}; choose one of: {', '.join(FORMS)}")
    reader = PsemReader(source, limits, profiles=profiles)
    assert reader.header is not None
    target = form or reader.form
    pid = reader.profile_id
    if target == reader.form:
        head, header_crc = reader.header_bytes, reader.header_crc
    elif target == "full":
        (head, header_crc), pid = encode_header(reader.header, limits), None
    else:
        profile = profile_for(reader.header) if profile_for else reader.header
        head, header_crc = encode_compact_header(reader.header, profile, limits)
        pid = COMPACT_HEAD.unpack_from(head)[3]

    def framed(chunk: Chunk) -> bytes:
        if target == reader.form:
            return chunk.to_bytes()
        return encode_any_chunk(chunk.type, chunk.seq, chunk.payload, header_crc, compact=target == "compact")

    budget = PrefixBudget(len(head), layers, max_bytes)
    written_head = False
    layer_bytes: list[int] = []
    for chunk in reader:
        data = framed(chunk)
        if not (budget.admit(len(data)) if chunk.is_layer else budget.admit_extension(len(data))):
            if chunk.is_layer and budget.layers == 0:
                raise budget.too_small(len(data))
            break
        if not written_head:
            out.write(head)
            written_head = True
        out.write(data)
        out.flush()
        if chunk.is_layer:
            layer_bytes.append(len(data))
        if chunk.is_layer and budget.full:
            break
    if budget.layers == 0:
        if layers is not None or max_bytes is not None:
            raise InputError("the input holds no complete layer, so there is nothing to keep; encode it again")
        if not written_head:
            out.write(head)  # converting a file of no layers: its header alone
    return TruncateResult(budget.layers, budget.bytes, reader.end, target, pid, target != reader.form, reader.header,
                          len(head), tuple(layer_bytes))
