"""The `.psem` container (stdlib only): streaming writer and reader of both forms, truncation, sizes, validation.

    write / dumps      header + layers -> bytes           (front to back, flushed, no seeking; compact with profile=)
    PsemReader / read  bytes | pipe -> header, verified layers, how the stream ended (profiles= resolves compact)
    truncate           stream -> its first K layers, or the largest layer prefix within N bytes; or the other form
    ProfileStore       profiles (known headers) by id, for the compact form
    budget             what a header and a layer cost in either form; the longest prefix within a budget
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
    UnknownProfileError,
    UnsupportedVersionError,
)
from prosemc.format.budget import PrefixBudget, chunk_size, chunk_sizes, header_size, layers_within, prefix_sizes
from prosemc.format.header import PsemHeader, header_from_json
from prosemc.format.profiles import Profile, ProfileStore, profile_id
from prosemc.format.reader import Chunk, PsemFile, PsemReader, ReadEnd, loads, read
from prosemc.format.spec import DEFAULT_LIMITS, MAGIC, MAJOR_VERSION, MINOR_VERSION, Limits
from prosemc.format.truncate import TruncateResult, truncate
from prosemc.format.writer import PsemWriter, dumps, write

__all__ = [
    "BadChunkError", "BadMagicError", "ChecksumError", "ChunkTooLargeError", "EmptyInputError",
    "HeaderTooLargeError", "InvalidHeaderError", "LayerOrderError", "LimitError", "PsemError",
    "ReservedBitsError", "TruncatedError", "UnknownChunkError", "UnknownProfileError", "UnsupportedVersionError",
    "PsemHeader", "header_from_json", "Chunk", "PsemFile", "PsemReader", "ReadEnd", "loads", "read",
    "DEFAULT_LIMITS", "MAGIC", "MAJOR_VERSION", "MINOR_VERSION", "Limits", "TruncateResult", "truncate",
    "PsemWriter", "dumps", "write", "Profile", "ProfileStore", "profile_id", "PrefixBudget", "chunk_size",
    "chunk_sizes", "header_size", "layers_within", "prefix_sizes",
]
