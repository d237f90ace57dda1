"""`prosemc models` (what can encode and answer, and what is installed) and `prosemc cache` (list, remove)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from prosemc.cli import cli
from prosemc.cli.console import emit, plural, say
from prosemc.codec import CODECS
from prosemc.report import document

LITE = {
    "name": "lite",
    "about": "EfficientNet-Lite0 (ImageNet) tokens [49, 1280] at the edge; in the cloud its classifier head gives "
             "the top-5 ImageNet labels and SmolLM2-135M-Instruct answers from them. Built in, offline, CPU.",
    "good_for": "what is shown / what animal or object this is; it cannot count, read text, or tell colours "
                "and positions (it says so)",
}
LITE_DENSE = {
    "name": "lite-dense",
    "about": "EfficientNet-Lite0 cut after stage 5: dense signed tokens [196, 112] at the edge; in the cloud stages "
             "6-7 and the head give the labels, and SmolLM2 answers as for lite. Built in, offline, CPU.",
    "good_for": "as lite; it is the offline stand-in for a VLM's dense tokens (every token feeds the cloud layers)",
}
FAMILIES = {
    "llava": "LLaVA-1.5 (llava-hf/llava-1.5-7b-hf, ...): the edge sends the vision tower's features [576, 1024]; "
             "the projector runs in the cloud",
    "idefics3": "SmolVLM / Idefics3 (HuggingFaceTB/SmolVLM-256M-Instruct, ...): the edge runs tower + connector, "
                "[64, 576] per image tile",
    "qwen2_vl": "Qwen2-VL (Qwen/Qwen2-VL-2B-Instruct, ...): the edge runs tower + 2x2 merger, [n/4, 1536] tokens",
}


def _size(count: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if count < 1000 or unit == "GB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1000
    return ""


def _file(path: Path | None) -> dict[str, Any]:
    present = path is not None and path.exists()
    from prosemc.models.cache import disk_bytes

    return {"path": str(path) if path else None, "present": present, "bytes": disk_bytes(path) if present else None}


def lite_parts() -> dict[str, dict[str, Any]]:
    """The files the lite model needs, where they are and whether they are there (nothing is loaded)."""
    from prosemc.errors import ModelError
    from prosemc.models.lite import weights_file
    from prosemc.models.llm import converted_dir, gguf_file

    def located(find: Any) -> Path | None:
        try:
            return find()
        except ModelError:
            return None

    return {"encoder_weights": _file(located(weights_file)), "answerer_gguf": _file(located(gguf_file)),
            "answerer_cache": _file(converted_dir())}


def hub_checkpoints() -> list[dict[str, Any]]:
    """Checkpoints of supported families in the local Hugging Face cache: hub id, family, bytes on disk."""
    from huggingface_hub import scan_cache_dir
    from huggingface_hub.errors import CacheNotFound

    from prosemc.models.hf.checkpoint import FAMILIES as MODEL_TYPES

    try:
        repos = scan_cache_dir().repos
    except CacheNotFound:
        return []
    found = []
    for repo in sorted(repos, key=lambda r: r.repo_id):
        if repo.repo_type != "model":
            continue
        for revision in repo.revisions:
            try:
                model_type = json.loads((revision.snapshot_path / "config.json").read_text()).get("model_type")
            except (OSError, ValueError, AttributeError):
                continue
            if model_type in MODEL_TYPES:
                found.append({"id": repo.repo_id, "family": MODEL_TYPES[model_type], "revision": revision.commit_hash,
                              "bytes": revision.size_on_disk, "path": str(revision.snapshot_path)})
                break
    return found


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print everything as one JSON object (docs/json.md).")
def models(as_json: bool) -> None:
    """List the built-in model, the codecs and the Hugging Face families, and which weights and caches are here.

    Nothing is loaded or downloaded: this only looks at installed packages, the prosemc cache and the local
    Hugging Face cache. Use a listed hub id with --model on encode (query finds it from the .psem).
    """
    import hashlib

    from prosemc.codec.metaae_weights import shipped_weights_path
    from prosemc.models.cache import cache_entries
    from prosemc.models.llm import cache_root

    shipped = {}
    for model in (LITE["name"], LITE_DENSE["name"]):
        shipped[model] = {"model": model, **_file(shipped_weights_path(model))}
        if shipped[model]["present"]:
            shipped[model]["sha256"] = hashlib.sha256(shipped_weights_path(model).read_bytes()).hexdigest()
    parts = lite_parts()
    codecs = [{"id": r.codec_id, "name": r.name, "about": r.about, **({"weights": list(shipped.values())} if r.learned
                                                                         else {})} for r in CODECS]
    entries = cache_entries()
    data = document(
        "models",
        models=[{**LITE, "parts": parts}, {**LITE_DENSE, "parts": parts}],
        codecs=codecs,
        hf_families=[{"family": family, "about": about} for family, about in FAMILIES.items()],
        hf_checkpoints=hub_checkpoints(),
        cache={"path": str(cache_root()), "bytes": sum(e.bytes for e in entries),
               "entries": [e.to_json() for e in entries]},
    )
    if as_json:
        click.echo(json.dumps(data))
        return
    lines = ["Built-in models", f"  lite  {LITE['about']}", f"        good for: {LITE['good_for']}",
             f"  lite-dense  {LITE_DENSE['about']}", "  both need:"]
    for part, info in parts.items():
        state = _size(info["bytes"]) if info["present"] else "missing"
        lines.append(f"        {part.replace('_', ' ')}: {state}  {info['path'] or ''}")
    lines += ["", "Codecs (--codec)"] + [f"  {r.name:<9} {r.about}" for r in CODECS]
    for model, info in shipped.items():
        lines.append(f"            metaae weights for {model}: {_size(info['bytes']) if info['present'] else 'missing'}"
                     f"  {info['path']}")
    lines += ["", "Hugging Face families (--model HUB_ID or FOLDER)"]
    lines += [f"  {family:<9} {about}" for family, about in FAMILIES.items()]
    lines += ["", "Hugging Face checkpoints in the local cache"]
    lines += [f"  {c['id']} ({c['family']}, {_size(c['bytes'])})" for c in data["hf_checkpoints"]] or ["  none"]
    lines += ["", f"prosemc cache {data['cache']['path']} (see `prosemc cache`)"]
    lines += [f"  {e['name']} ({e['kind']}, {_size(e['bytes'])})" for e in data["cache"]["entries"]] or ["  empty"]
    click.echo("\n".join(lines))


@cli.group(invoke_without_command=True)
@click.option("--json", "as_json", is_flag=True, help="Print the listing as JSON (as `prosemc cache list --json`).")
@click.pass_context
def cache(ctx: click.Context, as_json: bool) -> None:
    """List (the default) or remove what prosemc keeps in its cache folder.

    The folder is $PROSEMC_CACHE, else $XDG_CACHE_HOME/prosemc, else ~/.cache/prosemc. Kinds: llm (SmolLM2
    converted from its GGUF), partial (an interrupted conversion), tokens (`prosemc fit` token caches), hashes
    (sha256 of local Hugging Face weight files), onnx (edge bundle graphs as onnxruntime optimised them). Everything
    there is made again when needed. Hugging Face checkpoints live in the Hugging Face cache: remove those with `hf
    cache delete`.

    \b
      prosemc cache                 # what is there and how big
      prosemc cache remove tokens   # by kind or by name
      prosemc cache remove --all    # everything prosemc made
    """
    if ctx.invoked_subcommand is None:
        ctx.invoke(list_command, as_json=as_json)


@cache.command(name="list")
@click.option("--json", "as_json", is_flag=True, help="Print {path, bytes, entries: [...]} as JSON (docs/json.md).")
def list_command(as_json: bool = False) -> None:
    """List every entry of the cache folder with its kind and size."""
    from prosemc.models.cache import cache_entries
    from prosemc.models.llm import cache_root

    entries = cache_entries()
    total = sum(e.bytes for e in entries)
    if as_json:
        click.echo(json.dumps(document("cache list", path=str(cache_root()), bytes=total,
                                       entries=[e.to_json() for e in entries])))
        return
    lines = [f"{cache_root()}: {_size(total)} in {plural(len(entries), 'entry')}"]
    lines += [f"  {e.kind:<8} {_size(e.bytes):>9}  {e.name}" for e in entries]
    click.echo("\n".join(lines))


@cache.command()
@click.argument("names", nargs=-1)
@click.option("--all", "remove_all", is_flag=True, help="Remove every entry prosemc made.")
@click.option("--json", "as_json", is_flag=True, help="Print {removed: [...], bytes} as JSON (docs/json.md).")
def remove(names: tuple[str, ...], remove_all: bool, as_json: bool) -> None:
    """Remove cache entries by NAME or kind (llm, partial, tokens, hashes), or --all.

    Entries prosemc did not make are never removed. A removed entry is made again when it is next needed.
    """
    from prosemc.errors import InputError
    from prosemc.models.cache import cache_entries, remove_entry, select

    if not names and not remove_all:
        raise InputError("say what to remove: a name or kind from `prosemc cache`, or --all")
    entries = cache_entries()
    chosen = [e for e in entries if e.kind != "other"] if remove_all else select(entries, list(names))
    for entry in chosen:
        remove_entry(entry)
    freed = sum(e.bytes for e in chosen)
    for entry in chosen:
        say(f"removed {entry.path} ({_size(entry.bytes)})")
    emit(document("cache remove", removed=[e.to_json() for e in chosen], bytes=freed), as_json,
         f"removed {plural(len(chosen), 'entry')}, freed {_size(freed)}")
