"""How many CPU threads prosemc's numeric libraries use: torch (intra- and inter-op), onnxruntime, BLAS.

    resolve_threads(n)  n, else $PROSEMC_THREADS, else default_threads() (half the usable cores, at least 1)
    limit_threads(n)    apply it: torch now if loaded (intra- and inter-op), else through the OMP/MKL/OpenBLAS
                        variables it reads when it loads (intra-op, at most one per core; its inter-op
                        pool starts only for code that forks work, which prosemc's models do not);
                        running BLAS pools via threadpoolctl; child processes inherit the variables
    onnx_session_options(n)   onnxruntime.SessionOptions with the same count

Why not the libraries' defaults: torch starts one busy-waiting OpenMP thread per core. With another process
on the machine those threads wait on each other, and on a 2-core box with one other busy process a lite
`encode` took 20x and a SmolLM2 answer 10x longer at 2 threads than at 1 (`prosemc bench speed` measures
1, 2 and the default side by side).
"""

from __future__ import annotations

import contextlib
import os
import sys
from typing import Any

from prosemc.errors import InputError

ENV = "PROSEMC_THREADS"
MAX_DEFAULT_THREADS = 8
# Read by OpenMP (torch's intra-op pool), MKL and OpenBLAS when they load, here and in child processes.
_LIBRARY_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def usable_cores() -> int:
    """CPUs this process may run on (its affinity mask where the OS has one, else the machine's count)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def default_threads(cores: int | None = None) -> int:
    """Half the usable cores (the other half for whatever else runs), at least 1 and at most 8."""
    return max(1, min(MAX_DEFAULT_THREADS, (cores or usable_cores()) // 2))


def resolve_threads(requested: int | None = None) -> int:
    """The thread count to use: `requested`, else $PROSEMC_THREADS, else `default_threads()`."""
    if requested is not None:
        if isinstance(requested, bool) or not isinstance(requested, int) or requested < 1:
            raise InputError(f"the thread count must be a whole number of at least 1, got {requested!r}")
        return requested
    value = os.environ.get(ENV, "").strip()
    if not value:
        return default_threads()
    if not value.isdigit() or int(value) < 1:
        raise InputError(f"{ENV}={value!r} is not a thread count; set it to a whole number such as 1 or 4, or unset it")
    return int(value)


def limit_threads(threads: int | None = None) -> int:
    """Make torch, BLAS and child processes use `resolve_threads(threads)` threads; returns the count."""
    count = resolve_threads(threads)
    os.environ[ENV] = str(count)
    for name in _LIBRARY_VARIABLES:
        os.environ[name] = str(count)
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(count)
        with contextlib.suppress(RuntimeError):  # torch allows this once, before any inter-op work
            torch.set_num_interop_threads(count)
    if "numpy" in sys.modules:  # BLAS read its variable when numpy loaded: set the running pools instead
        with contextlib.suppress(ImportError):
            from threadpoolctl import threadpool_limits

            threadpool_limits(count)
    return count


def onnx_session_options(threads: int | None = None) -> Any:
    """onnxruntime.SessionOptions that run one model on `resolve_threads(threads)` threads, without spinning.

    Spinning workers are onnxruntime's form of torch's busy-waiting: fast on an idle machine, slow on a shared one.
    """
    import onnxruntime

    count = resolve_threads(threads)
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = count
    options.inter_op_num_threads = 1  # one graph at a time: its operators run in sequence
    options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return options
