"""Find a Hugging Face VLM checkpoint offline, name its family, and give it a stable model id. No torch here.

    "org/name" (hub id) --local HF cache only--> snapshot folder --config.json--> family + model_id
    "./folder" (local)  ---------------------------------------^
"""

from __future__ import annotations

import hashlib
import json
import os
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


@dataclass(frozen=True)
class Checkpoint:
    """A checkpoint folder on disk with its parsed config.json, family and canonical model id."""

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


def model_id_for(name: str, config: dict) -> str:
    """`<basename>@<config hash>`: the same for a hub id and for a local copy of that checkpoint.

    e.g. "HuggingFaceTB/SmolVLM-256M-Instruct" and "/data/SmolVLM-256M-Instruct" both give
    "SmolVLM-256M-Instruct@1a2b3c4d"; a different config (another size, a fine-tune) gives another hash.
    """
    base = Path(name.rstrip("/\\")).expanduser().name or "model"
    return f"{base}@{config_hash(config)}"


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
    resolved_name = str(folder) if Path(name).expanduser().is_dir() else name
    return Checkpoint(folder=folder, config=config, family=family, model_id=model_id_for(resolved_name, config))
