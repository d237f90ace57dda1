"""`prosemc info` and `prosemc truncate`: inspect and cut `.psem` files (stdlib only, fast to start)."""

from __future__ import annotations

import json
from typing import Any

import click

from prosemc.cli import cli, printable
from prosemc.cli.io import atomic_output, display_name, open_input
from prosemc.format import PsemReader, truncate


def describe_file(path: str) -> dict[str, Any]:
    """Read and verify a whole `.psem`; returns the stable `info --json` document."""
    with open_input(path) as stream:
        reader = PsemReader(stream)
        layers, extensions = [], []
        for chunk in reader:
            if chunk.is_layer:
                layers.append({"index": chunk.seq + 1, "bytes": chunk.size, "cumulative_bytes": chunk.end,
                               "checksum": "ok"})
            else:
                extensions.append({"type": chunk.type.decode(), "bytes": chunk.size, "checksum": "ok"})
    header, end = reader.header, reader.end
    assert end is not None
    return {
        "file": display_name(path),
        "version": "%d.%d" % reader.version,
        "encoder": header.encoder,
        "tokens": {"shape": list(header.token_shape), "dtype": header.token_dtype},
        "codec": header.codec,
        "entropy": header.entropy,
        "layers_declared": header.layers,
        "layers_present": end.layers,
        "status": end.status,
        "summary": end.describe(),
        "truncated_at": end.bytes_read if end.cut_at is not None else None,
        "header_bytes": len(reader.header_bytes),
        "total_bytes": end.bytes_read,
        "layers": layers,
        "extensions": extensions,
        "metadata": header.metadata,
    }


def _format_info(info: dict[str, Any]) -> str:
    """The human `info` text; every string from the file is escaped, so it cannot forge lines or drive a terminal."""
    codec = info["codec"]
    sha = codec.get("model_sha256")
    lines = [
        f"file      {printable(info['file'])}  (PSEM {info['version']}, {info['total_bytes']} bytes)",
        f"encoder   {printable(info['encoder'])}",
        f"tokens    {' x '.join(map(str, info['tokens']['shape']))} {info['tokens']['dtype']}",
        f"codec     {printable(codec['id'])}" + (f"  model sha256 {sha[:16]}…" if sha else ""),
        f"entropy   {printable(info['entropy']['id'])}",
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
    is "truncated" and its complete layers are still listed. FILE may be - for stdin.
    """
    described = describe_file(file)
    click.echo(json.dumps(described, sort_keys=True) if as_json else _format_info(described))


@cli.command(name="truncate")
@click.argument("file", type=click.Path(dir_okay=False, allow_dash=True))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False, allow_dash=True),
              help="Output file, or - for stdout. Written atomically.")
@click.option("--layers", type=click.IntRange(min=1), help="Keep the first K layers.")
@click.option("--max-bytes", type=click.IntRange(min=1), help="Keep the largest layer prefix of at most N bytes.")
@click.option("--json", "as_json", is_flag=True, help="Report what was kept as JSON on stderr.")
def truncate_command(file: str, output: str, layers: int | None, max_bytes: int | None, as_json: bool) -> None:
    """Cut a .psem to its first K layers or to a byte budget; the result is a byte prefix of FILE.

    \b
      prosemc truncate x.psem -o x2.psem --layers 2
      cat x.psem | prosemc truncate - -o - --max-bytes 1024 | prosemc query - "what is shown?"
    """
    if layers is None and max_bytes is None:
        raise click.UsageError("pass --layers K or --max-bytes N (or both)")
    with open_input(file) as source, atomic_output(output, inputs=[file]) as out:
        result = truncate(source, out, layers=layers, max_bytes=max_bytes)
    report = {"layers": result.layers, "bytes": result.bytes, "output": display_name(output, "<stdout>")}
    click.echo(json.dumps(report, sort_keys=True) if as_json else
               printable(f"kept {result.layers} layers, {result.bytes} bytes -> {report['output']}"), err=True)
