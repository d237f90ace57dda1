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
    return "\n".join(parts)


if __name__ == "__main__":
    TARGET.write_text(render())
