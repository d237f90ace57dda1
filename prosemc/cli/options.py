"""Options that many commands share, each adopted with one decorator line."""

from __future__ import annotations

from typing import Any, Callable

import click


def _apply_threads(ctx: click.Context, param: click.Parameter, value: int | None) -> int:
    from prosemc.runtime import limit_threads

    return limit_threads(value)


threads_option: Callable[[Any], Any] = click.option(
    "--threads", type=click.IntRange(min=1), default=None, callback=_apply_threads, expose_value=False,
    metavar="N",
    help="CPU threads for torch, onnxruntime and BLAS. Default: $PROSEMC_THREADS, else half the usable cores "
         "(at least 1), which stays fast when other processes share the CPU.",
)


def _apply_verbosity(ctx: click.Context, param: click.Parameter, value: bool) -> bool:
    if value:
        from prosemc.cli.console import set_verbosity

        set_verbosity(ctx, -1 if param.name == "quiet" else 1)
    return value


def verbosity_options() -> list[click.Option]:
    """-q/--quiet and -v/--verbose, which every command and the group itself take (see prosemc.cli.console)."""
    return [
        click.Option(["-q", "--quiet"], is_flag=True, expose_value=False, callback=_apply_verbosity,
                     help="Print only data and errors: no progress, no messages."),
        click.Option(["-v", "--verbose"], is_flag=True, expose_value=False, callback=_apply_verbosity,
                     help="Also print details: timings, models loaded, every item of a batch."),
    ]


def refuse_beside_bundle(ctx: click.Context, *names: str) -> None:
    """Refuse the options `names` (parameter names) when given on the command line beside --bundle, which fixes
    model and codec."""
    from prosemc.errors import InputError

    given = [max(param.opts, key=len) for param in ctx.command.params
             if param.name in names and ctx.get_parameter_source(param.name) == click.core.ParameterSource.COMMANDLINE]
    if given:
        raise InputError(f"{' and '.join(given)} cannot be combined with --bundle, which fixes model and codec; "
                         "export another bundle instead")
