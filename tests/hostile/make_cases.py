"""Regenerate the hostile inputs in tests/hostile/cases/ and cases.json (deterministic; run from anywhere).

    python tests/hostile/make_cases.py

Each file is small and breaks one rule a decoder or the image loader must enforce (every other field valid, CRCs
included), so that only that rule can refuse it; cases.json says which command runs on it, the exit code and the
one stderr line expected. Inputs too large to commit (a gigabyte of layers the codec cannot have, of extension
chunks) are made as streams by `streams()` at test time. Container-level hostile headers live with the format's
golden vectors (formats/vectors/make_vectors.py).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import struct
import zlib
from pathlib import Path
from typing import Any, Iterator

from prosemc.codec.entropy import write_varint, zigzag
from prosemc.format import PsemHeader, dumps
from prosemc.format.spec import CHUNK_FRAME, LAYER_TYPE
from prosemc.format.writer import encode_chunk, encode_header

HERE = Path(__file__).resolve().parent
CASES = HERE / "cases"
MIB = 1 << 20


def png(width: int, height: int, claimed: tuple[int, int] | None = None) -> bytes:
    """An RGB PNG of black pixels; `claimed` rewrites the IHDR size (CRC fixed) without the pixels to match it."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = b"".join(b"\0" + b"\0" * (3 * width) for _ in range(height))
    size = claimed or (width, height)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", *size, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(rows, 9)) + chunk(b"IEND", b""))


def baseline_table(out: bytearray, symbol: int | None = None, count: int = 0) -> None:
    """An sr-baseline/1 frequency table with one symbol (it codes `count` symbols in zero bits), or an empty one."""
    if symbol is None:
        write_varint(0, out)
        write_varint(0, out)
        return
    write_varint(zigzag(symbol), out)
    write_varint(1, out)
    write_varint(count, out)


def zero_bit_bomb(rows: int = 4096, columns: int = 4096, layers: int = 16) -> bytes:
    """sr-baseline/1 layers of one-symbol tables only: ~1 KB that claims every one of N*D symbols in every layer.

    Layer 1 makes every channel peak 3 and every coefficient 1, so all become significant; later layers refine
    all N*D significant values again, each costing zero bits. Decoding it naively took minutes and a gigabyte.
    """
    cells = rows * columns
    payloads = []
    for index in range(layers):
        out = bytearray()
        if index == 0:  # peaks of inactive channels, of active ones, then coefficients by peak 1-3, fresh, older
            groups = [(3, columns), None, None, None, (1, cells), None, None]
        elif index == 1:
            groups = [None, (0, columns), None, None, None, (1, cells), None]
        else:
            groups = [None, (0, columns), None, None, None, None, (1, cells)]
        for group in groups:
            baseline_table(out, *(group or ()))
        payloads.append(bytes(out))
    params = {"steps": [2.0 ** -k for k in range(layers)], "deadzone_rounding": 0.35, "reconstruction_offset": 0.5,
              "clip": [-1e30, 1e30]}
    header = PsemHeader("hostile", (rows, columns), {"id": "sr-baseline/1", "model_sha256": None, "params": params},
                        {"id": "constriction-ans/1"}, layers)
    return dumps(header, payloads)


def raw_header(codec: str, shape: tuple[int, int], layers: int = 1, encoder: str = "lite") -> PsemHeader:
    return PsemHeader(encoder, shape, {"id": codec, "model_sha256": None}, {"id": "none"}, layers)


def build() -> dict[str, tuple[bytes, dict[str, Any]]]:
    """file name -> (bytes, what running prosemc on it must give)."""
    decode = ["decode", "{file}", "-o", "{tmp}/tokens.safetensors"]
    cases: dict[str, tuple[bytes, dict[str, Any]]] = {}

    def case(name: str, data: bytes, command: list[str], stderr: str, problem: str) -> None:
        cases[name] = (data, {"command": command, "exit": 2, "stderr": stderr, "problem": problem})

    case("zero-bit-bomb-sr-baseline.psem", zero_bit_bomb(), decode, r"claims \d+ values of decoding work in \d+ bytes",
         "zero-bit amplification: one-symbol tables claim N*D symbols per layer in ~60 bytes")
    scales = struct.pack("<2f", 3e38, 1.0)
    case("int8-scale-overflows.psem", dumps(raw_header("int8/1", (2, 3)), [scales + bytes([127, 1, 2, 3, 4, 5])]),
         decode, r"invalid token scales .*127 x scale overflows float32", "int8 scales whose 127*s exceed float32")
    case("raw-f32-implausible-tokens.psem",
         dumps(raw_header("raw-f32/1", (1, 1280)), [struct.pack("<f", 3e38) * 1280]),
         ["query", "{file}", "what is shown?"], r"tokens range from 3e\+38 to 3e\+38, far outside the \[0.0, 6.0\]",
         "finite but extreme tokens answered with probability 1.0")
    case("layers-over-codec-count.psem", dumps(raw_header("raw-f32/1", (1, 4), layers=16), [b"\0" * 16]), decode,
         r"declares 16 layers, but its raw-f32/1 parameters describe 1", "more layers than the codec has")
    head, crc = encode_header(raw_header("raw-f32/1", (1, 4)))
    case("layer-over-codec-bound.psem", head + CHUNK_FRAME.pack(LAYER_TYPE, 0, 0, 64 * MIB) + b"\0" * 64, decode,
         r"claims 67108864 bytes for layer 1, more than its codec can produce for these tokens \(16\)",
         "a layer larger than its codec can produce, refused before it is read")
    encode = ["encode", "{file}", "-o", "{tmp}/out.psem"]
    case("aspect-1x20000.png", png(1, 20000), encode, r"1x20000 pixels, an aspect ratio over 32:1",
         "a 161-byte image that took 4.3 GB and 194 s: short side scaled before the crop")
    case("bomb-1x89478485.png", png(1, 1, claimed=(1, 89_478_485)), encode, r"an aspect ratio over 32:1",
         "an image whose size overflowed the resize (OverflowError)")
    jpeg = b"\xff\xd8" + bytes(range(256)) * 4
    case("corrupt-body.jpg", jpeg, encode, r"corrupt-body.jpg is a corrupt JPEG",
         "a corrupt JPEG called 'not an image'")
    escape = raw_header("raw-f32/1", (1, 1), encoder="lite\x1b]0;owned\x07\nstatus    complete: all 99 layers")
    cases["header-terminal-escapes.psem"] = (  # `info` reads it fine: test_info_escapes_header_strings checks how
        dumps(escape, [b"\0" * 4]), {"problem": "info printed header strings raw: an OSC sequence, a forged line"})
    return cases


def streams() -> dict[str, tuple[Iterator[bytes], int]]:
    """Inputs too large to commit: name -> (pieces made lazily while a child reads them, total bytes)."""
    garbage, garbage_crc = encode_header(raw_header("raw-f32/1", (1, 4), layers=16))  # a one-layer codec's header
    layer = b"\x5a" * (64 * MIB)
    flood, flood_crc = encode_header(raw_header("raw-f32/1", (1, 4)))
    flood += encode_chunk(LAYER_TYPE, 0, b"\0" * 16, flood_crc)  # one layer, then 8 x 64 MiB extension chunks
    extension = encode_chunk(b"xtra", 0, b"\xa5" * (64 * MIB), flood_crc)
    chunk = CHUNK_FRAME.size + 64 * MIB + 4
    return {
        "garbage-layers": (itertools.chain([garbage], (encode_chunk(LAYER_TYPE, index, layer, garbage_crc)
                                                       for index in range(16))), len(garbage) + 16 * chunk),
        "extension-flood": (itertools.chain([flood], itertools.repeat(extension, 8)), len(flood) + 8 * chunk),
    }


def main() -> None:
    CASES.mkdir(exist_ok=True)
    manifest = {}
    for name, (data, expected) in sorted(build().items()):
        (CASES / name).write_bytes(data)
        manifest[name] = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data), **expected}
    (HERE / "cases.json").write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
