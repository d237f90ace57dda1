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
