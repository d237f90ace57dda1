"""Builds in the cache folder (converted models): made once under a lock, verified by checksums, healed once.

    build_once(target, build)  -> target   one process builds (build(scratch) -> rename), the others wait for it
    verify(target)                         DamagedCacheError unless every file matches the checksums of its build
    stamp(target)                          the build's id (changes with every rebuild), None when there is no build

A build is written into a scratch folder beside the target (`.NAME.tmp-*`, a "partial" entry for
`prosemc cache`), then renamed into place with its marker file (`prosemc-cache.json`: one size and CRC-32 per
file, and the build id), so a half-written build is never used. The lock is an flock on the cache folder
itself, so it leaves no file behind. A folder whose files no longer match (a disk error, a truncated copy, NaN
written over weights) is rebuilt by the next process that notices, once: `build_once(target, build,
replace=stamp)` rebuilds only if the folder still holds that damaged build, so processes that notice together
rebuild it only once.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import tempfile
import time
import uuid
import zlib
from pathlib import Path
from typing import Callable, Iterator

from prosemc.errors import ModelError

MARKER = "prosemc-cache.json"
_PIECE = 16 << 20  # checksum files in pieces of 16 MiB


class DamagedCacheError(ModelError):
    """A cache folder's files do not match the checksums recorded when it was built."""


def stamp(target: Path) -> str | None:
    """The id of the build in `target`, or None when it holds no complete build."""
    try:
        return str(json.loads((target / MARKER).read_text())["build"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def build_once(target: Path, build: Callable[[Path], None], *, what: str, say: Callable[[str], None],
               replace: str | None = None) -> Path:
    """`target`, built by build(scratch folder) unless it holds a complete build (other than `replace`).

    One process builds under an flock on the cache folder; others wait, saying so once, and use its build.
    """
    current = stamp(target)
    if current is not None and current != replace:
        return target
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        lock = os.open(target.parent, os.O_RDONLY)
    except OSError as exc:
        raise ModelError(f"cannot use the cache folder {target.parent} ({exc.strerror}); point PROSEMC_CACHE at a "
                         "writable folder") from None
    with _locked(lock, lambda: say(f"prosemc: waiting for another prosemc process to finish {what}")):
        current = stamp(target)
        if current is not None and current != replace:
            return target  # built (or rebuilt) by the process we waited for
        for leftover in target.parent.glob(f".{target.name}.tmp-*"):  # of killed builds: nobody else builds now
            shutil.rmtree(leftover, ignore_errors=True)
        _remove(target)
        scratch = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
        try:
            build(scratch)
            _write_marker(scratch)
            _apply_umask(scratch)
            os.rename(scratch, target)
        except BaseException:
            shutil.rmtree(scratch, ignore_errors=True)
            raise
    return target


def verify(target: Path) -> None:
    """DamagedCacheError unless every file of the build in `target` has the size and CRC-32 recorded for it."""
    try:
        files = json.loads((target / MARKER).read_text())["files"]
        for name, (size, crc) in files.items():
            path = target / name
            if path.stat().st_size != size or _crc32(path) != crc:
                raise DamagedCacheError(f"the cache {target} is damaged ({name} does not match its checksum)")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DamagedCacheError(f"the cache {target} is damaged ({exc})") from None


@contextlib.contextmanager
def _locked(fd: int, waiting: Callable[[], None]) -> Iterator[None]:
    """Hold an exclusive flock on the open folder `fd` (closed afterwards); call waiting() once if another process
    holds it."""
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            waiting()
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def _write_marker(folder: Path) -> None:
    files = {str(path.relative_to(folder)): [path.stat().st_size, _crc32(path)]
             for path in sorted(folder.rglob("*")) if path.is_file()}
    marker = {"build": uuid.uuid4().hex, "built": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "files": files}
    (folder / MARKER).write_text(json.dumps(marker, indent=1) + "\n")


def _crc32(path: Path) -> int:
    crc = 0
    with open(path, "rb") as stream:
        while piece := stream.read(_PIECE):
            crc = zlib.crc32(piece, crc)
    return crc


def _apply_umask(folder: Path) -> None:
    """Give the build the modes the user's umask asks for (temp folders and some writers make files private)."""
    mask = os.umask(0o022)
    os.umask(mask)
    for path in [folder, *folder.rglob("*")]:
        path.chmod((0o777 if path.is_dir() else 0o666) & ~mask)


def _remove(target: Path) -> None:
    """Move a damaged or incomplete folder aside, then delete it (a reader never sees it half deleted)."""
    if not target.exists():
        return
    aside = target.parent / f".{target.name}.tmp-old-{uuid.uuid4().hex[:8]}"
    os.rename(target, aside)
    shutil.rmtree(aside, ignore_errors=True)
