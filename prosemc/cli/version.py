"""`prosemc --version`: prosemc, its format, the libraries that run models, and the shipped codec weights.

Read from package metadata and file bytes only: nothing is imported, so it is as fast with torch installed as
without it.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import platform
from pathlib import Path

LIBRARIES = ("torch", "transformers", "onnxruntime", "numpy", "constriction", "numba")


def library_version(name: str) -> str:
    """The installed version of distribution NAME, or 'not installed'."""
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def shipped_weights() -> list[tuple[str, str]]:
    """(model, sha256) of every codec weights file shipped in the package (prosemc/data/metaae-MODEL.safetensors)."""
    folder = Path(__file__).resolve().parents[1] / "data"
    return [(path.stem.removeprefix("metaae-"), hashlib.sha256(path.read_bytes()).hexdigest())
            for path in sorted(folder.glob("metaae-*.safetensors"), key=lambda p: p.stem)]


def version_text() -> str:
    """The lines `prosemc --version` prints."""
    from prosemc import __version__
    from prosemc.format.spec import COMPACT_VERSION, MAJOR_VERSION, MINOR_VERSION
    from prosemc.report import SCHEMA_VERSION

    lines = [f"prosemc {__version__} (writes PSEM {MAJOR_VERSION}.{MINOR_VERSION} full and "
             f"{COMPACT_VERSION[0]}.{COMPACT_VERSION[1]} compact; JSON schema {SCHEMA_VERSION})",
             f"Python {platform.python_version()} on {platform.system()} {platform.machine()}",
             ", ".join(f"{name} {library_version(name)}" for name in LIBRARIES)]
    lines += [f"codec weights metaae/1 for {model}: sha256 {sha}" for model, sha in shipped_weights()]
    return "\n".join(lines)
