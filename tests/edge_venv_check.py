"""Run by `make test-edge` with the python of a venv holding only `pip install -e '.[edge]'` (no torch).

    python tests/edge_venv_check.py BUNDLE IMAGE EXPECTED.psem OUT.psem

Checks that torch, transformers, rich and constriction are absent, that `prosemc encode --bundle` writes exactly
the bytes the full install wrote (EXPECTED.psem, coded with constriction) using the portable coder, and that a
damaged bundle is refused with one line and exit code 2. Prints one line per check and a pytest-style summary.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path


def main(bundle: Path, image: Path, expected: Path, out: Path) -> int:
    prosemc = [sys.executable, "-m", "prosemc"]
    results: list[tuple[str, bool, str]] = []

    missing = [name for name in ("torch", "transformers", "rich", "constriction") if importlib.util.find_spec(name)]
    results.append(("no torch, transformers, rich or constriction installed", not missing, f"found {missing}"))

    run = subprocess.run([*prosemc, "encode", "--bundle", str(bundle), str(image), "-o", str(out), "--json"],
                         capture_output=True, text=True)
    report = json.loads(run.stdout) if run.returncode == 0 else {}
    results.append(("encode --bundle exits 0", run.returncode == 0, run.stderr.strip()))
    results.append(("portable coder chosen automatically", report.get("runtime", {}).get("coder") == "portable", str(report)))
    same = out.is_file() and out.read_bytes() == expected.read_bytes()
    results.append((".psem byte-identical to the full install's", same, f"{out} differs from {expected}"))

    with tempfile.TemporaryDirectory() as tmp:
        damaged = Path(tmp) / "edge"
        shutil.copytree(bundle, damaged)
        graph = damaged / "encoder.onnx"
        data = bytearray(graph.read_bytes())
        data[len(data) // 2] ^= 1
        graph.write_bytes(bytes(data))
        refused = subprocess.run([*prosemc, "encode", "--bundle", str(damaged), str(image), "-o", f"{tmp}/x.psem"],
                                 capture_output=True, text=True)
        lines = refused.stderr.strip().splitlines()
        ok = refused.returncode == 2 and len(lines) == 1 and "encoder.onnx was changed" in lines[0]
        results.append(("damaged bundle refused in one line, exit 2", ok and not Path(f"{tmp}/x.psem").exists(),
                        refused.stderr.strip()))

    for name, ok, detail in results:
        print(f"{'ok  ' if ok else 'FAIL'} {name}" + ("" if ok else f": {detail}"))
    failed = sum(not ok for _, ok, _ in results)
    print(f"edge venv: {len(results) - failed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(*(Path(arg) for arg in sys.argv[1:5])))
