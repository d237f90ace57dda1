"""`prosemc info`, `truncate` and `expand`: inspect, cut and convert `.psem` files (fast to start: no numpy)."""

from __future__ import annotations

import json
from typing import Any

import click

from prosemc.cli import UserError, cli
from prosemc.cli.console import emit, input_failure, naming, plural, printable
from prosemc.cli.io import atomic_output, display_name, open_input
from prosemc.errors import ProsemcError
from prosemc.format import PsemReader, truncate
from prosemc.report import codec_object, document, layers_list, psem_fields

FILE = click.Path(dir_okay=False, allow_dash=True)


def describe_file(path: str) -> dict[str, Any]:
    """Read and verify a whole `.psem` of either form; returns the `info --json` document (docs/json.md).

    A compact file whose profile this install does not know still has every checksum verified; the fields
    only its profile holds (model, tokens, codec, ...) are null and "profile.known" is false.
    """
    from prosemc.cli.profiles import profile_object
    from prosemc.profiles import default_store

    store = default_store()
    with naming(display_name(path)), open_input(path) as stream:
        reader = PsemReader(stream, profiles=store, require_profile=False)
        sizes, extensions = [], []
        for chunk in reader:
            if chunk.is_layer:
                sizes.append(chunk.size)
            else:
                extensions.append({"type": chunk.type.decode(), "bytes": chunk.size, "checksum": "ok"})
    header, end = reader.header, reader.end
    assert end is not None
    profile = profile_object(reader.profile_id, store)
    header_bytes = len(reader.header_bytes)
    fields = psem_fields(header, sizes, header_bytes, end.bytes_read)
    return document(
        "info", input=display_name(path), psem_version="%d.%d" % reader.version, form=reader.form, profile=profile,
        **{**fields, "codec": header and codec_object(header.codec, header.entropy, params=True),
           "layers": layers_list(sizes, header_bytes, checksum="ok")},
        status=end.status, summary=end.describe(),
        truncated_at=end.bytes_read if end.cut_at is not None else None, extensions=extensions,
        metadata=header and header.metadata)


def _format_info(info: dict[str, Any]) -> str:
    """The human `info` text; every string from the file is escaped, so it cannot forge lines or drive a terminal."""
    form = " compact" if info["form"] == "compact" else ""
    lines = [f"file      {printable(info['input'])}  (PSEM {info['psem_version']}{form}, {info['bytes']} bytes)"]
    profile = info["profile"]
    if profile and profile["known"]:
        lines.append(f"profile   {profile['id']}  {printable(profile['name'])} ({printable(profile['source'])})")
    elif profile:
        lines.append(f"profile   {profile['id']}  not known to this install: decoding needs it "
                     f"(`prosemc profiles show {profile['id']}` where it is known, then `prosemc profiles add`)")
    codec = info["codec"]
    if codec is not None:
        sha = codec["weights_sha256"]
        lines += [
            f"model     {printable(info['model'])}",
            f"tokens    {' x '.join(map(str, info['tokens']['shape']))} {info['tokens']['dtype']}",
            f"codec     {printable(str(codec['id']))}" + (f"  weights sha256 {sha[:16]}…" if sha else ""),
            f"entropy   {printable(str(codec['entropy']))}",
        ]
    lines += [
        f"status    {info['summary']}",
        f"header    {info['header_bytes']} bytes",
        "layer     bytes  cumulative  checksum",
    ]
    lines += [f"{r['index']:>5} {r['bytes']:>9} {r['cumulative_bytes']:>11}  {r['checksum']}" for r in info["layers"]]
    lines += [f"  ext {e['type']} {e['bytes']:>5} bytes  checksum {e['checksum']}" for e in info["extensions"]]
    return "\n".join(lines)


@cli.command()
@click.argument("file", type=click.Path(dir_okay=False, allow_dash=True))
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object (docs/json.md) instead of text.")
def info(file: str, as_json: bool) -> None:
    """Show a .psem file's header, per-layer and cumulative bytes, and whether it is complete.

    Every checksum is verified. A file cut right after a layer is a valid "prefix"; one cut inside a layer
    is "truncated" and its complete layers are still listed. A compact file shows the profile it names;
    when this install does not know that profile, the checksums are still verified but what only the
    profile holds (encoder, codec, layers declared) is unknown. FILE may be - for stdin.
    """
    described = describe_file(file)
    click.echo(json.dumps(described) if as_json else _format_info(described))


def _written_fields(result: Any) -> dict[str, Any]:
    """The report fields of the .psem a truncation (or conversion) wrote."""
    from prosemc.cli.profiles import profile_object

    return psem_fields(result.header, result.layer_bytes, result.header_bytes, result.bytes, form=result.form,
                       profile=profile_object(result.profile_id))


@cli.command(name="truncate")
@click.argument("file", type=FILE)
@click.option("-o", "--output", required=True, type=FILE, help="Output file, or - for stdout. Written atomically.")
@click.option("--layers", type=click.IntRange(min=1), help="Keep the first K layers.")
@click.option("--max-bytes", type=click.IntRange(min=1), help="Keep the largest layer prefix of at most N bytes.")
@click.option("--compact", is_flag=True,
              help="Write the compact form (a full FILE is re-framed against its model + codec profile); "
                   "--max-bytes then counts compact bytes.")
@click.option("--json", "as_json", is_flag=True,
              help="Report what was kept as JSON (docs/json.md): on stdout, or stderr with -o -.")
def truncate_command(file: str, output: str, layers: int | None, max_bytes: int | None, compact: bool,
                     as_json: bool) -> None:
    """Cut a .psem to its first K layers or to a byte budget; in its own form the result is a byte prefix of FILE.

    \b
      prosemc truncate x.psem -o x2.psem --layers 2
      cat x.psem | prosemc truncate - -o - --max-bytes 1024 | prosemc query - "what is shown?"
      prosemc truncate x.psem -o - --compact --max-bytes 384 | nc cloud 9000
    """
    from prosemc.profiles import default_store, profile_of

    if layers is None and max_bytes is None and not compact:
        raise click.UsageError("pass --layers K or --max-bytes N (or both), or --compact")
    with naming(display_name(file)), open_input(file) as source, atomic_output(output, inputs=[file]) as out:
        result = truncate(source, out, layers=layers, max_bytes=max_bytes, form="compact" if compact else None,
                          profiles=default_store(), profile_for=profile_of)
    report = document("truncate", input=display_name(file), output=display_name(output, "<stdout>"),
                      **_written_fields(result))
    emit(report, as_json, f"kept {plural(result.layers, 'layer')}, {result.bytes} bytes -> {report['output']}"
         + (f" (compact: needs profile {report['profile']['id']})" if result.converted else ""),
         data_on_stdout=output == "-")
    if result.converted:
        from prosemc.cli.profiles import warn_if_unknown_profile

        warn_if_unknown_profile(report["profile"])


@cli.command()
@click.argument("file", type=FILE)
@click.option("-o", "--output", required=True, type=FILE, help="The full .psem to write, or - for stdout (atomically).")
@click.option("--profile", "profile_arg",
              help="The profile FILE names, if this install does not know it: a profile JSON file (from `prosemc "
                   "profiles show`), a full .psem of the same model and codec, or a name or id.")
@click.option("--json", "as_json", is_flag=True,
              help="Report what was written as JSON (docs/json.md): on stdout, or stderr with -o -.")
def expand(file: str, output: str, profile_arg: str | None, as_json: bool) -> None:
    """Turn a compact .psem back into the full, self-describing form, every layer verified and re-framed.

    The result is byte for byte what `prosemc encode` writes without --compact, so any prosemc reads it
    without the profile.

    \b
      prosemc expand small.psem -o full.psem
      prosemc expand small.psem -o full.psem --profile lite-metaae.json
    """
    from prosemc.format import UnknownProfileError
    from prosemc.profiles import default_store, load_profile

    store = default_store()
    given = load_profile(profile_arg, store) if profile_arg else None
    name = display_name(file)
    try:
        with open_input(file) as source, atomic_output(output, inputs=[file]) as out:
            result = truncate(source, out, form="full", profiles=store.with_profiles(given) if given else store)
    except UnknownProfileError as exc:
        if given is None:
            raise UserError(input_failure(name, exc)) from None
        raise UserError(f"{profile_arg} is profile {given.hex}, but {name} needs profile {exc.profile_id.hex()}; "
                        "pass that one") from None
    except ProsemcError as exc:
        raise UserError(input_failure(name, exc)) from None
    report = document("expand", input=name, output=display_name(output, "<stdout>"), expanded=result.converted,
                      **_written_fields(result))
    text = (f"expanded {plural(result.layers, 'layer')} to {result.bytes} bytes -> {report['output']}"
            if result.converted else f"{name} is already in the full form; copied {result.bytes} bytes -> "
                                     f"{report['output']}")
    emit(report, as_json, text, data_on_stdout=output == "-")
