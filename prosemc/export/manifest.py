"""`manifest.json` of an edge bundle: what the bundle holds, how it was made, and the sha256 of every file. No torch.

    bundle/
      manifest.json        format id, model id (as the .psem header's "encoder" says it), pixel recipe, token shape,
                           codec id + weights sha256, target, opset, quantisation scheme, calibration hash, parity,
                           "files": {name: sha256}, "checksum": sha256 of the manifest itself without this key
      encoder.onnx         the edge half: pixels [1, 3, H, W] (0..255) -> tokens [N, D]
      metaae.safetensors   the codec's weights (metaae bundles only)

A bundle that is incomplete or was edited after export is refused, naming the file (`read_manifest`).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from prosemc.errors import ModelError

FORMAT = "prosemc-edge-bundle/1"
MANIFEST = "manifest.json"
MAX_MANIFEST_BYTES = 1 << 20
REQUIRED = ("format", "target", "model", "input", "tokens", "graph", "codec", "files")


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _checksum(manifest: dict[str, Any]) -> str:
    body = {key: value for key, value in manifest.items() if key != "checksum"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def write_manifest(folder: Path, manifest: dict[str, Any], files: list[str]) -> dict[str, Any]:
    """Add the files' sha256 and the manifest's own checksum, and write folder/manifest.json; returns it."""
    complete = {**manifest, "format": FORMAT, "files": {name: sha256_file(folder / name) for name in files}}
    complete["checksum"] = _checksum(complete)
    (folder / MANIFEST).write_text(json.dumps(complete, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    return complete


def read_manifest(folder: Path) -> dict[str, Any]:
    """The manifest of the bundle in `folder`, after checking it and every file it lists; ModelError otherwise."""
    if not folder.is_dir():
        raise ModelError(f"bundle {folder} is not a folder; pass the folder `prosemc export -o` wrote")
    path = folder / MANIFEST
    try:
        if path.stat().st_size > MAX_MANIFEST_BYTES:
            raise ModelError(f"bundle file {path} is over {MAX_MANIFEST_BYTES} bytes; re-export the bundle")
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelError(f"bundle {folder} has no {MANIFEST}; it is incomplete, copy or re-export it") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ModelError(f"bundle file {path} is unreadable ({error}); re-export the bundle") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        found = manifest.get("format") if isinstance(manifest, dict) else type(manifest).__name__
        raise ModelError(f"{path} is not a {FORMAT} manifest (format {found!r}); re-export with this prosemc")
    if manifest.get("checksum") != _checksum(manifest):
        raise ModelError(f"bundle file {path} was edited after export (its checksum does not match); re-export it")
    missing = [key for key in REQUIRED if key not in manifest]
    if missing or not isinstance(manifest["files"], dict):
        raise ModelError(f"bundle file {path} lacks {', '.join(missing) or 'a files table'}; re-export the bundle")
    for name, expected in manifest["files"].items():
        member = folder / name
        if Path(name).name != name or name == MANIFEST:
            raise ModelError(f"bundle file {path} lists a file outside the bundle ({name!r}); re-export it")
        if not member.is_file():
            raise ModelError(f"bundle {folder} is incomplete: {name} is missing; copy the whole folder again")
        if sha256_file(member) != expected:
            raise ModelError(f"bundle file {member} was changed after export (sha256 differs from the manifest); "
                             "copy it again or re-export the bundle")
    return manifest
