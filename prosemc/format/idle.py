"""An idle timeout for streams that arrive over a pipe or a network: a stalled sender ends the stream, not the reader.

    IdleTimeoutStream(sys.stdin.buffer, 30)   a pipe, socket or file: waits for bytes with poll()
    IdleTimeoutStream(pieces, 30)             a queue.Queue of byte pieces (b"" or None ends it), e.g. an ASGI body
    with_idle_timeout(stream, 30)             the above for a stream that can stall (can_stall), else the stream
    PsemReader(stream) ... stream.stalled     the reader sees an ordinary end; `stalled` says it was the timeout

The timeout counts from the last byte that arrived; before the first byte the reader waits for
`first_byte_timeout` (None: for ever, as a listener waits for its client).
Stdlib only, so the CLI, the pipeline and a server all share it.
"""

from __future__ import annotations

import io
import os
import queue
import select
import stat
from typing import Any, BinaryIO

DEFAULT_IDLE_TIMEOUT = 30.0  # seconds without a byte after which a sender counts as stalled


def can_stall(stream: BinaryIO) -> bool:
    """Whether the bytes of `stream` arrive over time (a pipe, socket or terminal), so that its sender can stall."""
    try:
        return not stat.S_ISREG(os.fstat(stream.fileno()).st_mode)
    except (OSError, ValueError, AttributeError, io.UnsupportedOperation):
        return False  # an in-memory stream holds all its bytes


def with_idle_timeout(stream: BinaryIO, timeout: float | None) -> BinaryIO:
    """`stream` behind an idle timeout when its sender can stall, else `stream` itself (also for timeout None)."""
    if timeout is None or not can_stall(stream):
        return stream
    return IdleTimeoutStream(stream, timeout)  # type: ignore[return-value]


class IdleTimeoutStream(io.RawIOBase):
    """A readable binary stream that ends once no byte has arrived for `timeout` seconds (see module docstring)."""

    def __init__(self, source: BinaryIO | "queue.Queue[bytes | None]", timeout: float,
                 first_byte_timeout: float | None = None) -> None:
        super().__init__()
        if not timeout > 0:
            raise ValueError(f"the idle timeout must be positive, got {timeout}")
        self.timeout = float(timeout)
        self.first_byte_timeout = first_byte_timeout
        self.bytes_read = 0
        self.stalled_after: float | None = None  # the limit in seconds that ended the stream, if the sender stalled
        self._queue = source if isinstance(source, queue.Queue) else None
        self._fd = None if self._queue is not None else source.fileno()  # type: ignore[union-attr]
        self._poll = select.poll()
        self._pending = b""  # the rest of a queue piece larger than a read
        self._ended = False
        if self._fd is not None:
            self._poll.register(self._fd, select.POLLIN)

    def readable(self) -> bool:
        return True

    @property
    def stalled(self) -> bool:
        """Whether the stream ended because no byte arrived within the limit (not because the sender closed it)."""
        return self.stalled_after is not None

    @property
    def idle_limit(self) -> float | None:
        """How long the next read may wait, in seconds (None: without limit)."""
        return self.timeout if self.bytes_read else self.first_byte_timeout

    def readinto(self, buffer: Any) -> int:
        if self._ended:
            return 0
        view = memoryview(buffer).cast("B")
        data = self._next(len(view)) if len(view) else b""
        if not data:
            self._ended = True
            return 0
        view[: len(data)] = data
        self.bytes_read += len(data)
        return len(data)

    def _next(self, size: int) -> bytes:
        """Up to `size` bytes, b"" at the end of the stream or after the idle limit (then `stalled` is set)."""
        if self._pending:
            data, self._pending = self._pending[:size], self._pending[size:]
            return data
        limit = self.idle_limit
        if self._queue is not None:
            try:
                piece = self._queue.get(timeout=limit)
            except queue.Empty:
                self.stalled_after = limit
                return b""
            piece = bytes(piece or b"")
            self._pending = piece[size:]
            return piece[:size]
        assert self._fd is not None
        if not self._poll.poll(None if limit is None else limit * 1000):  # retried across signals (PEP 475)
            self.stalled_after = limit
            return b""
        return os.read(self._fd, size)
