"""CLI file plumbing: `-` as stdin/stdout, and atomic output files (nothing half-written on failure)."""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from pathlib import Path
from typing import BinaryIO, Iterator

from prosemc.errors import InputError


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
def atomic_output(path: str) -> Iterator[BinaryIO]:
    """Write to stdout for `-`; else to a temp file beside PATH, renamed over it only on success."""
    if path == "-":
        yield sys.stdout.buffer
        sys.stdout.buffer.flush()
        return
    target = Path(path)
    if target.is_dir() or not target.parent.is_dir():
        raise InputError(f"cannot write {path}: it is a folder or its folder does not exist; choose another -o path")
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent or ".")
    try:
        with os.fdopen(fd, "wb") as stream:
            yield stream
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


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
