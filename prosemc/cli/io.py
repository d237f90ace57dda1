"""CLI file plumbing: `-` as stdin/stdout, and outputs that never lose data.

    -o PATH                       how it is written
    -                             stdout (refused when closed, or when it is the input file)
    a new or regular file         a temp file beside it (.NAME.XXXXXXXX.part; mode from the umask, or kept from the
                                  file it replaces), fsynced and renamed over it on success, removed on any failure
    a symlink                     followed: the file it names is replaced as above, the link stays
    a device, FIFO, socket,       written through, never renamed over (-o /dev/null leaves /dev/null a device;
    /dev/stdout, /proc/self/fd/N  a file reached through a file descriptor is appended to)
    the input itself              refused before any work (same device and inode)

Nothing is created until the first write, so no file exists while a model runs. SIGINT and SIGTERM unwind
through `atomic_output`, which removes the temp file (see `prosemc.cli.main`).
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import sys
import tempfile
from pathlib import Path
from typing import BinaryIO, Iterator, Sequence

from prosemc.errors import InputError, OutputError

_TEMP_SUFFIX = ".part"
_TEMP_RANDOM_CHARS = 8  # what tempfile adds between prefix and suffix
_DESCRIPTOR_LINKS = ("/proc/", "/dev/fd/")  # symlinks into these name an open file descriptor, not a file
_MAX_SYMLINKS = 40
_HINTS = {
    errno.ENOSPC: "the disk is full; free some space or write elsewhere",
    errno.EDQUOT: "the disk quota is used up; free some space or write elsewhere",
    errno.EFBIG: "the file is over the size limit (ulimit -f, or the file system's maximum); write elsewhere",
    errno.EROFS: "the file system is read-only; choose a writable -o path",
    errno.EACCES: "permission denied; choose a writable -o path",
    errno.EPERM: "permission denied; choose a writable -o path",
}


@contextlib.contextmanager
def open_input(path: str) -> Iterator[BinaryIO]:
    """A binary stream for PATH (closed afterwards), or stdin for `-`."""
    if path == "-":
        yield sys.stdin.buffer
        return
    try:
        stream = open(path, "rb")
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror}; check the path") from None
    with stream:
        yield stream


@contextlib.contextmanager
def atomic_output(path: str, inputs: Sequence[str] = ()) -> Iterator["OutputFile"]:
    """An OutputFile for `-o PATH` (checked now, opened on the first write), committed only if the block succeeds."""
    output = OutputFile(path, inputs)
    try:
        yield output
        output.commit()
    finally:
        output.close()


class OutputFile:
    """A binary output for `-o PATH` (see the module docstring): write() and flush() as a file, then commit()."""

    def __init__(self, path: str, inputs: Sequence[str] = ()) -> None:
        self.path = path
        self._stream: BinaryIO | None = None
        self._temp: str | None = None  # the temp file while it exists
        self._replace: Path | None = None  # the regular file the temp file is renamed over; None: write through
        self._mode = 0o666 & ~_umask()
        if path == "-":
            self._check_stdout(inputs)
            return
        target = Path(path)
        existing = _stat(target, path)
        for name, source in _input_stats(inputs):
            if existing is not None and _same_file(existing, source):
                raise OutputError(f"the output {path} is the input {name}; writing it would destroy the input, "
                                  "choose another -o path")
        if existing is not None and stat.S_ISDIR(existing.st_mode):
            raise OutputError(f"cannot write {path}: it is a folder; choose a file name for -o")
        real = _follow_symlinks(target)
        if real is None or (existing is not None and not stat.S_ISREG(existing.st_mode)):
            return  # a device, FIFO, socket or file descriptor: written through
        if not real.parent.is_dir():
            raise OutputError(f"cannot write {path}: the folder {real.parent} does not exist; create it or choose "
                              "another -o path")
        self._replace = real
        if existing is not None:
            self._mode = stat.S_IMODE(existing.st_mode)

    def _check_stdout(self, inputs: Sequence[str]) -> None:
        if sys.stdout is None:
            raise OutputError("standard output is closed; open it, or write to a file with -o FILE")
        try:
            out = os.fstat(sys.stdout.fileno())
        except (OSError, ValueError):
            return
        for name, source in _input_stats(inputs):
            if _same_file(out, source):
                raise OutputError(f"standard output is the input {name}; redirect it to another file")

    def write(self, data: bytes) -> int:
        if self._stream is None:
            self._open()
        assert self._stream is not None
        try:
            return self._stream.write(data)
        except OSError as exc:
            raise self._error(exc) from None

    def flush(self) -> None:
        if self._stream is not None:
            try:
                self._stream.flush()
            except OSError as exc:
                raise self._error(exc) from None

    def _open(self) -> None:
        try:
            if self.path == "-":
                self._stream = sys.stdout.buffer
            elif self._replace is None:  # O_APPEND: a file reached through /dev/stdout keeps what it held
                self._stream = os.fdopen(os.open(self.path, os.O_WRONLY | os.O_APPEND), "wb")
            else:
                folder = self._replace.parent
                fd, self._temp = tempfile.mkstemp(prefix=_temp_prefix(folder, self._replace.name),
                                                  suffix=_TEMP_SUFFIX, dir=folder)
                self._stream = os.fdopen(fd, "wb")
                os.fchmod(fd, self._mode)
        except OSError as exc:
            raise self._error(exc) from None

    def commit(self) -> None:
        """Make the written bytes the output: flush (and for files fsync and rename over the target)."""
        if self._stream is None:
            self._open()  # nothing was written: the output is an empty file
        self.flush()
        if self._replace is None:
            return
        assert self._stream is not None and self._temp is not None
        try:
            os.fsync(self._stream.fileno())
            self._stream.close()
            os.replace(self._temp, self._replace)
        except OSError as exc:
            raise self._error(exc) from None
        self._temp = None

    def close(self) -> None:
        """Close the stream (never stdout) and remove the temp file if it was not committed."""
        if self._stream is not None and self.path != "-":
            with contextlib.suppress(OSError):
                self._stream.close()
        if self._temp is not None:
            with contextlib.suppress(OSError):
                os.unlink(self._temp)
            self._temp = None

    def _error(self, exc: OSError) -> OSError | OutputError:
        if isinstance(exc, BrokenPipeError):
            return exc  # the reader went away: the CLI stops quietly, as cat does
        where = "standard output" if self.path == "-" else self.path
        hint = _HINTS.get(exc.errno or 0, "choose another -o path")
        return OutputError(f"cannot write {where}: {exc.strerror or exc}; {hint}")


def display_name(path: str, stdio: str = "<stdin>") -> str:
    """How to name PATH in messages: `-` is stdin (or stdout, for outputs)."""
    return stdio if path == "-" else path


def writable_folder(path: str | Path) -> Path:
    """PATH as a folder that exists and takes new files (created if missing), checked before any work."""
    folder = Path(path)
    if folder.exists() and not folder.is_dir():
        raise InputError(f"cannot write into {folder}: it is a file, not a folder; choose another folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe, probe_path = tempfile.mkstemp(prefix=".prosemc-write-test-", dir=folder)
        os.close(probe)
        os.unlink(probe_path)
    except OSError as exc:
        raise InputError(f"cannot write into {folder}: {exc.strerror}; choose a folder you can write to") from None
    return folder


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _stat(target: Path, name: str) -> os.stat_result | None:
    """os.stat following symlinks; None when nothing is there."""
    try:
        return target.stat()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise OutputError(f"cannot write {name}: {exc.strerror}; choose another -o path") from None


def _input_stats(inputs: Sequence[str]) -> Iterator[tuple[str, os.stat_result]]:
    """(name, stat) of each input that can be looked at; `-` is stdin."""
    for name in inputs:
        try:
            yield ("standard input" if name == "-" else name), (os.fstat(0) if name == "-" else os.stat(name))
        except OSError:
            continue


def _same_file(a: os.stat_result, b: os.stat_result) -> bool:
    """Whether two stats are one regular file (a device or pipe shared by input and output loses nothing)."""
    return stat.S_ISREG(a.st_mode) and (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def _follow_symlinks(path: Path) -> Path | None:
    """The path PATH's symlinks lead to; None when they lead into /proc or /dev/fd (an open file descriptor)."""
    for _ in range(_MAX_SYMLINKS):
        if str(path).startswith(_DESCRIPTOR_LINKS):
            return None
        if not path.is_symlink():
            return path
        link = Path(os.readlink(path))
        path = link if link.is_absolute() else path.parent / link
    raise OutputError(f"cannot write {path}: too many levels of symbolic links; fix the link or choose another -o path")


def _temp_prefix(folder: Path, name: str) -> str:
    """`.NAME.`, NAME cut so that the whole temp name fits the file system's NAME_MAX."""
    try:
        name_max = os.pathconf(folder, "PC_NAME_MAX")
    except (OSError, ValueError):
        name_max = 255
    budget = max(1, name_max - 2 - _TEMP_RANDOM_CHARS - len(_TEMP_SUFFIX))
    return "." + os.fsencode(name)[:budget].decode("utf-8", "ignore") + "."
