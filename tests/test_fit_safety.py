"""`prosemc fit` checks every output path before any work, and its --help states the real defaults."""

from __future__ import annotations

import subprocess
import sys

from click.testing import CliRunner


def fit(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "prosemc", "fit", "--images", "builtin", *args], capture_output=True,
                          text=True, env=env, timeout=120)


def test_unwritable_outputs_are_refused_before_any_work(tmp_path, cli_env):
    env = {**cli_env, "PROSEMC_CACHE": str(tmp_path / "cache")}
    missing = fit(env, "-o", str(tmp_path / "no-such-folder" / "w.safetensors"))
    assert missing.returncode == 2 and "Traceback" not in missing.stderr
    assert f"the folder {tmp_path / 'no-such-folder'} of -o" in missing.stderr and "does not exist" in missing.stderr
    folder = fit(env, "-o", str(tmp_path))
    assert folder.returncode == 2 and "is a directory" in folder.stderr
    (tmp_path / "a-file").write_text("x")
    cache_file = fit(env, "-o", str(tmp_path / "w.safetensors"), "--cache-dir", str(tmp_path / "a-file" / "tokens"))
    assert cache_file.returncode == 2 and "Traceback" not in cache_file.stderr
    assert f"cannot write into {tmp_path / 'a-file' / 'tokens'}: Not a directory" in cache_file.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file"]  # nothing written, no token cache started


def test_help_states_the_training_defaults():
    from prosemc.cli import cli
    from prosemc.training.model import MetaAEConfig

    text = CliRunner().invoke(cli, ["fit", "--help"]).output
    config = MetaAEConfig()
    assert f"(default {config.epochs})" in text and f"(default {config.views})" in text
    assert "-o metaae-lite.safetensors" in text and "prosemc/data" not in text
