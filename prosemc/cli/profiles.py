"""`prosemc profiles`: the profiles this install knows (compact .psem files name one by id); show or add one."""

from __future__ import annotations

import json
import re
from typing import Any

import click

from prosemc.cli import cli
from prosemc.cli.console import emit, say
from prosemc.cli.io import atomic_output
from prosemc.errors import InputError
from prosemc.report import codec_object, document, tokens_object

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


def unknown_profile_message(profile_hex: str) -> str:
    """The one line for a compact file whose profile this install does not know: the id, and how to get past it."""
    return (f"this compact .psem needs profile {profile_hex}, which this install does not know; expand it where the "
            "profile is known (`prosemc expand FILE -o FULL.psem`) and send the full file, or add the profile here "
            f"(`prosemc profiles add PROFILE.json`, made there by `prosemc profiles show {profile_hex}`)")


def profile_object(profile_id: bytes | None, store: Any = None) -> dict[str, Any] | None:
    """The `profile` object of the JSON reports: {id, known, name, source}; None for a full-form file."""
    if profile_id is None:
        return None
    from prosemc.profiles import default_store, source_label

    known = (store if store is not None else default_store()).get(profile_id)
    return {"id": profile_id.hex(), "known": known is not None, "name": known.name if known else None,
            "source": source_label(known) if known else None}


def warn_if_unknown_profile(profile: dict[str, Any] | None) -> None:
    """Tell the user when a compact file names a profile this install does not know: its receiver needs it too."""
    if profile is not None and not profile["known"]:
        say(f"profile {profile['id']} is not among this install's profiles, and the receiver needs it: encode one "
            "image in the full form and run `prosemc profiles add FULL.psem` on both ends")


@cli.group(invoke_without_command=True)
@click.option("--json", "as_json", is_flag=True, help="Print {folders, profiles: [...]} as JSON (docs/json.md).")
@click.pass_context
def profiles(ctx: click.Context, as_json: bool) -> None:
    """List the profiles this install knows: the headers compact .psem files name by id.

    A compact file carries an 8-byte profile id where a full file spells out its ~250-byte header, so
    whoever reads it must already know that profile: one per model and codec (what changes per image
    travels in the file). Built in: the lite model with every codec. Others -- a Hugging Face model's,
    say -- come from a full .psem with `prosemc profiles add`, into the folder $PROSEMC_PROFILES
    (default ~/.config/prosemc/profiles).

    \b
      prosemc profiles
      prosemc profiles show lite-metaae > lite-metaae.json    # where the profile is known
      prosemc profiles add lite-metaae.json                   # where it is not
      prosemc profiles add full.psem --name my-vlm            # the profile of a full file's model + codec
    """
    if ctx.invoked_subcommand is not None:
        return
    from prosemc.profiles import default_store, source_label

    store = default_store()
    rows = [{"id": p.hex, "name": p.name, "source": source_label(p), "model": p.header.encoder,
             "codec": codec_object(p.header.codec, p.header.entropy),
             "tokens": tokens_object(p.header.token_shape, p.header.token_dtype), "layers_declared": p.header.layers}
            for p in store]
    if as_json:
        click.echo(json.dumps(document("profiles", folders=[str(f) for f in store.folders], profiles=rows)))
        return
    lines = [f"{'id':<16}  {'name':<20}  {'model':<12}  {'codec':<14}  layers  source"]
    lines += [f"{r['id']}  {r['name']:<20}  {r['model'][:12]:<12}  {r['codec']['id']:<14}  {r['layers_declared']:>6}  "
              f"{r['source']}" for r in rows]
    click.echo("\n".join(lines))


@profiles.command()
@click.argument("key")
def show(key: str) -> None:
    """Print the profile KEY (a name or id from `prosemc profiles`) as its canonical header JSON.

    Save it to a file and `prosemc profiles add` it on another machine; its id is the SHA-256 of this JSON
    (first 8 bytes).
    """
    from prosemc.profiles import default_store

    found = default_store().find(key)
    if found is None:
        raise InputError(f"no known profile named {key!r}; `prosemc profiles` lists names and ids")
    click.echo(found.body.decode())


@profiles.command()
@click.argument("source", type=click.Path(dir_okay=False, exists=True))
@click.option("--name", help="File name for it in the profile folder (default: the JSON file's name, or the id).")
@click.option("--json", "as_json", is_flag=True, help="Report {id, name, path, added} as JSON (docs/json.md).")
def add(source: str, name: str | None, as_json: bool) -> None:
    """Add the profile in SOURCE to this install: a profile JSON file, or a full .psem (its model + codec).

    The profile of a full .psem is its header without its metadata and without the codec parameters that
    change per image, so one profile serves every image of that model and codec.
    """
    from prosemc.profiles import default_store, load_profile, source_label, user_folder

    store = default_store()
    profile = load_profile(source, store)
    name = name or profile.name
    if not _NAME.fullmatch(name):
        raise InputError(f"profile name {name!r} is not a plain file name; use letters, digits, '.', '_' and '-'")
    known = store.get(profile.id)
    path = user_folder() / f"{name}.json"
    if known is None:
        if path.exists():
            raise InputError(f"{path} already holds another profile; choose another --name")
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_output(str(path)) as out:
            out.write(profile.body)
    report = document("profiles add", id=profile.hex, name=known.name if known else name, added=known is None,
                      path=source_label(known) if known else str(path))
    emit(report, as_json, f"added profile {profile.hex} as {path}" if known is None else
         f"profile {profile.hex} is already known as {known.name} ({report['path']})")
