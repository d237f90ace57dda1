"""Thread settings (prosemc.runtime, --threads) and the progress helper (prosemc.progress)."""

from __future__ import annotations

import io
import json
import subprocess
import sys

import pytest

from prosemc.errors import InputError
from prosemc.progress import Progress, duration
from prosemc.runtime import default_threads, onnx_session_options, resolve_threads


# threads ------------------------------------------------------------------------------------------------------
def test_default_is_half_the_cores_at_least_one_at_most_eight():
    assert [default_threads(n) for n in (1, 2, 3, 4, 6, 16, 64)] == [1, 1, 1, 2, 3, 8, 8]


def test_resolve_prefers_the_argument_then_the_environment(monkeypatch):
    monkeypatch.setenv("PROSEMC_THREADS", "3")
    assert resolve_threads(5) == 5 and resolve_threads() == 3
    monkeypatch.delenv("PROSEMC_THREADS")
    assert resolve_threads() == default_threads()
    for bad in ("0", "two", "-1", "1.5"):
        monkeypatch.setenv("PROSEMC_THREADS", bad)
        with pytest.raises(InputError, match=r"PROSEMC_THREADS=.* is not a thread count; set it to a whole number"):
            resolve_threads()
    with pytest.raises(InputError, match="at least 1"):
        resolve_threads(0)


def test_onnx_session_runs_a_model_on_the_chosen_threads():
    import numpy as np
    import onnx
    import onnxruntime
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "relu",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    options = onnx_session_options(3)
    assert (options.intra_op_num_threads, options.inter_op_num_threads) == (3, 1)
    session = onnxruntime.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    assert session.run(None, {"x": np.array([-1.0, 2.0], np.float32)})[0].tolist() == [0.0, 2.0]
    assert onnx.checker.check_model(model) is None


PROBE = ("import json, sys, torch, prosemc.cli.main_job as m; from prosemc.cli import cli; "
         "sys.argv = ['prosemc', 'decode', '--threads', sys.argv[1], '-', '-o', '-']; "
         "import atexit; atexit.register(lambda: print(json.dumps([torch.get_num_threads(), "
         "torch.get_num_interop_threads()]), file=sys.__stderr__)); cli()")


def test_threads_option_sets_torch_intra_and_inter_op_threads(cli_env):
    """--threads applies to a torch already loaded (intra- and inter-op); the bad .psem on stdin is refused after."""
    env = {**cli_env, "PROSEMC_THREADS": "", "OMP_NUM_THREADS": ""}
    done = subprocess.run([sys.executable, "-c", PROBE, "2"], input=b"", capture_output=True, env=env, timeout=120)
    assert done.returncode == 2
    assert json.loads(done.stderr.decode().strip().splitlines()[-1]) == [2, 2]


def test_threads_reach_torch_loaded_later_and_child_processes(cli_env, tmp_path):
    code = ("import os, sys; from prosemc.runtime import limit_threads; limit_threads(int(sys.argv[1])); "
            "import torch; print(torch.get_num_threads(), os.environ['PROSEMC_THREADS'], os.environ['OMP_NUM_THREADS'])")
    env = {k: v for k, v in cli_env.items() if k not in ("OMP_NUM_THREADS", "PROSEMC_THREADS")}
    done = subprocess.run([sys.executable, "-c", code, "1"], capture_output=True, env=env, text=True, timeout=120)
    assert done.stdout.split() == ["1", "1", "1"], done.stderr  # torch's own default here would be every core


def test_bad_threads_are_refused_by_the_cli(cli_env, tmp_path):
    bad = subprocess.run([sys.executable, "-m", "prosemc", "decode", "x.psem", "-o", "y", "--threads", "0"],
                         capture_output=True, text=True, env=cli_env, timeout=60)
    assert bad.returncode == 2 and "Invalid value for '--threads'" in bad.stderr
    env = {**cli_env, "PROSEMC_THREADS": "many"}
    bad = subprocess.run([sys.executable, "-m", "prosemc", "decode", "x.psem", "-o", "y"], capture_output=True,
                         text=True, env=env, timeout=60)
    assert bad.returncode == 2 and "PROSEMC_THREADS='many' is not a thread count" in bad.stderr
    assert "Traceback" not in bad.stderr


# progress -----------------------------------------------------------------------------------------------------
class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_progress_in_a_file_prints_a_line_every_interval_with_percentage_and_eta():
    clock, out = Clock(), io.StringIO()
    progress = Progress("fit", total=10, stream=out, interval=5.0, clock=clock)
    for step in range(1, 11):
        clock.now += 2.0
        progress.update(step, f"epoch {step}")
    progress.close()
    assert out.getvalue().splitlines() == [
        "fit: 30% (3/10) epoch 3, 6 s, ETA 14 s",
        "fit: 60% (6/10) epoch 6, 12 s, ETA 8 s",
        "fit: 90% (9/10) epoch 9, 18 s, ETA 2 s",
        "fit: done (10/10) in 20 s",
    ]


def test_progress_eta_counts_down_between_updates_and_after_a_restart():
    clock, out = Clock(), io.StringIO()
    progress = Progress("convert", total=100, stream=out, clock=clock)
    clock.now += 10
    progress.update(20, "reading")
    clock.now += 30
    assert progress.line(clock.now) == "convert: 20% (20/100) reading, 40 s, ETA 10 s"
    clock.now += 60
    assert progress.line(clock.now).endswith("ETA 1 s")  # overdue: never a negative or zero ETA
    progress.restart(done=50)
    clock.now += 10
    progress.update(60)
    assert progress.line(clock.now) == "convert: 60% (60/100), 10 s, ETA 40 s"


def test_progress_on_a_terminal_redraws_one_line_and_logs_above_it():
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    clock, out = Clock(), Terminal()
    with Progress("eval", total=2, stream=out, clock=clock) as progress:
        clock.now += 1
        progress.advance(note="chelsea")
        progress.log("a result")
        clock.now += 1
        progress.advance(note="coffee")
    assert out.getvalue() == ("\r\x1b[2Keval: 50% (1/2) chelsea, 1 s, ETA 1 s" "\r\x1b[2K" "a result\n"
                              "\r\x1b[2Keval: 100% (2/2) coffee, 2 s" "\r\x1b[2K" "eval: done (2/2) in 2 s\n")


def test_progress_quiet_or_failed_prints_nothing_more():
    clock, out = Clock(), io.StringIO()
    with pytest.raises(RuntimeError):
        with Progress("x", total=3, stream=out, clock=clock) as progress:
            clock.now += 9
            progress.advance()
            raise RuntimeError("boom")
    assert out.getvalue() == "x: 33% (1/3), 9 s, ETA 18 s\n"
    quiet = io.StringIO()
    with Progress("x", total=3, stream=quiet, quiet=True, clock=clock) as progress:
        progress.advance()
    assert quiet.getvalue() == ""


def test_heartbeat_shows_a_long_step_in_a_log_file():
    out = io.StringIO()
    with Progress("wait", total=4, stream=out, interval=0.2, heartbeat=True) as progress:
        progress.update(1, "long step")
        import time

        time.sleep(0.7)
    lines = out.getvalue().splitlines()
    assert len(lines) >= 3 and all(line.startswith("wait: 25% (1/4) long step") for line in lines[:-1])
    assert lines[-1].startswith("wait: done (4/4) in")


def test_durations_read_well():
    assert [duration(s) for s in (0.4, 42, 185, 3725)] == ["0 s", "42 s", "3 min 05 s", "1 h 02 min"]
