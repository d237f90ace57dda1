"""Regenerate docs/cli.md from the commands' own --help (the test suite checks it is current).

    python docs/make_cli_reference.py
"""

from __future__ import annotations

from pathlib import Path

import click
from click.testing import CliRunner

from prosemc.cli import cli

TARGET = Path(__file__).resolve().parent / "cli.md"


def commands(group: click.Group, prefix: list[str]) -> list[list[str]]:
    """Every command path under `group`, depth first, sorted by name."""
    paths = [prefix]
    for name in sorted(group.commands):
        command = group.commands[name]
        paths += commands(command, prefix + [name]) if isinstance(command, click.Group) else [prefix + [name]]
    return paths


def render() -> str:
    runner = CliRunner()
    parts = ["# CLI reference", "", "Generated from `--help` by `docs/make_cli_reference.py`; do not edit.", ""]
    for path in commands(cli, []):
        result = runner.invoke(cli, path + ["--help"], prog_name="prosemc", terminal_width=100)
        assert result.exit_code == 0, result.output
        parts += [f"## `{' '.join(['prosemc', *path])}`", "", "```", result.stdout.rstrip(), "```", ""]
    return "\n".join(parts + limits())


def limits() -> list[str]:
    """The limits on input, from the code's own constants, with the one-line error (exit code 2) each gives."""
    from prosemc.codec.limits import FREE_VALUES, VALUES_PER_BYTE
    from prosemc.format import DEFAULT_LIMITS
    from prosemc.format.idle import DEFAULT_IDLE_TIMEOUT
    from prosemc.models.images import MAX_ASPECT_RATIO, MAX_IMAGE_BYTES, MAX_PIXELS

    rows = [
        ("image file size", f"{MAX_IMAGE_BYTES >> 20} MiB (read no further)", "`IMAGE is over the 64 MiB limit for an image file`"),
        ("image pixels", f"{MAX_PIXELS:,} (checked before decoding)", "`IMAGE is WxH pixels (N Mpx), over the 89 Mpx limit`"),
        ("image aspect ratio", f"{MAX_ASPECT_RATIO}:1", f"`IMAGE is WxH pixels, an aspect ratio over {MAX_ASPECT_RATIO}:1`"),
        ("idle pipe or socket", f"{DEFAULT_IDLE_TIMEOUT:g} s without a byte, once bytes arrived (`--read-timeout`)",
         "none: the complete layers are used and stderr says `the sender stalled`; inside the header: "
         "`the sender stalled: no byte for ...`"),
        (".psem header", f"{DEFAULT_LIMITS.header_bytes:,} bytes, integers of at most 19 digits, finite numbers",
         "`invalid .psem header: ...`"),
        (".psem layers", f"{DEFAULT_LIMITS.layers}, and exactly the codec's count", "`the header declares K layers, but ...`"),
        (".psem layer size", f"{DEFAULT_LIMITS.chunk_bytes:,} bytes, and what the codec can produce for the tokens",
         "`... claims N bytes for layer K, more than its codec can produce`"),
        ("decoding work per layer", f"{FREE_VALUES:,} + {VALUES_PER_BYTE:,} values per payload byte",
         "`layer K: this CODEC layer claims N values of decoding work in B bytes`"),
        ("output `-o`", "never the input file; devices, FIFOs and /dev/stdout are written through",
         "`the output X is the input Y`, `cannot write X: No space left on device; ...`"),
    ]
    lines = ["## Limits", "", "What prosemc refuses, and how (see formats/PSEM.md §6 for the container's own):", "",
             "| limit | value | error |", "| --- | --- | --- |"]
    return lines + [f"| {name} | {value} | {error} |" for name, value, error in rows] + [""]


if __name__ == "__main__":
    TARGET.write_text(render())
