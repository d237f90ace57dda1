"""Shell completion as the README documents it: click's completion scripts, and completing real commands."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def complete(env: dict[str, str], **variables: str) -> str:
    done = subprocess.run([sys.executable, "-m", "prosemc"], capture_output=True, text=True, timeout=60,
                          env={**env, **variables})
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_completion_scripts_for_each_documented_shell(cli_env):
    for shell in ("bash", "zsh", "fish"):
        assert f"_PROSEMC_COMPLETE={shell}_source prosemc" in README
        script = complete(cli_env, _PROSEMC_COMPLETE=f"{shell}_source")
        assert "_PROSEMC_COMPLETE" in script and "prosemc" in script
    assert "complete -o nosort -F _prosemc_completion prosemc" in complete(cli_env, _PROSEMC_COMPLETE="bash_source")


def test_bash_completes_commands_and_options(cli_env):
    words = complete(cli_env, _PROSEMC_COMPLETE="bash_complete", COMP_WORDS="prosemc ca", COMP_CWORD="1")
    assert words.split() == ["plain,cache"]
    options = complete(cli_env, _PROSEMC_COMPLETE="bash_complete", COMP_WORDS="prosemc encode --thr", COMP_CWORD="2")
    assert options.split() == ["plain,--threads"]
