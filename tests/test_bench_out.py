"""Benchmarks write where --out says (default: a new folder in the current directory) and measure a child's
peak memory without the benchmark's own."""

from __future__ import annotations

import json
import subprocess
import sys

from prosemc.bench import container
from prosemc.bench.process import peak_mib, run_module


def test_bench_writes_a_folder_named_for_the_run_in_the_current_directory(tmp_path, cli_env):
    done = subprocess.run([sys.executable, "-m", "prosemc", "bench", "container"], cwd=tmp_path, capture_output=True,
                          text=True, env=cli_env, timeout=300)
    assert done.returncode == 0, done.stderr
    [folder] = list(tmp_path.iterdir())
    assert folder.name.startswith("prosemc-bench-container-") and sorted(p.name for p in folder.iterdir()) == [
        "container.json", "container.md"]
    results = json.loads((folder / "container.json").read_text())
    assert results["file_bytes"] > 10_000_000 and 5 < results["info_peak_rss_mib"] < 200
    assert "prosemc threads" in results["machine"]
    steps = container.STEPS  # 21 read rounds, 5 + 5 info processes, 2 small-file profiles
    assert f"bench container: done ({steps}/{steps}) in" in done.stderr
    assert f"wrote {folder.name}/container.json" in done.stderr


def test_bench_refuses_an_unusable_out_before_measuring(tmp_path, cli_env):
    target = tmp_path / "a-file"
    target.write_text("x")
    done = subprocess.run([sys.executable, "-m", "prosemc", "bench", "speed", "--out", str(target / "sub")],
                          capture_output=True, text=True, env=cli_env, timeout=120)
    assert done.returncode == 2 and f"cannot write into {target / 'sub'}: Not a directory" in done.stderr
    assert "bench speed:" not in done.stderr  # nothing was measured


def test_child_peak_memory_excludes_the_parent():
    ballast = bytearray(300 << 20)
    ballast[:: 4096] = b"\1" * len(ballast[:: 4096])  # this process now holds 300 MiB
    run = run_module(["prosemc", "--version"])
    assert run.returncode == 0 and run.peak_rss_mib is not None and 5 < run.peak_rss_mib < 100
    import resource

    assert resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024 > 300  # what wait4 would have said
    assert peak_mib([run]) == round(run.peak_rss_mib, 1) and peak_mib([]) is None
