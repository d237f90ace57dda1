"""Errors of the `.psem` container: one class per failure mode, each message naming the problem and the fix."""

from __future__ import annotations

from prosemc.errors import ProsemcError


class PsemError(ProsemcError):
    """Base of every `.psem` container error; a reader raises nothing else on any input bytes."""


class EmptyInputError(PsemError):
    """The input holds no bytes at all."""


class BadMagicError(PsemError):
    """The first 8 bytes are not the PSEM magic: not a .psem file, or mangled by a text-mode transfer."""


class UnsupportedVersionError(PsemError):
    """The file's major version is one this reader does not implement."""


class ReservedBitsError(PsemError):
    """A reserved flag bit is set: the file needs a feature this reader does not know."""


class HeaderTooLargeError(PsemError):
    """The header length field exceeds the decoder's header size cap."""


class InvalidHeaderError(PsemError):
    """The header JSON is malformed or misses / mistypes a required field."""


class TruncatedError(PsemError):
    """The input ends inside the preamble, the header, or (in strict mode) inside a chunk."""


class ChecksumError(PsemError):
    """A header or chunk CRC-32 does not match its bytes: the data was corrupted."""


class ChunkTooLargeError(PsemError):
    """A chunk's length field exceeds the decoder's chunk size cap."""


class BadChunkError(PsemError):
    """A chunk frame is malformed (type is not four ASCII letters)."""


class UnknownChunkError(PsemError):
    """A critical chunk type (upper-case first letter) this reader does not know."""


class LayerOrderError(PsemError):
    """Layers are duplicated, out of order, or more than the header declares."""


class LimitError(PsemError):
    """A count (layers, extension chunks) exceeds the decoder's limits."""


class UnknownProfileError(PsemError):
    """A compact file names a profile (by id) that the reader's profile store does not hold."""

    def __init__(self, message: str, profile_id: bytes) -> None:
        super().__init__(message)
        self.profile_id = profile_id
