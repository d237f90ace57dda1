"""Find a Hugging Face VLM checkpoint offline, name its family, and identify it by content. No torch here.

    "org/name" (hub id) --local HF cache only--> snapshot folder --config.json--> family
    "./folder" (local)  ---------------------------------------^   --config + weight files--> model_id

A model id is `<name>@<config hash>-<weights hash>`: the name (hub id, or the folder's name) is a hint for
finding the checkpoint again; the two hashes are its identity, so a copy in a folder of any name matches.
Ids written before the weights hash existed (`<name>@<config hash>`) still match by their config hash.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from prosemc.errors import ModelError

# config.model_type -> family name. The family decides where the model is split (see families.py).
FAMILIES: dict[str, str] = {
    "llava": "llava",
    "idefics3": "idefics3",
    "smolvlm": "idefics3",
    "qwen2_vl": "qwen2_vl",
}
SUPPORTED = "llava (LLaVA-1.5), idefics3 / smolvlm (SmolVLM, Idefics3), qwen2_vl (Qwen2-VL)"

# LLaVA checkpoints whose tower takes one fixed-size image (Pixtral-based "llava" checkpoints need image_sizes).
_LLAVA_TOWERS = frozenset({"clip_vision_model", "siglip_vision_model"})

# config.json keys that change with the saving library, not with the model.
_VOLATILE_KEYS = frozenset({"transformers_version", "_name_or_path", "_commit_hash", "torch_dtype", "dtype"})
_MODEL_ID = re.compile(r"^(?P<name>.+)@(?P<config>[0-9a-f]{8})(?:-(?P<weights>[0-9a-f]{8}))?$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
HASH_MEMO = "checkpoint-hashes.json"  # in the prosemc cache: file sha256 by (path, size, mtime), so big
                                      # local checkpoints are read once, not on every encode


@dataclass(frozen=True)
class Checkpoint:
    """A checkpoint folder on disk with its parsed config.json, family and content-based model id."""

    folder: Path
    config: dict
    family: str
    model_id: str


def _looks_like_path(name: str) -> bool:
    return name.startswith((".", "/", "~")) or os.sep in name.replace("/", "") or name.count("/") > 1


def _resolve_folder(name: str) -> Path:
    """The folder holding `name`: an existing directory, else the cached snapshot of hub id `name`."""
    path = Path(name).expanduser()
    if path.is_dir():
        return path.resolve()
    if path.exists():
        raise ModelError(f"model {name!r} is a file, not a checkpoint folder; pass the folder holding config.json")
    if _looks_like_path(name):
        raise ModelError(f"model folder {name!r} does not exist; pass an existing checkpoint folder or a hub id")
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HFValidationError

    try:
        return Path(snapshot_download(name, local_files_only=True))
    except HFValidationError:
        raise ModelError(
            f"model {name!r} is neither an existing folder nor a valid hub id; pass a checkpoint folder or 'org/name'"
        ) from None
    except (OSError, ValueError):
        from huggingface_hub import constants

        raise ModelError(
            f"model {name!r} is not in the local Hugging Face cache ({constants.HF_HUB_CACHE}); on a connected "
            f"machine run `hf download {name}` (and copy the cache or set HF_HOME), or pass a local folder"
        ) from None


def config_hash(config: dict) -> str:
    """First 8 hex digits of the SHA-256 of config.json in canonical form (sorted keys, volatile keys dropped)."""
    stable = {k: v for k, v in config.items() if k not in _VOLATILE_KEYS}
    blob = json.dumps(stable, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()
    return hashlib.sha256(blob).hexdigest()[:8]


def weight_files(folder: Path) -> list[Path]:
    """The files transformers loads the weights from: *.safetensors, else *.bin (sorted by name)."""
    return sorted(folder.glob("*.safetensors")) or sorted(folder.glob("*.bin"))


def file_sha256(path: Path, memo: dict[str, str] | None = None) -> str:
    """SHA-256 of a file's bytes; free for Hugging Face cache blobs (named by it), else memoised by stat."""
    real = path.resolve()
    if real.parent.name == "blobs" and _SHA256.match(real.name):  # the hub verified it on download
        return real.name
    stat = real.stat()
    key = f"{real}:{stat.st_size}:{stat.st_mtime_ns}"
    if memo is not None and key in memo:
        return memo[key]
    digest = hashlib.sha256()
    with open(real, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    if memo is not None:
        memo[key] = digest.hexdigest()
    return digest.hexdigest()


def weights_hash(folder: Path) -> str:
    """First 8 hex digits of the SHA-256 over the weight files' names and contents (see weight_files)."""
    from prosemc.models.llm import cache_root

    memo_path = cache_root() / HASH_MEMO
    try:
        memo = json.loads(memo_path.read_text())
        memo = memo if isinstance(memo, dict) else {}
    except (OSError, ValueError):
        memo = {}
    known = len(memo)
    listing = "".join(f"{path.name}:{file_sha256(path, memo)}\n" for path in weight_files(folder))
    if len(memo) != known:  # remember new hashes; a failed write only costs a re-read next time
        try:
            memo_path.parent.mkdir(parents=True, exist_ok=True)
            partial = memo_path.with_name(f".{HASH_MEMO}.{os.getpid()}.tmp")
            partial.write_text(json.dumps(memo, indent=0, sort_keys=True))
            os.replace(partial, memo_path)
        except OSError:
            pass
    return hashlib.sha256(listing.encode()).hexdigest()[:8]


def hub_id_of(folder: Path) -> str | None:
    """"org/name" when `folder` is a snapshot in a Hugging Face cache (.../models--org--name/snapshots/REV)."""
    repo = folder.parent.parent.name if folder.parent.name == "snapshots" else ""
    parts = repo.split("--")
    return "/".join(parts[1:]) if parts[0] == "models" and len(parts) >= 3 else None


def model_id_for(name: str, config: dict, weights: str) -> str:
    """`<name>@<config hash>-<weights hash>`; `name` is a hub id, or a folder whose last part is kept.

    e.g. "HuggingFaceTB/SmolVLM-256M-Instruct@1a2b3c4d-5e6f7a8b"; "/data/my-copy" of the same checkpoint gives
    "my-copy@1a2b3c4d-5e6f7a8b", which matches it (same_checkpoint); a fine-tune changes the weights hash.
    """
    if not _is_hub_id(name):
        name = Path(name.rstrip("/\\")).expanduser().name or "model"
    return f"{name}@{config_hash(config)}-{weights}"


def parse_model_id(model_id: str) -> tuple[str, str, str | None] | None:
    """(name, config hash, weights hash or None for an old id) of a Hugging Face model id, else None."""
    match = _MODEL_ID.match(model_id)
    return (match["name"], match["config"], match["weights"]) if match else None


def same_checkpoint(recorded: str, model_id: str) -> bool:
    """Whether `model_id` is the checkpoint `recorded` (a .psem's id) names: equal hashes, whatever the names.

    An old `recorded` id without a weights hash matches on the config hash alone.
    """
    a, b = parse_model_id(recorded), parse_model_id(model_id)
    if a is None or b is None:
        return recorded == model_id
    return a[1] == b[1] and (a[2] is None or b[2] is None or a[2] == b[2])


def recorded_hub_id(recorded: str) -> str | None:
    """The hub id a .psem's model id names (to find it in the local HF cache), or None for a folder name."""
    parsed = parse_model_id(recorded)
    return parsed[0] if parsed and _is_hub_id(parsed[0]) else None


def _is_hub_id(name: str) -> bool:
    return name.count("/") == 1 and not _looks_like_path(name)


def find_checkpoint(name: str) -> Checkpoint:
    """Resolve `name` (hub id or folder) offline, read its config.json and detect the family, or raise ModelError."""
    if not isinstance(name, str) or not name.strip():
        raise ModelError("no model given; pass a hub id such as 'llava-hf/llava-1.5-7b-hf' or a checkpoint folder")
    name = name.strip()
    folder = _resolve_folder(name)
    config_file = folder / "config.json"
    if not config_file.is_file():
        raise ModelError(f"model folder {str(folder)!r} has no config.json; pass a Hugging Face checkpoint folder")
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelError(f"cannot read {config_file}: {exc}; re-download the checkpoint") from None
    if not isinstance(config, dict):
        raise ModelError(f"{config_file} is not a JSON object; re-download the checkpoint")
    model_type = config.get("model_type")
    family = FAMILIES.get(model_type) if isinstance(model_type, str) else None
    if family is None:
        raise ModelError(
            f"model {name!r} has model_type {model_type!r}, which prosemc cannot split; supported: {SUPPORTED}"
        )
    if family == "llava":
        vision = config.get("vision_config") or {}
        tower = vision.get("model_type", "clip_vision_model") if isinstance(vision, dict) else None
        if tower not in _LLAVA_TOWERS:
            raise ModelError(
                f"model {name!r} is a LLaVA with a {tower!r} vision tower; only LLaVA-1.5-style "
                f"fixed-size towers ({', '.join(sorted(_LLAVA_TOWERS))}) are supported"
            )
    local = Path(name).expanduser().is_dir()
    hint = (hub_id_of(folder) or str(folder)) if local else name
    return Checkpoint(folder=folder, config=config, family=family,
                      model_id=model_id_for(hint, config, weights_hash(folder)))
