"""The `.psem` container (stdlib only): streaming writer and reader, truncation, validation.

    write / dumps      header + layers -> bytes           (front to back, flushed, no seeking)
    PsemReader / read  bytes | pipe -> header, verified layers, how the stream ended
    truncate           stream -> its first K layers, or the largest layer prefix within N bytes
"""

from prosemc.format.errors import (
    BadChunkError,
    BadMagicError,
    ChecksumError,
    ChunkTooLargeError,
    EmptyInputError,
    HeaderTooLargeError,
    InvalidHeaderError,
    LayerOrderError,
    LimitError,
    PsemError,
    ReservedBitsError,
    TruncatedError,
    UnknownChunkError,
    UnsupportedVersionError,
)
from prosemc.format.header import PsemHeader, header_from_json
from prosemc.format.reader import Chunk, PsemFile, PsemReader, ReadEnd, loads, read
from prosemc.format.spec import DEFAULT_LIMITS, MAGIC, MAJOR_VERSION, MINOR_VERSION, Limits
from prosemc.format.truncate import TruncateResult, truncate
from prosemc.format.writer import PsemWriter, dumps, write

__all__ = [
    "BadChunkError", "BadMagicError", "ChecksumError", "ChunkTooLargeError", "EmptyInputError",
    "HeaderTooLargeError", "InvalidHeaderError", "LayerOrderError", "LimitError", "PsemError",
    "ReservedBitsError", "TruncatedError", "UnknownChunkError", "UnsupportedVersionError",
    "PsemHeader", "header_from_json", "Chunk", "PsemFile", "PsemReader", "ReadEnd", "loads", "read",
    "DEFAULT_LIMITS", "MAGIC", "MAJOR_VERSION", "MINOR_VERSION", "Limits", "TruncateResult", "truncate",
    "PsemWriter", "dumps", "write",
]
