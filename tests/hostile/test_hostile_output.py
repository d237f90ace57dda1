"""Output files never lose data: special files and symlinks written through or followed (never renamed over), the
input never overwritten, the umask respected, nothing left behind on SIGTERM, long names allowed."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from prosemc import format as psem

HEADER = psem.PsemHeader("lite", (1, 4), {"id": "sr-baseline/1", "model_sha256": None, "params": {}},
                         {"id": "constriction-ans/1"}, layers=3)
FILE = psem.dumps(HEADER, [bytes([i]) * 40 for i in range(3)])
ONE_LAYER = FILE[: next(iter(psem.PsemReader(FILE))).end]  # what `truncate --layers 1` writes


@pytest.fixture()
def source(tmp_path: Path) -> Path:
    path = tmp_path / "x.psem"
    path.write_bytes(FILE)
    return path


def prosemc(args: list[str], cwd: Path, env: dict[str, str], **options) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "prosemc", *args], cwd=cwd, env=env, capture_output=True, timeout=120,
                          **options)


def test_fifo_is_written_through_and_stays_a_fifo(source: Path, tmp_path: Path, cli_env: dict[str, str]):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    received: list[bytes] = []
    reader = threading.Thread(target=lambda: received.append(fifo.read_bytes()), daemon=True)
    reader.start()
    result = prosemc(["truncate", str(source), "-o", str(fifo), "--layers", "1"], tmp_path, cli_env)
    reader.join(timeout=60)
    assert result.returncode == 0, result.stderr
    assert stat.S_ISFIFO(fifo.lstat().st_mode) and received == [ONE_LAYER]


def test_symlink_to_a_device_is_written_through(source: Path, tmp_path: Path, cli_env: dict[str, str]):
    """-o /dev/null must never become a regular file (as root the old rename replaced the system's /dev/null);
    a link to it is the same case without risking the machine's /dev/null when this test meets a broken build."""
    link = tmp_path / "null"
    link.symlink_to("/dev/null")
    result = prosemc(["truncate", str(source), "-o", str(link), "--layers", "1"], tmp_path, cli_env)
    assert result.returncode == 0, result.stderr
    assert link.is_symlink() and stat.S_ISCHR(os.stat("/dev/null").st_mode)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["null", "x.psem"]


def test_symlink_to_a_file_is_followed_and_kept(source: Path, tmp_path: Path, cli_env: dict[str, str]):
    (tmp_path / "data").mkdir()
    target = tmp_path / "data" / "kept.psem"
    target.write_bytes(b"old")
    link = tmp_path / "link.psem"
    link.symlink_to("data/kept.psem")
    result = prosemc(["truncate", str(source), "-o", str(link), "--layers", "1"], tmp_path, cli_env)
    assert result.returncode == 0, result.stderr
    assert link.is_symlink() and target.read_bytes() == ONE_LAYER
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == ["kept.psem"]


def test_dev_stdout_is_written_through(source: Path, tmp_path: Path, cli_env: dict[str, str]):
    """Through a link to /dev/stdout (-o /dev/stdout itself would, on a broken build run as root, replace it)."""
    link = tmp_path / "out"
    link.symlink_to("/dev/stdout")
    result = prosemc(["truncate", str(source), "-o", str(link), "--layers", "1"], tmp_path, cli_env)
    assert result.returncode == 0, result.stderr
    assert result.stdout == ONE_LAYER and link.is_symlink()


@pytest.mark.parametrize("how", ["same path", "hard link", "stdin", "stdout"])
def test_output_that_is_the_input_is_refused(how: str, source: Path, tmp_path: Path, cli_env: dict[str, str]):
    alias = tmp_path / "alias.psem"
    os.link(source, alias)
    args = {"same path": [str(source), "-o", str(source)], "hard link": [str(source), "-o", str(alias)],
            "stdin": ["-", "-o", str(source)], "stdout": [str(source), "-o", "-"]}[how]
    with open(source, "rb") as stdin, open(source, "ab") as appended:  # `>>`: the shell has not emptied it
        result = subprocess.run([sys.executable, "-m", "prosemc", "truncate", *args, "--layers", "1"], cwd=tmp_path,
                                env=cli_env, stdin=stdin, stdout=appended if how == "stdout" else subprocess.PIPE,
                                stderr=subprocess.PIPE, timeout=120)
    assert result.returncode == 2, result.stderr
    assert result.stderr.decode().count("\n") == 1 and "is the input" in result.stderr.decode()
    assert source.read_bytes() == FILE and sorted(p.name for p in tmp_path.iterdir()) == ["alias.psem", "x.psem"]


def test_encode_refuses_to_overwrite_its_image(tmp_path: Path, chelsea: Path, cli_env: dict[str, str]):
    image = tmp_path / "a.jpg"
    image.write_bytes(chelsea.read_bytes())
    result = prosemc(["encode", str(image), "-o", str(image)], tmp_path, cli_env)
    assert result.returncode == 2 and result.stderr.decode().count("\n") == 1
    assert "the output" in result.stderr.decode() and "is the input" in result.stderr.decode()
    assert image.read_bytes() == chelsea.read_bytes()


@pytest.mark.parametrize("mask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_new_outputs_follow_the_umask(mask: int, mode: int, source: Path, tmp_path: Path, cli_env: dict[str, str]):
    out = tmp_path / "out.psem"
    result = prosemc(["truncate", str(source), "-o", str(out), "--layers", "1"], tmp_path, cli_env,
                     preexec_fn=lambda: os.umask(mask))
    assert result.returncode == 0, result.stderr
    assert stat.S_IMODE(out.stat().st_mode) == mode


def test_a_replaced_file_keeps_its_mode(source: Path, tmp_path: Path, cli_env: dict[str, str]):
    out = tmp_path / "out.psem"
    out.write_bytes(b"old")
    out.chmod(0o640)
    result = prosemc(["truncate", str(source), "-o", str(out), "--layers", "1"], tmp_path, cli_env)
    assert result.returncode == 0, result.stderr
    assert stat.S_IMODE(out.stat().st_mode) == 0o640 and out.read_bytes() == ONE_LAYER


def test_an_output_name_of_255_bytes_works(source: Path, tmp_path: Path, cli_env: dict[str, str]):
    name = "n" * 250 + ".psem"  # the temp file beside it used to be 270 bytes: ENAMETOOLONG
    result = prosemc(["truncate", str(source), "-o", name, "--layers", "1"], tmp_path, cli_env)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / name).read_bytes() == ONE_LAYER
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([name, "x.psem"])


def test_sigterm_removes_the_temp_file(tmp_path: Path, cli_env: dict[str, str]):
    """truncate has written layer 1 into its temp file and waits for layer 2 on a stalled pipe when SIGTERM comes."""
    child = subprocess.Popen([sys.executable, "-m", "prosemc", "truncate", "-", "-o", "out.psem", "--layers", "3"],
                             cwd=tmp_path, env=cli_env, stdin=subprocess.PIPE, stderr=subprocess.PIPE)
    assert child.stdin is not None
    child.stdin.write(ONE_LAYER)
    child.stdin.flush()
    deadline = time.monotonic() + 60
    while not any(p.name.endswith(".part") for p in tmp_path.iterdir()):  # the temp file exists: layer 1 is in
        assert time.monotonic() < deadline and child.poll() is None, "no temp file appeared"
        time.sleep(0.05)
    child.send_signal(signal.SIGTERM)
    child.wait(timeout=60)
    child.stdin.close()
    assert child.returncode == -signal.SIGTERM  # ended by the signal itself, after cleaning up
    assert list(tmp_path.iterdir()) == []
    assert child.stderr is not None and b"Traceback" not in child.stderr.read()


def test_encode_creates_no_file_while_the_model_runs(tmp_path: Path, chelsea: Path, cli_env: dict[str, str]):
    """The output opens at the first byte: while the vision encoder runs (seconds) no temp file exists; SIGTERM
    in that time leaves nothing behind."""
    child = subprocess.Popen([sys.executable, "-m", "prosemc", "encode", str(chelsea), "-o", "out.psem"],
                             cwd=tmp_path, env=cli_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    seen: set[str] = set()
    started = time.monotonic()
    while child.poll() is None and time.monotonic() - started < 1.5:  # torch is still importing
        seen.update(p.name for p in tmp_path.iterdir())
        time.sleep(0.01)
    child.send_signal(signal.SIGTERM)
    child.communicate(timeout=120)
    assert not any(name.endswith(".part") for name in seen), seen
    left = [p.name for p in tmp_path.iterdir()]
    assert left in ([], ["out.psem"])  # out.psem only if it finished within 1.5 s


def test_environment_failures_are_one_line(source: Path, tmp_path: Path, cli_env: dict[str, str]):
    """A full disk, a file-size limit, /proc, a closed stdout: exit 2, one line, nothing left behind."""
    (tmp_path / "full").symlink_to("/dev/full")  # (a link: /dev/full itself is not to be risked on a broken build)
    cases = [
        (["-o", "full"], {}, "No space left on device; the disk is full"),
        (["-o", "big.psem"], {"preexec_fn": lambda: __import__("resource").setrlimit(
            __import__("resource").RLIMIT_FSIZE, (100, 100))}, "File too large; the file is over the size limit"),
        (["-o", "/proc/x"], {}, "cannot write /proc/x: "),
        (["-o", "-"], {"stdout": subprocess.DEVNULL, "pass_fds": ()}, None),
    ]
    for output, options, message in cases:
        args = ["truncate", str(source), *output, "--layers", "3"]
        if message is None:  # stdout closed: fd 1 shut before exec
            result = subprocess.run(["sh", "-c", 'exec "$@" >&-', "sh", sys.executable, "-m", "prosemc", *args],
                                    cwd=tmp_path, env=cli_env, capture_output=False, stderr=subprocess.PIPE,
                                    timeout=120)
            message = "standard output is closed"
        else:
            result = prosemc(args, tmp_path, cli_env, **options)
        assert result.returncode == 2, (output, result.stderr)
        assert result.stderr.decode().count("\n") == 1 and message in result.stderr.decode(), result.stderr
        assert sorted(p.name for p in tmp_path.iterdir()) == ["full", "x.psem"]


def test_read_only_file_system_is_one_line(source: Path, tmp_path: Path, cli_env: dict[str, str]):
    """EROFS, from a read-only tmpfs mounted in a private mount namespace (skipped where that is not allowed)."""
    mount = tmp_path / "ro"
    mount.mkdir()
    script = f'mount -t tmpfs -o ro,size=1m none "{mount}" && exec "$@"'
    command = ["unshare", "--mount", "--map-root-user", "sh", "-c", script, "sh", sys.executable, "-m", "prosemc",
               "truncate", str(source), "-o", str(mount / "out.psem"), "--layers", "1"]
    probe = subprocess.run(["unshare", "--mount", "--map-root-user", "sh", "-c", script, "sh", "true"],
                           capture_output=True, timeout=30)
    if probe.returncode != 0:
        pytest.skip(f"cannot mount a read-only tmpfs in a mount namespace here: {probe.stderr.decode().strip()}")
    result = subprocess.run(command, cwd=tmp_path, env=cli_env, capture_output=True, timeout=120)
    assert result.returncode == 2, result.stderr
    assert result.stderr.decode().count("\n") == 1 and "Read-only file system; the file system is read-only" in \
        result.stderr.decode()
