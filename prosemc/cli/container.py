"""`prosemc info`, `truncate` and `expand`: inspect, cut and convert `.psem` files (fast to start: no numpy)."""

from __future__ import annotations

import json
from typing import Any

import click

from prosemc.cli import UserError, cli, printable
from prosemc.cli.io import atomic_output, display_name, open_input
from prosemc.format import PsemReader, truncate

FILE = click.Path(dir_okay=False, allow_dash=True)


def describe_file(path: str) -> dict[str, Any]:
    """Read and verify a whole `.psem` of either form; returns the stable `info --json` document.

    A compact file whose profile this install does not know still has every checksum verified; the fields
    only its profile holds (encoder, tokens, codec, ...) are null and "profile.known" is false.
    """
    from prosemc.profiles import default_store, source_label

    with open_input(path) as stream:
        reader = PsemReader(stream, profiles=default_store(), require_profile=False)
        layers, extensions = [], []
        for chunk in reader:
            if chunk.is_layer:
                layers.append({"index": chunk.seq + 1, "bytes": chunk.size, "cumulative_bytes": chunk.end,
                               "checksum": "ok"})
            else:
                extensions.append({"type": chunk.type.decode(), "bytes": chunk.size, "checksum": "ok"})
    header, end, known = reader.header, reader.end, reader.profile
    assert end is not None
    profile = None
    if reader.profile_id is not None:
        profile = {"id": reader.profile_id.hex(), "known": known is not None, "name": known and known.name,
                   "source": known and source_label(known)}
    return {
        "file": display_name(path),
        "version": "%d.%d" % reader.version,
        "form": reader.form,
        "profile": profile,
        "encoder": header and header.encoder,
        "tokens": header and {"shape": list(header.token_shape), "dtype": header.token_dtype},
        "codec": header and header.codec,
        "entropy": header and header.entropy,
        "layers_declared": header and header.layers,
        "layers_present": end.layers,
        "status": end.status,
        "summary": end.describe(),
        "truncated_at": end.bytes_read if end.cut_at is not None else None,
        "header_bytes": len(reader.header_bytes),
        "total_bytes": end.bytes_read,
        "layers": layers,
        "extensions": extensions,
        "metadata": header and header.metadata,
    }


def _format_info(info: dict[str, Any]) -> str:
    """The human `info` text; every string from the file is escaped, so it cannot forge lines or drive a terminal."""
    form = " compact" if info["form"] == "compact" else ""
    lines = [f"file      {printable(info['file'])}  (PSEM {info['version']}{form}, {info['total_bytes']} bytes)"]
    profile = info["profile"]
    if profile and profile["known"]:
        lines.append(f"profile   {profile['id']}  {printable(profile['name'])} ({printable(profile['source'])})")
    elif profile:
        lines.append(f"profile   {profile['id']}  not known to this install: decoding needs it "
                     f"(`prosemc profiles show {profile['id']}` where it is known, then `prosemc profiles add`)")
    codec = info["codec"]
    if codec is not None:
        sha = codec.get("model_sha256")
        lines += [
            f"encoder   {printable(info['encoder'])}",
            f"tokens    {' x '.join(map(str, info['tokens']['shape']))} {info['tokens']['dtype']}",
            f"codec     {printable(codec['id'])}" + (f"  model sha256 {sha[:16]}…" if sha else ""),
            f"entropy   {printable(info['entropy']['id'])}",
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
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object with stable keys instead of text.")
def info(file: str, as_json: bool) -> None:
    """Show a .psem file's header, per-layer and cumulative bytes, and whether it is complete.

    Every checksum is verified. A file cut right after a layer is a valid "prefix"; one cut inside a layer
    is "truncated" and its complete layers are still listed. A compact file shows the profile it names;
    when this install does not know that profile, the checksums are still verified but what only the
    profile holds (encoder, codec, layers declared) is unknown. FILE may be - for stdin.
    """
    described = describe_file(file)
    click.echo(json.dumps(described, sort_keys=True) if as_json else _format_info(described))


@cli.command(name="truncate")
@click.argument("file", type=FILE)
@click.option("-o", "--output", required=True, type=FILE, help="Output file, or - for stdout. Written atomically.")
@click.option("--layers", type=click.IntRange(min=1), help="Keep the first K layers.")
@click.option("--max-bytes", type=click.IntRange(min=1), help="Keep the largest layer prefix of at most N bytes.")
@click.option("--compact", is_flag=True,
              help="Write the compact form (a full FILE is re-framed against its model + codec profile); "
                   "--max-bytes then counts compact bytes.")
@click.option("--json", "as_json", is_flag=True, help="Report what was kept as JSON on stderr.")
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
    with open_input(file) as source, atomic_output(output, inputs=[file]) as out:
        result = truncate(source, out, layers=layers, max_bytes=max_bytes, form="compact" if compact else None,
                          profiles=default_store(), profile_for=profile_of)
    profile_hex = result.profile_id.hex() if result.profile_id else None
    report = {"layers": result.layers, "bytes": result.bytes, "output": display_name(output, "<stdout>"),
              "form": result.form, "profile": profile_hex}
    click.echo(json.dumps(report, sort_keys=True) if as_json else
               printable(f"kept {result.layers} layers, {result.bytes} bytes -> {report['output']}"
                         + (f" (compact: needs profile {profile_hex})" if result.converted else "")), err=True)
    if result.converted:
        from prosemc.cli.profiles import warn_if_unknown_profile

        warn_if_unknown_profile(profile_hex)


@cli.command()
@click.argument("file", type=FILE)
@click.option("-o", "--output", required=True, type=FILE, help="The full .psem to write, or - for stdout (atomically).")
@click.option("--profile", "profile_arg",
              help="The profile FILE names, if this install does not know it: a profile JSON file (from `prosemc "
                   "profiles show`), a full .psem of the same model and codec, or a name or id.")
@click.option("--json", "as_json", is_flag=True, help="Report what was written as JSON on stderr.")
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
    try:
        with open_input(file) as source, atomic_output(output, inputs=[file]) as out:
            result = truncate(source, out, form="full", profiles=store.with_profiles(given) if given else store)
    except UnknownProfileError as exc:
        if given is None:
            raise
        raise UserError(
            f"{profile_arg} is profile {given.hex}, but {display_name(file)} needs profile {exc.profile_id.hex()}; "
            "pass that one"
        ) from None
    report = {"layers": result.layers, "bytes": result.bytes, "output": display_name(output, "<stdout>"),
              "expanded": result.converted}
    text = (f"expanded {result.layers} layers to {result.bytes} bytes -> {report['output']}" if result.converted
            else f"{display_name(file)} is already in the full form; copied {result.bytes} bytes -> {report['output']}")
    click.echo(json.dumps(report, sort_keys=True) if as_json else printable(text), err=True)
