"""The `prosemc` command line: one click group; commands are thin and import heavy modules lazily.

Library errors (`ProsemcError`) become one line on stderr and exit code 2; no tracebacks for user mistakes.
"""

from __future__ import annotations

import sys

import click

from prosemc import __version__
from prosemc.errors import ProsemcError
from prosemc.format.errors import UnknownProfileError


class UserError(click.ClickException):
    """A one-line message for a problem with the user's input; exit code 2."""

    exit_code = 2


class ProsemcGroup(click.Group):
    """A click group that converts library errors into `UserError` at the CLI boundary."""

    def invoke(self, ctx: click.Context):  # type: ignore[override]
        try:
            return super().invoke(ctx)
        except UnknownProfileError as exc:
            from prosemc.cli.profiles import unknown_profile_message

            raise UserError(unknown_profile_message(exc.profile_id.hex())) from None
        except ProsemcError as exc:
            raise UserError(str(exc)) from None
        except BrokenPipeError:
            sys.stderr.close()  # the reader went away (e.g. `| head`): stop quietly, as cat does
            ctx.exit(1)


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

    Every FILE argument accepts - for stdin/stdout. Errors exit with code 2 and one line on stderr.
    """


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="prosemc")


from prosemc.cli import bench, container, evaluate, export, fit, main_job, models, profiles  # noqa: E402,F401  (commands)
