"""The converted-model cache under concurrency and damage, and one line on stderr for everything a user can cause."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from prosemc import format as psem
from prosemc.codec import make_codec
from prosemc.models.cache_builds import MARKER, DamagedCacheError, build_once, stamp, verify
from prosemc.models.llm import GGUF_NAME, converted_dir

BUILDER = textwrap.dedent("""
    import os, sys, time
    from pathlib import Path
    from prosemc.models.cache_builds import build_once

    target, log = Path(sys.argv[1]), Path(sys.argv[2])
    def build(folder):
        with open(log, "a") as stream:
            stream.write(f"{os.getpid()}\\n")
        time.sleep(1.5)  # a slow conversion: the others arrive while it runs
        (folder / "weights.bin").write_bytes(bytes(range(256)) * 4096)
    os.umask(int(sys.argv[3], 8))
    print(build_once(target, build, what="converting the test model", say=lambda m: print(m, file=sys.stderr)))
""")


def start_builders(count: int, target: Path, log: Path, umask: str = "022") -> list[subprocess.Popen]:
    return [subprocess.Popen([sys.executable, "-c", BUILDER, str(target), str(log), umask], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE) for _ in range(count)]


def test_one_process_converts_the_others_wait_with_a_message(tmp_path: Path):
    """8 cold `query` processes ran 8 conversions at once (~1.2 GB each) and none answered within 15 minutes."""
    target, log = tmp_path / "cache" / "model-v1", tmp_path / "builds.log"
    children = start_builders(4, target, log)
    results = [child.communicate(timeout=120) for child in children]
    assert all(child.returncode == 0 for child in children), results
    assert len(log.read_text().split()) == 1  # one build
    assert {out.decode().strip() for out, _ in results} == {str(target)}
    waited = [err.decode() for _, err in results if err]
    assert waited and all(text == "prosemc: waiting for another prosemc process to finish converting the test model\n"
                          for text in waited)
    verify(target)
    assert sorted(p.name for p in target.parent.iterdir()) == ["model-v1"]  # no scratch, no lock file left


def test_a_build_follows_the_umask(tmp_path: Path):
    """Cached files were 0600 and folders 0700 whatever the umask (temp folders and some writers make them private)."""
    target, log = tmp_path / "cache" / "model-v1", tmp_path / "builds.log"
    child, = start_builders(1, target, log, umask="002")
    child.communicate(timeout=120)
    assert stat.S_IMODE(target.stat().st_mode) == 0o775
    assert stat.S_IMODE((target / "weights.bin").stat().st_mode) == 0o664


def test_a_damaged_build_is_rebuilt_once(tmp_path: Path):
    """A cache that no longer matches its checksums heals itself instead of saying `delete that folder` for ever."""
    target, builds = tmp_path / "model-v1", []

    def build(folder: Path) -> None:
        builds.append(folder)
        (folder / "weights.bin").write_bytes(b"\x01" * 4096)

    messages: list[str] = []
    build_once(target, build, what="building", say=messages.append)
    first = stamp(target)
    with open(target / "weights.bin", "r+b") as stream:  # NaN over the weights, sizes unchanged
        stream.write(b"\x00\x00\xc0\x7f" * 8)
    with pytest.raises(DamagedCacheError, match=r"weights.bin does not match its checksum"):
        verify(target)
    build_once(target, build, what="building", say=messages.append, replace=first)
    verify(target)
    second = stamp(target)
    assert second != first and len(builds) == 2
    build_once(target, build, what="building", say=messages.append, replace=first)  # a second process that saw it
    assert stamp(target) == second and len(builds) == 2 and messages == []
    (target / MARKER).unlink()  # a folder without its marker is no build: built again
    build_once(target, build, what="building", say=messages.append)
    assert len(builds) == 3 and stamp(target) not in (None, second)


def test_a_cache_root_that_is_a_file_is_one_line(tmp_path: Path, cli_env: dict[str, str]):
    """PROSEMC_CACHE naming a regular file ended in a FileExistsError traceback."""
    rng = np.random.default_rng(3)
    tokens = np.clip(rng.standard_normal((49, 1280)) * 2, 0, 6).astype(np.float32)
    codec = make_codec("raw-f16")
    header = psem.PsemHeader("lite", (49, 1280), codec.describe()["codec"], codec.describe()["entropy"], 1)
    (tmp_path / "x.psem").write_bytes(psem.dumps(header, codec.encode(tokens).layers))
    blocker = tmp_path / "cache"
    blocker.write_text("not a folder")
    result = subprocess.run([sys.executable, "-m", "prosemc", "query", "x.psem", "what is shown?"], cwd=tmp_path,
                            env={**cli_env, "PROSEMC_CACHE": str(blocker)}, capture_output=True, timeout=300)
    assert result.returncode == 2, result.stderr
    assert result.stderr.decode().splitlines() == [
        f"prosemc: error: cannot use the cache folder {blocker} (File exists); point PROSEMC_CACHE at a writable folder"]


@pytest.fixture(scope="module")
def own_cache(tmp_path_factory) -> Path:
    """A cache of this module's own: the conversion below must start from nothing, whatever other tests (or
    other xdist workers) did to the run's shared cache."""
    return tmp_path_factory.mktemp("own-cache")


@pytest.fixture(scope="module")
def conversion_stderr(cli_env: dict[str, str], own_cache: Path) -> str:
    """SmolLM2 converted into an empty cache by a child whose stderr is a pipe, not a terminal: its stderr."""
    result = subprocess.run([sys.executable, "-c", "from prosemc.models.llm import SmolLM2; SmolLM2.load()"],
                            env={**cli_env, "PROSEMC_CACHE": str(own_cache)}, capture_output=True, timeout=1200)
    assert result.returncode == 0, result.stderr
    return result.stderr.decode()


def test_conversion_progress_off_a_terminal_is_whole_lines(conversion_stderr: str, own_cache: Path):
    """The GGUF conversion drew a tqdm bar of \\r-redrawn lines and a wrapped message into logs; off a terminal it
    now writes whole `prosemc:` lines only (a progress line every few seconds, as prosemc.progress does)."""
    lines = conversion_stderr.splitlines()
    assert lines[0] == f"prosemc: converting SmolLM2-135M-Instruct ({GGUF_NAME}) into {converted_dir(own_cache)}, once"
    assert all(line.startswith("prosemc: ") for line in lines) and "\r" not in conversion_stderr
    assert "\x1b" not in conversion_stderr and "it/s" not in conversion_stderr  # no tqdm bar, no terminal codes


def test_the_converted_cache_is_a_verified_build_with_the_umask(conversion_stderr: str, own_cache: Path):
    folder = converted_dir(own_cache)
    verify(folder)
    files = json.loads((folder / MARKER).read_text())["files"]
    assert "model.safetensors" in files and files["model.safetensors"][0] > 100 << 20
    assert stat.S_IMODE((folder / "model.safetensors").stat().st_mode) == 0o666 & ~_umask()


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@pytest.mark.parametrize("args, message", [
    (["truncate", "x.psem", "--layers", "1"], "prosemc: error: Missing option '-o' / '--output'; see 'prosemc truncate --help'"),
    (["--bogus"], "prosemc: error: No such option '--bogus'. Did you mean '--verbose'? See 'prosemc --help'"),
    (["encode"], "prosemc: error: give an IMAGE (or - for stdin), or --from LIST; see 'prosemc encode --help'"),
    (["info", "a\nb.psem"], r"prosemc: error: cannot read a\nb.psem: No such file or directory; check the path"),
    (["query", "x.psem", "q", "--read-timeout", "-1"], "prosemc: error: Invalid value for '--read-timeout': -1.0 is not in the "
                                                       "range x>=0; see 'prosemc query --help'"),
    (["nope"], "prosemc: error: No such command 'nope'; see 'prosemc --help'"),
])
def test_usage_errors_and_odd_names_are_one_line(args: list[str], message: str, tmp_path: Path,
                                                 cli_env: dict[str, str]):
    result = subprocess.run([sys.executable, "-m", "prosemc", *args], cwd=tmp_path, env=cli_env, capture_output=True,
                            timeout=60)
    assert result.returncode == 2
    assert result.stderr.decode().splitlines() == [message]
