"""The `prosemc` command line: one click group; commands are thin and import heavy modules lazily.

Every failure a user can cause becomes exactly one line on stderr and exit code 2, never a traceback:
library errors (`ProsemcError`), usage errors, and the environment's (disk full, read-only file system, ...).
Messages are escaped to one printable line, so no file name or header string can forge lines or drive the
terminal. SIGTERM and SIGHUP unwind like SIGINT (temp files are removed), then end the process by that signal.
"""

from __future__ import annotations

import os
import signal
import sys
from typing import Any

import click

from prosemc import __version__
from prosemc.errors import ProsemcError
from prosemc.format.errors import UnknownProfileError


class UserError(click.ClickException):
    """A one-line message for a problem with the user's input; exit code 2."""

    exit_code = 2

    def __init__(self, message: str) -> None:
        super().__init__(printable(message))


def printable(text: str) -> str:
    """TEXT with control and other non-printable characters escaped (\\n, \\x1b, \\u202e): one line, inert."""
    return "".join(ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii") for ch in text)


def _one_line_usage(error: click.UsageError) -> UserError:
    command = error.ctx.command_path if error.ctx is not None else "prosemc"
    return UserError(f"{error.format_message().rstrip('.')}; see '{command} --help'")


class ProsemcGroup(click.Group):
    """A click group that turns library, usage and environment errors into one-line `UserError`s."""

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


@click.group(cls=ProsemcGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="prosemc")
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
      prosemc send cam.jpg http://cloud:8000 -q "what is shown?" --deadline 2 --confidence 0.9

    Every FILE argument accepts - for stdin/stdout. Errors exit with code 2 and one line on stderr.
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
