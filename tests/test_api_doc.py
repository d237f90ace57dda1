"""docs/api.md's code blocks run as written (in one namespace, from the repository root), and print what they say."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_api_page_examples_run(monkeypatch):
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "docs" / "api.md").read_text(), flags=re.S)
    assert len(blocks) == 5
    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("PROSEMC_THREADS", "1")
    namespace: dict = {}
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        for block in blocks:
            exec(compile(block, "docs/api.md", "exec"), namespace)  # noqa: S102 - our own documentation
    lines = printed.getvalue().splitlines()
    written, total, _ = lines[0].split(" ", 2)
    assert namespace["report"].bytes_written == int(total) <= 2000 and int(written) >= 1
    assert lines[1] == "(49, 1280) 2 prefix"  # max_layers=2 of the layers that fit 2000 bytes
    assert namespace["answer"].labels[0][0] in {"tabby cat", "tiger cat", "Egyptian Mau"}
    assert lines[3].startswith("sr-baseline/1 [")
    assert namespace["coarse"].shape == (49, 1280)
    assert lines[4] == "6094ba00f9a244a6 18 348" and lines[5] == "1"  # lite layer 1 in 348 bytes, compact
