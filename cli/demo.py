"""`make demo`: the main job on a bundled photo through the real CLI — encode, inspect, query — with timings.

    python cli/demo.py [IMAGE] [QUESTION]
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def prosemc(*args: str) -> tuple[dict, float]:
    """Run `prosemc ARGS --json` as a fresh process; its JSON report and wall seconds."""
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "prosemc", *args, "--json"], capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"demo failed: prosemc {' '.join(args)}\n{done.stderr}")
    return json.loads(done.stdout), seconds


def main() -> None:
    image = sys.argv[1] if len(sys.argv) > 1 else str(ROOT / "examples" / "chelsea.jpg")
    question = sys.argv[2] if len(sys.argv) > 2 else "What is shown in the image?"
    with tempfile.TemporaryDirectory() as tmp:
        psem = str(Path(tmp) / "demo.psem")
        encoded, encode_s = prosemc("encode", image, "-o", psem)
        info, info_s = prosemc("info", psem)
        answer, query_s = prosemc("query", psem, question)
        layer1, layer1_s = prosemc("query", psem, question, "--layers", "1")
    n, d = encoded["tokens"]["shape"]
    raw = 4 * n * d
    print(f"image     {image}")
    print(f"tokens    {n} x {d} float32 = {raw:,} bytes uncompressed")
    print(f"codec     {encoded['codec']['id']} (--codec {encoded['codec']['name']})")
    print("bytes     header {}, layers {} -> {} in all ({:.0f}x smaller than raw tokens)".format(
        info["header_bytes"], ", ".join(str(l["bytes"]) for l in info["layers"]), info["bytes"],
        raw / info["bytes"]))
    print("cumulative " + ", ".join(f"L{l['index']}: {l['cumulative_bytes']} B" for l in info["layers"]))
    print(f"question  {question}")
    print(f"answer    {answer['answer']}")
    print("labels    " + ", ".join(f"{l['label']} {l['probability']:.0%}" for l in answer["labels"] or []))
    print(f"layer 1   ({layer1['bytes']} B) labels: "
          + ", ".join(f"{l['label']} {l['probability']:.0%}" for l in (layer1["labels"] or [])[:3]))
    t = encoded["timings_ms"]
    print(f"time      encode {encode_s:.2f} s (process; image {t['load_image']:.0f} ms, vision encoder "
          f"{t['vision_encoder']:.0f} ms incl. model load, codec {t['codec']:.1f} ms)")
    print(f"          info {info_s:.2f} s, query {query_s:.2f} s (process; decode "
          f"{answer['timings_ms']['read_decode']:.0f} ms, labels + LLM {answer['timings_ms']['answer']:.0f} ms), "
          f"query from layer 1 {layer1_s:.2f} s")
    link = 1e6 / 8
    print(f"1 Mbps    all layers {info['bytes'] / link * 1e3:.0f} ms, layer 1 "
          f"{layer1['bytes'] / link * 1e3:.0f} ms (raw tokens {raw / link * 1e3:.0f} ms)")


if __name__ == "__main__":
    main()
