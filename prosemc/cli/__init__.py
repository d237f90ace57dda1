"""The `prosemc` command line: one click group; commands are thin and import heavy modules lazily.

Every failure a user can cause becomes exactly one line on stderr, "prosemc: error: ...", and exit code 2, never a
traceback: library errors (`ProsemcError`), usage errors, and the environment's (disk full, read-only file system,
...). Messages are escaped to one printable line, so no file name or header string can forge lines or drive the
terminal. A batch in which some items failed and others succeeded exits with code 3. SIGTERM and SIGHUP unwind
like SIGINT (temp files are removed), then end the process by that signal.
"""

from __future__ import annotations

import os
import signal
import sys
from typing import Any, IO

import click

from prosemc.cli.console import PREFIX, printable
from prosemc.cli.options import verbosity_options
from prosemc.errors import ProsemcError
from prosemc.format.errors import UnknownProfileError

PARTIAL_FAILURE_EXIT = 3


class UserError(click.ClickException):
    """A one-line message for a problem with the user's input; exit code 2."""

    exit_code = 2

    def __init__(self, message: str) -> None:
        super().__init__(printable(message))

    def show(self, file: IO[Any] | None = None) -> None:
        click.echo(f"{PREFIX}error: {self.format_message()}", file=file, err=file is None)


class PartialFailure(UserError):
    """Some items of a batch failed (each already reported), the others succeeded; exit code 3."""

    exit_code = PARTIAL_FAILURE_EXIT


def _one_line_usage(error: click.UsageError) -> UserError:
    command = error.ctx.command_path if error.ctx is not None else "prosemc"
    message = error.format_message()
    if message.endswith("?"):  # click's "Did you mean ...?"
        return UserError(f"{message} See '{command} --help'")
    return UserError(f"{message.rstrip('.')}; see '{command} --help'")


class ProsemcCommand(click.Command):
    """A command that also takes -q/--quiet and -v/--verbose."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.params.extend(verbosity_options())


class ProsemcGroup(click.Group):
    """A click group that turns library, usage and environment errors into one-line `UserError`s; its commands and
    subgroups take -q/--quiet and -v/--verbose, as it does itself."""

    command_class = ProsemcCommand
    group_class = type  # subgroups are ProsemcGroups too

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.params.extend(verbosity_options())

    def make_context(self, info_name: str | None, args: list[str], parent: click.Context | None = None,
                     **extra: Any) -> click.Context:
        try:
            return super().make_context(info_name, args, parent, **extra)
        except click.exceptions.NoArgsIsHelpError:
            raise  # `prosemc` alone prints the help
        except click.UsageError as error:
            raise _one_line_usage(error) from None

    def invoke(self, ctx: click.Context):  # type: ignore[override]
        try:
            if sys.stdout is None:
                raise UserError("standard output is closed; open it (>/dev/null discards what prosemc prints)")
            return super().invoke(ctx)
        except UnknownProfileError as exc:
            from prosemc.cli.profiles import unknown_profile_message

            raise UserError(unknown_profile_message(exc.profile_id.hex())) from None
        except ProsemcError as exc:
            raise UserError(str(exc)) from None
        except click.exceptions.NoArgsIsHelpError:
            raise
        except click.UsageError as error:
            raise _one_line_usage(error) from None
        except BrokenPipeError:
            sys.stderr.close()  # the reader went away (e.g. `| head`): stop quietly, as cat does
            ctx.exit(1)
        except OSError as exc:  # the environment's: a file vanished, permissions, a full disk, ...
            where = f"{exc.filename}: " if exc.filename else ""
            raise UserError(f"{where}{exc.strerror or exc}; check the file and the disk, then retry") from None
        except MemoryError:
            raise UserError("out of memory; free some memory or use a smaller input") from None


def _print_version(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    if value and not ctx.resilient_parsing:
        from prosemc.cli.version import version_text

        click.echo(version_text())
        ctx.exit()


@click.group(cls=ProsemcGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--version", is_flag=True, expose_value=False, is_eager=True, callback=_print_version,
              help="Show the versions of prosemc, its format, torch, transformers, onnxruntime and the shipped codec "
                   "weights (sha256), and exit.")
def cli() -> None:
    """Progressive semantic codec for edge-cloud vision-language models.

    The edge encodes an image into visual tokens and compresses them into a layered .psem file that can be
    cut after any layer; the cloud decodes whatever prefix arrived and answers questions about it.

    \b
      prosemc encode img.jpg -o x.psem
      prosemc query x.psem "what is shown?"
      prosemc info x.psem
      prosemc truncate x.psem -o small.psem --max-bytes 1000
      prosemc encode img.jpg -o - --compact --max-bytes 384 | nc cloud 9000
      prosemc encode cam.jpg -o - | ssh cloud prosemc query - "what is shown?"
      prosemc serve                                   # the cloud, kept warm
      prosemc send cam.jpg http://cloud:8000 "what is shown?" --deadline 2 --confidence 0.9

    Every FILE argument accepts - for stdin/stdout. Messages go to stderr as "prosemc: ..." (-q: errors
    only, -v: more detail); --json reports follow one schema (docs/json.md). Errors exit with code 2 and one
    line on stderr; a batch in which some items failed exits with code 3.
    """


class _Terminated(BaseException):
    """SIGTERM or SIGHUP arrived: unwinds like KeyboardInterrupt so that every `finally` (temp files) runs."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def _terminate(signum: int, frame: Any) -> None:
    raise _Terminated(signum)


def main() -> None:
    """Console-script entry point."""
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _terminate)
    try:
        cli(prog_name="prosemc")
    except _Terminated as stop:  # cleaned up; now end by the signal itself, so the parent sees what happened
        signal.signal(stop.signum, signal.SIG_DFL)
        os.kill(os.getpid(), stop.signum)


from prosemc.cli import bench, container, evaluate, export, fit, main_job, models, profiles, serve  # noqa: E402,F401
