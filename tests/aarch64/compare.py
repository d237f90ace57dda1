"""Part of `make test-aarch64` (see check.sh): x86 edge vs emulated aarch64 edge on the held-out photos.

Checks (exit 1 if one fails): the numpy codec + portable coder write byte-identical .psem on both machines from the
same tokens; the CLI writes what the library writes; the board's int8 tokens keep min token cosine >= 0.975 vs
torch. Reports (no pass/fail: onnxruntime's int8 kernels round differently on aarch64 and x86) whether whole-edge
.psem files are byte-identical, for the fp32 and the int8 bundle.

    python tests/aarch64/compare.py WORK SYSROOT SITE RESULT.json
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CPUINFO = Path(__file__).resolve().parent / "cpuinfo"
ENCODE_ALL = """
import io, json, sys, time
from pathlib import Path
import numpy, onnxruntime, platform
from prosemc.export.bundle import EdgeBundle
from prosemc.models.base import EdgeTokens
from prosemc.models.images import load_image
from prosemc.pipeline import encode_image
work, side = Path(sys.argv[1]), sys.argv[2]
seconds = []
for kind in ("int8", "fp32"):
    bundle = EdgeBundle.load(work / kind, threads=1)
    out = work / side / kind
    out.mkdir(parents=True, exist_ok=True)
    for photo in sorted((work / "photos").glob("*.png")):
        start = time.perf_counter()
        with open(out / (photo.stem + ".psem"), "wb") as sink:
            report = bundle.encode_image(load_image(photo), sink)
        seconds.append(time.perf_counter() - start)
        numpy.save(out / (photo.stem + ".npy"), bundle.vision.encode_image(load_image(photo)).tokens)
        x86_tokens = work / "x86" / kind / (photo.stem + ".npy")  # the codec alone, on the x86 tokens
        if x86_tokens.is_file():
            fixed = type("Fixed", (), {"model_id": bundle.model_id, "encode_image": lambda self, _: EdgeTokens(numpy.load(x86_tokens))})()
            with open(out / (photo.stem + ".codec.psem"), "wb") as sink:
                encode_image(None, sink, fixed, codec=bundle.codec)
print(json.dumps({"machine": platform.machine(), "python": platform.python_version(), "numpy": numpy.__version__,
                  "onnxruntime": onnxruntime.__version__, "entropy_coder": report.entropy_coder,
                  "encode_s_median": sorted(seconds)[len(seconds) // 2]}))
"""

def emulated(sysroot: Path, site: Path, *args: str) -> subprocess.CompletedProcess:
    """Run the arm64 python3.11 under qemu with the Cortex-A55 cpuinfo, in a private mount namespace."""
    command = (f"mount --bind {CPUINFO} /proc/cpuinfo && exec qemu-aarch64-static -L {sysroot} "
               f"{sysroot}/usr/bin/python3.11 \"$@\"")
    env = {"PYTHONPATH": f"{site}:{ROOT}", "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1", "PYTHONDONTWRITEBYTECODE": "1"}
    return subprocess.run(["unshare", "-m", "sh", "-c", command, "sh", *args], capture_output=True, text=True,
                          env=env, timeout=1800)


def main(work: Path, sysroot: Path, site: Path, result_path: Path) -> int:
    import numpy as np

    from prosemc.cli.bench import heldout_photos
    from prosemc.export.build import export_bundle
    from prosemc.export.parity import lite_top1, parity
    from prosemc.export.sources import edge_source

    photos = work / "photos"
    photos.mkdir(parents=True, exist_ok=True)
    print("exporting the int8 (builtin calibration) and fp32 bundles...", flush=True)
    export_bundle(work / "int8", target="imx95", force=True)
    export_bundle(work / "fp32", target="cpu", force=True)
    names = {}
    for name, image in heldout_photos().items():
        image.save(photos / f"{name.replace(':', '_')}.png")
        names[name.replace(":", "_")] = name
    x86 = subprocess.run([sys.executable, "-c", ENCODE_ALL, str(work), "x86"], capture_output=True, text=True)
    if x86.returncode != 0:
        print(x86.stderr[-3000:], file=sys.stderr)
        return 1
    print("encoding under emulated aarch64 (a few minutes)...", flush=True)
    start = time.perf_counter()
    run = emulated(sysroot, site, "-c", ENCODE_ALL, str(work), "aarch64")
    if run.returncode != 0:
        print(run.stderr[-3000:], file=sys.stderr)
        return 1
    info = json.loads(run.stdout.strip().splitlines()[-1])
    stems = sorted(names)
    first = photos / f"{stems[0]}.png"
    cli = emulated(sysroot, site, "-m", "prosemc", "encode", "--bundle", str(work / "int8"), str(first), "-o",
                   str(work / "cli.psem"), "--threads", "1")
    cli_ok = cli.returncode == 0 and (work / "cli.psem").read_bytes() == (work / "aarch64/int8" / f"{stems[0]}.psem").read_bytes()

    def same(kind: str, suffix: str) -> int:
        return sum((work / "x86" / kind / f"{s}{suffix}").read_bytes() == (work / "aarch64" / kind / f"{s}{suffix}").read_bytes()
                   for s in stems)

    source, top1 = edge_source("lite"), lite_top1()
    reference = [source.tokens(source.recipe.pixels(load_image_file(photos / f"{s}.png"))) for s in stems]
    board = parity([np.load(work / "aarch64/int8" / f"{s}.npy") for s in stems], reference, top1)
    x86_parity = parity([np.load(work / "x86/int8" / f"{s}.npy") for s in stems], reference, top1)
    qemu = subprocess.run(["qemu-aarch64-static", "--version"], capture_output=True, text=True).stdout.splitlines()[0]
    result = {
        "photos": len(stems), "int8_psem_identical": same("int8", ".psem"), "fp32_psem_identical": same("fp32", ".psem"),
        "codec_identical_on_same_tokens": same("int8", ".codec.psem") + same("fp32", ".codec.psem"),
        "codec_checks": 2 * len(stems), "cli_matches_library": cli_ok,
        "int8_parity_aarch64": board, "int8_parity_x86": x86_parity,
        "python": f"Python {info['python']} (Debian arm64)", "numpy": info["numpy"], "onnxruntime": info["onnxruntime"],
        "coder": info["entropy_coder"], "qemu": qemu, "wall_s": round(time.perf_counter() - start, 1),
        "encode_s_median_emulated": round(info["encode_s_median"], 2),
    }
    result["summary"] = (
        f"{qemu}, {result['python']}, numpy {info['numpy']}, onnxruntime {info['onnxruntime']} (manylinux aarch64 "
        f"wheels), Cortex-A55 /proc/cpuinfo, entropy coder {info['entropy_coder']}, {len(stems)} held-out photos. "
        f"Codec + portable coder on the same tokens: {result['codec_identical_on_same_tokens']} of "
        f"{result['codec_checks']} .psem byte-identical to x86. Whole edge: fp32 bundle {result['fp32_psem_identical']} "
        f"of {len(stems)} identical, int8 bundle {result['int8_psem_identical']} of {len(stems)} (onnxruntime's int8 "
        f"kernels round differently on aarch64). int8 parity vs torch fp32 on the emulated board: token cosine mean "
        f"{board['token_cosine_mean']}, min {board['token_cosine_min']}, top-1 {board['top1_agreement']} (x86: "
        f"{x86_parity['token_cosine_mean']}, {x86_parity['token_cosine_min']}, {x86_parity['top1_agreement']}). "
        f"`encode --bundle` CLI = library under emulation: {cli_ok}. Emulated encode {result['encode_s_median_emulated']} s "
        "per photo (emulation speed, not the board's).")
    result_path.write_text(json.dumps(result, indent=1) + "\n")
    print(result["summary"])
    checks = [result["codec_identical_on_same_tokens"] == result["codec_checks"], cli_ok,
              board["token_cosine_min"] >= 0.975]
    print(f"aarch64: {sum(checks)} passed, {len(checks) - sum(checks)} failed")
    return 0 if all(checks) else 1


def load_image_file(path: Path) -> object:
    from prosemc.models.images import load_image

    return load_image(path)


if __name__ == "__main__":
    sys.exit(main(*(Path(arg) for arg in sys.argv[1:5])))
