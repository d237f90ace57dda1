"""What the CLI prints besides its data: one prefix, -q/-v, JSON reports, and errors that name their input.

    stdout   data (a .psem, tokens, an answer, a listing) or the --json report
    stderr   messages, each starting "prosemc: " (errors "prosemc: error: "), and progress lines;
             -q/--quiet keeps only errors, -v/--verbose adds details (timings, models loaded, each item of a batch)

A --json report goes to stdout unless stdout carries the command's data (`-o -`); then to stderr.
"""

from __future__ import annotations

import contextlib
import json
from typing import Any, Iterator

import click

from prosemc.errors import ModelError, ModelMismatchError, OutputError, ProsemcError
from prosemc.text import plural

__all__ = ["printable", "plural", "verbosity", "set_verbosity", "say", "detail", "emit", "input_failure", "naming"]

PREFIX = "prosemc: "
_VERBOSITY = "prosemc.verbosity"  # key in click's ctx.meta (shared by a command's context and its parents')


def printable(text: str) -> str:
    """TEXT with control and other non-printable characters escaped (\\n, \\x1b, \\u202e): one line, inert."""
    return "".join(ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii") for ch in text)


def verbosity() -> int:
    """-1 with -q, 1 with -v, else 0 (also outside a click command)."""
    ctx = click.get_current_context(silent=True)
    return ctx.meta.get(_VERBOSITY, 0) if ctx is not None else 0


def set_verbosity(ctx: click.Context, level: int) -> None:
    """Record -q (-1) or -v (1) for this command; -q also silences progress lines until the command ends."""
    current = ctx.meta.get(_VERBOSITY)
    if current == level:
        return
    if current is not None:
        raise click.UsageError("-q/--quiet and -v/--verbose exclude each other; give one of them")
    ctx.meta[_VERBOSITY] = level
    if level < 0:
        from prosemc.progress import silence

        token = silence.set(True)
        ctx.call_on_close(lambda: silence.reset(token))


def say(text: str) -> None:
    """A message on stderr, "prosemc: TEXT" (escaped to one line), unless -q."""
    if verbosity() >= 0:
        click.echo(PREFIX + printable(text), err=True)


def detail(text: str) -> None:
    """A message shown only with -v."""
    if verbosity() > 0:
        click.echo(PREFIX + printable(text), err=True)


def emit(report: dict[str, Any], as_json: bool, text: str | None = None, *, data_on_stdout: bool = False) -> None:
    """Print a report: as one JSON line with --json (stdout, or stderr when stdout carries data), else `text`
    as a message (stderr, "prosemc: ...", hidden by -q)."""
    if as_json:
        click.echo(json.dumps(report), err=data_on_stdout)
    elif text is not None:
        say(text)


def input_failure(name: str, error: ProsemcError) -> str:
    """The one-line message of an error about input NAME, naming it unless the message already does."""
    from prosemc.format.errors import UnknownProfileError

    if isinstance(error, UnknownProfileError):
        from prosemc.cli.profiles import unknown_profile_message

        message = unknown_profile_message(error.profile_id.hex())
    else:
        message = str(error)
    about_input = not isinstance(error, (OutputError, ModelError)) or isinstance(error, ModelMismatchError)
    return f"{name}: {message}" if about_input and name not in message else message


@contextlib.contextmanager
def naming(name: str) -> Iterator[None]:
    """Errors raised inside that concern the input name it ("photo.psem: layer 2 ... fails its checksum"); an
    output that cannot be written or a model that cannot load is not the input's doing, and is not named."""
    from prosemc.cli import UserError

    try:
        yield
    except ProsemcError as error:
        raise UserError(input_failure(name, error)) from None
