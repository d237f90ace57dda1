"""onnxruntime's optimised form of a bundle's graph, kept in the prosemc cache so a cold edge process skips the
graph optimisations (session creation ~20 ms instead of 60-150 ms for `lite` int8 on a shared 2-core x86). No torch.

    first load:   encoder.onnx --InferenceSession(all optimisations, board numerics)--> session
                                 └─ onnxruntime writes the optimised graph aside --rename--> <cache>/onnx-optimised/KEY-SHA.onnx
    later loads:  KEY-SHA.onnx (its sha256 = SHA, checked) --InferenceSession(no optimisations: applied already)--> session

KEY covers everything the optimised graph depends on: the bundle graph's sha256, the onnxruntime version, the CPU
(machine and feature flags: optimised kernels and layouts are chosen for it) and the session's config entries. A
missing, damaged, unloadable or not plain (a link, a folder) cache entry only costs the optimisation again; a cache
folder that cannot be written is not used.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import platform
from pathlib import Path
from typing import Any, Callable

CACHE_FOLDER = "onnx-optimised"  # `prosemc cache` lists it as kind "onnx" (prosemc.models.cache)


def cpu_identity() -> str:
    """The machine and its CPU feature flags (Linux /proc/cpuinfo: x86 `flags`, Arm `Features`); "" where unknown."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as cpuinfo:
            for line in cpuinfo:
                name, _, value = line.partition(":")
                if name.strip() in ("flags", "Features"):
                    return f"{platform.machine()} {' '.join(sorted(value.split()))}"
    except OSError:
        pass
    return ""


def cache_key(graph_sha256: str, runtime_version: str, config: dict[str, str]) -> str | None:
    """Name stem of the optimised graph for this graph, runtime, CPU and config; None when the CPU is unknown."""
    cpu = cpu_identity()
    if not cpu:
        return None
    described = "\n".join([graph_sha256, runtime_version, cpu, *(f"{k}={v}" for k, v in sorted(config.items()))])
    return hashlib.sha256(described.encode()).hexdigest()[:32]


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def cached_session(graph: Path, graph_sha256: str, config: dict[str, str], cache_dir: Path,
                   make: Callable[[Path, Path | None, bool], Any]) -> Any:
    """A session of `graph` through the cache in `cache_dir`.

    make(source, save_optimised, preoptimised) builds a session from a graph file: optimising it (and writing the
    optimised graph to save_optimised unless None), or, when preoptimised, running it as it is.
    """
    import onnxruntime

    key = cache_key(graph_sha256, onnxruntime.__version__, config)
    if key is None:
        return make(graph, None, False)
    folder = cache_dir / CACHE_FOLDER
    for entry in sorted(folder.glob(f"{key}-*.onnx")):
        try:
            if not entry.is_symlink() and entry.is_file() and _sha256(entry) == entry.stem.rsplit("-", 1)[1]:
                return make(entry, None, True)
        except Exception:  # noqa: BLE001 - unreadable, or refused by onnxruntime: optimise again below
            pass
        with contextlib.suppress(OSError):
            entry.unlink()
    scratch = folder / f".{key}.{os.getpid()}.tmp"
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:
        return make(graph, None, False)
    try:
        session = make(graph, scratch, False)
        with contextlib.suppress(OSError):  # a full or read-only cache folder: the session is what matters
            if scratch.is_file():
                os.replace(scratch, folder / f"{key}-{_sha256(scratch)}.onnx")
        return session
    finally:
        with contextlib.suppress(OSError):
            scratch.unlink()
