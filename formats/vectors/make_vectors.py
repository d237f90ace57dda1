"""Regenerate the PSEM golden vectors, their profile and manifest.json in this folder (deterministic).

    python formats/vectors/make_vectors.py        # writes *.psem, profiles/vectors.json and manifest.json

Valid files come from the reference writer; hostile files are built byte by byte, each named for the one
rule it breaks, with every other field (CRCs included) correct so that only that rule can reject it. The
compact vectors (compact*.psem, attacks/compact-*.psem) name the profile in profiles/vectors.json.
"""

from __future__ import annotations

import hashlib
import json
import struct
import zlib
from pathlib import Path

from prosemc.format import PsemHeader, dumps, profile_id
from prosemc.format.compact import encode_compact_chunk
from prosemc.format.framing import encode_varint
from prosemc.format.spec import CHUNK_FRAME, COMPACT_HEAD, COMPACT_MAGIC, CRC, LAYER_INDEX, MAGIC, PREAMBLE
from prosemc.format.writer import encode_chunk, encode_header

HERE = Path(__file__).resolve().parent
PROFILE_PATH = HERE / "profiles" / "vectors.json"  # the profile every compact vector but one names

HEADER = PsemHeader(
    encoder="lite",
    token_shape=(49, 1280),
    codec={"id": "sr-baseline/1", "model_sha256": None, "params": {"step": 2.0}},
    entropy={"id": "constriction-ans/1"},
    layers=4,
    metadata={"tool": "prosemc-vectors"},
)
LAYERS = [bytes([i + 1]) * (8 << i) for i in range(4)]  # 8, 16, 32, 64 bytes


def raw_header(body: bytes, major: int = 1, minor: int = 0, flags: int = 0, length: int | None = None) -> tuple[bytes, int]:
    """Preamble + JSON + CRC built by hand (no validation), and the CRC."""
    head = PREAMBLE.pack(MAGIC, major, minor, flags, len(body) if length is None else length) + body
    crc = zlib.crc32(head)
    return head + CRC.pack(crc), crc


def header_json(**changes: object) -> bytes:
    obj = {**HEADER.to_dict(), **changes}
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def build() -> dict[str, tuple[bytes, dict]]:
    """name -> (file bytes, expected outcome)."""
    whole = dumps(HEADER, LAYERS)
    head, crc = encode_header(HEADER)
    chunks = [encode_chunk(b"LAYR", i, p, crc) for i, p in enumerate(LAYERS)]
    valid = {"layers": 4, "status": "complete"}
    out: dict[str, tuple[bytes, dict]] = {
        "minimal.psem": (dumps(PsemHeader("lite", (1, 1), {"id": "raw-f32/1", "model_sha256": None},
                                          {"id": "none"}, layers=1), [b"\0\0\0\0"]),
                         {"layers": 1, "status": "complete"}),
        "multilayer.psem": (whole, valid),
    }
    for k in range(4):
        out[f"multilayer.prefix{k}.psem"] = (head + b"".join(chunks[:k]), {"layers": k, "status": "prefix"})
    ext = encode_chunk(b"xtRa", 0, b"future extension data", crc)
    out["extension-chunk.psem"] = (head + chunks[0] + ext + b"".join(chunks[1:]), valid)
    minor_head, minor_crc = raw_header(header_json(future_key={"x": 1}), minor=7)
    out["minor-version-1.7.psem"] = (
        minor_head + b"".join(encode_chunk(b"LAYR", i, p, minor_crc) for i, p in enumerate(LAYERS)), valid)
    cut = len(head) + len(chunks[0]) + len(chunks[1]) + 10
    out["cut-mid-layer.psem"] = (whole[:cut], {"layers": 2, "status": "truncated", "strict_error": "TruncatedError"})

    def hostile(name: str, data: bytes, error: str) -> None:
        out[f"attacks/{name}.psem"] = (data, {"error": error})

    hostile("empty", b"", "EmptyInputError")
    hostile("bad-magic", b"\x89PNG\r\n\x1a\n" + whole[8:], "BadMagicError")
    hostile("crlf-mangled-magic", whole[:6] + b"\r\n" + whole[7:], "BadMagicError")
    major3, c3 = raw_header(header_json(), major=3)
    hostile("unknown-major", major3 + b"".join(encode_chunk(b"LAYR", i, p, c3) for i, p in enumerate(LAYERS)),
            "UnsupportedVersionError")
    hostile("reserved-preamble-flags", raw_header(header_json(), flags=1)[0], "ReservedBitsError")
    hostile("header-over-cap", raw_header(b"{" + b" " * 65536 + b"}")[0], "HeaderTooLargeError")
    hostile("header-length-2e32-1", PREAMBLE.pack(MAGIC, 1, 0, 0, 2**32 - 1) + b"{}", "HeaderTooLargeError")
    hostile("cut-mid-preamble", whole[:11], "TruncatedError")
    hostile("cut-mid-header", whole[: len(head) - 7], "TruncatedError")
    hostile("bad-header-checksum", whole[:20] + bytes([whole[20] ^ 0x20]) + whole[21:], "ChecksumError")
    body_at = len(head) + len(chunks[0]) + CHUNK_FRAME.size + 3
    hostile("bad-layer-checksum", whole[:body_at] + bytes([whole[body_at] ^ 1]) + whole[body_at + 1:], "ChecksumError")
    hostile("layer-from-other-file", head + chunks[0] + encode_chunk(b"LAYR", 1, LAYERS[1], crc ^ 1), "ChecksumError")
    huge = CHUNK_FRAME.pack(b"LAYR", 0, 0, 2**32 - 1)
    hostile("chunk-length-2e32-1", head + huge + b"\0" * 64, "ChunkTooLargeError")
    hostile("chunk-length-over-cap", head + CHUNK_FRAME.pack(b"LAYR", 0, 0, 64 * 2**20 + 1), "ChunkTooLargeError")
    hostile("duplicate-layer", head + chunks[0] + chunks[1] + chunks[1], "LayerOrderError")
    hostile("out-of-order-layers", head + chunks[0] + chunks[2] + chunks[1], "LayerOrderError")
    hostile("more-layers-than-declared", whole + encode_chunk(b"LAYR", 4, b"extra", crc), "LayerOrderError")
    hostile("unknown-critical-chunk", head + chunks[0] + encode_chunk(b"ZZZZ", 0, b"?", crc), "UnknownChunkError")
    hostile("chunk-type-not-letters", head + encode_chunk(b"LA\x00R", 0, b"x", crc), "BadChunkError")
    hostile("reserved-chunk-flags", head + encode_chunk(b"LAYR", 0, LAYERS[0], crc, flags=0x01), "ReservedBitsError")
    hostile("too-many-extensions", head + encode_chunk(b"meta", 0, b"", crc) * 257, "LimitError")
    for name, body in {
        "header-not-json": b"{not json",
        "header-not-object": b"[1,2]",
        "header-duplicate-key": header_json()[:-1] + b',"layers":3}',
        "header-missing-codec": json.dumps({k: v for k, v in HEADER.to_dict().items() if k != "codec"}).encode(),
        "header-nan": header_json()[:-1] + b',"metadata":{"x":NaN}}',
        "header-layers-over-limit": header_json(layers=65),
        "header-negative-shape": header_json(tokens={"shape": [-1, 4], "dtype": "float32"}),
        "header-not-utf8": b'{"encoder":"\xff"}',
        # CRC-valid headers that once ended in a traceback (ValueError, OverflowError, UnicodeEncodeError):
        "header-integer-4301-digits": header_json()[:-1] + b',"metadata":{"n":' + b"7" * 4301 + b"}}",
        "header-integer-401-digits": header_json().replace(b'"step":2.0', b'"steps":[1' + b"0" * 400 + b"]"),
        "header-float-1e400": header_json().replace(b'"step":2.0', b'"steps":[1e400]'),
        "header-lone-surrogate": header_json().replace(b'"encoder":"lite"', b'"encoder":"lite\\ud800"'),
    }.items():
        hostile(name, raw_header(body)[0], "InvalidHeaderError")
    out.update(build_compact())
    return out


def compact_header(patch: bytes | None = None, *, version: int = 0x20, flags: int = 0, pid: bytes | None = None,
                   length: bytes | None = None) -> tuple[bytes, int]:
    """A compact header built by hand (no validation) naming the vectors' profile, and its CRC."""
    tail = b"" if patch is None else (encode_varint(len(patch)) if length is None else length) + patch
    head = COMPACT_HEAD.pack(COMPACT_MAGIC, version, flags | (patch is not None),
                             pid or profile_id(HEADER.to_json_bytes())) + tail
    crc = zlib.crc32(head)
    return head + CRC.pack(crc), crc


def compact_chunk(frame: bytes, payload: bytes, index: int, crc: int) -> bytes:
    """A compact chunk with a hand-made frame and a correct CRC."""
    return frame + payload + CRC.pack(zlib.crc32(LAYER_INDEX.pack(index), zlib.crc32(payload, zlib.crc32(frame, crc))))


def build_compact() -> dict[str, tuple[bytes, dict]]:
    """The compact-form vectors: valid files, then one hostile file per compact-form rule."""
    head, crc = compact_header()
    chunks = [encode_compact_chunk(b"LAYR", i, p, crc) for i, p in enumerate(LAYERS)]
    whole = head + b"".join(chunks)
    patched = PsemHeader(HEADER.encoder, HEADER.token_shape, {**HEADER.codec, "params": {"step": 1.5}},
                         HEADER.entropy, HEADER.layers, metadata={"tool": "prosemc-vectors", "image": "chelsea"})
    valid = {"layers": 4, "status": "complete"}
    out: dict[str, tuple[bytes, dict]] = {
        "compact.psem": (whole, valid),
        "compact.prefix0.psem": (head, {"layers": 0, "status": "prefix"}),
        "compact.prefix2.psem": (head + b"".join(chunks[:2]), {"layers": 2, "status": "prefix"}),
        "compact-patched.psem": (dumps(patched, LAYERS, profile=HEADER), valid),
        "compact-extension-chunk.psem": (
            head + chunks[0] + encode_compact_chunk(b"xtRa", 0, b"future extension data", crc) + b"".join(chunks[1:]),
            valid),
    }
    minor_head, minor_crc = compact_header(b'{"future_key":{"x":1}}', version=0x29)
    out["compact-minor-version-2.9.psem"] = (
        minor_head + b"".join(encode_compact_chunk(b"LAYR", i, p, minor_crc) for i, p in enumerate(LAYERS)), valid)
    cut = len(head) + len(chunks[0]) + len(chunks[1]) + 10
    out["compact-cut-mid-layer.psem"] = (whole[:cut], {"layers": 2, "status": "truncated",
                                                       "strict_error": "TruncatedError"})

    def hostile(name: str, data: bytes, error: str) -> None:
        out[f"attacks/compact-{name}.psem"] = (data, {"error": error})

    other = PsemHeader("lite", (49, 1280), {"id": "metaae/1", "model_sha256": None}, {"id": "none"}, layers=4)
    unknown_head, unknown_crc = compact_header(pid=profile_id(other.to_json_bytes()))
    hostile("unknown-profile", unknown_head + encode_compact_chunk(b"LAYR", 0, LAYERS[0], unknown_crc),
            "UnknownProfileError")
    hostile("unknown-major", compact_header(version=0x30)[0] + chunks[0], "UnsupportedVersionError")
    hostile("reserved-header-flags", compact_header(flags=0x02)[0], "ReservedBitsError")
    hostile("cut-mid-header", head[:12], "TruncatedError")
    hostile("bad-header-checksum", head[:9] + bytes([head[9] ^ 0x10]) + head[10:] + chunks[0], "ChecksumError")
    hostile("patch-length-over-cap", COMPACT_HEAD.pack(COMPACT_MAGIC, 0x20, 1, head[6:14]) + encode_varint(65537),
            "HeaderTooLargeError")
    hostile("patched-header-over-cap", compact_header(b'{"metadata":{"x":"' + b"y" * 65500 + b'"}}')[0],
            "HeaderTooLargeError")
    hostile("patch-empty", compact_header(b"")[0], "InvalidHeaderError")
    hostile("patch-length-not-minimal", compact_header(b"{}", length=b"\x82\x00")[0], "InvalidHeaderError")
    for name, patch in {
        "patch-not-object": b"[1]",
        "patch-not-json": b"{layers",
        "patch-duplicate-key": b'{"layers":3,"layers":3}',
        "patch-nan": b'{"metadata":{"x":NaN}}',
        "patch-breaks-header": b'{"layers":65}',
        "patch-removes-codec": b'{"codec":null}',
    }.items():
        hostile(name, compact_header(patch)[0], "InvalidHeaderError")
    body_at = len(head) + len(chunks[0]) + 2 + 3
    hostile("bad-layer-checksum", whole[:body_at] + bytes([whole[body_at] ^ 1]) + whole[body_at + 1:], "ChecksumError")
    hostile("layer-from-other-file", head + chunks[0] + encode_compact_chunk(b"LAYR", 1, LAYERS[1], crc ^ 1),
            "ChecksumError")
    hostile("duplicate-layer", head + chunks[0] + chunks[1] + chunks[1], "LayerOrderError")
    hostile("out-of-order-layers", head + chunks[0] + chunks[2] + chunks[1], "LayerOrderError")
    hostile("more-layers-than-declared", whole + encode_compact_chunk(b"LAYR", 4, b"extra", crc), "LayerOrderError")
    hostile("chunk-length-over-cap", head + encode_varint((64 * 2**20 + 1) << 2) + b"\0" * 64, "ChunkTooLargeError")
    hostile("chunk-length-runs-on", head + b"\xff" * 5 + b"\0" * 64, "ChunkTooLargeError")
    hostile("chunk-length-not-minimal", head + compact_chunk(bytes([8 << 2 | 0x80, 0]), LAYERS[0], 0, crc),
            "BadChunkError")
    hostile("reserved-chunk-kind", head + compact_chunk(encode_varint(8 << 2 | 2), LAYERS[0], 0, crc),
            "ReservedBitsError")
    hostile("chunk-type-not-letters", head + compact_chunk(encode_varint(1 << 2 | 1) + b"LA\x00R", b"x", 0, crc),
            "BadChunkError")
    hostile("typed-layer-chunk", head + compact_chunk(encode_varint(8 << 2 | 1) + b"LAYR", LAYERS[0], 0, crc),
            "BadChunkError")
    hostile("unknown-critical-chunk", head + chunks[0] + encode_compact_chunk(b"ZZZZ", 0, b"?", crc),
            "UnknownChunkError")
    hostile("too-many-extensions", head + encode_compact_chunk(b"meta", 0, b"", crc) * 257, "LimitError")
    return out


def main() -> None:
    manifest = {}
    for name, (data, expected) in sorted(build().items()):
        path = HERE / name
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(data)
        manifest[name] = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data), **expected}
    manifest_text = json.dumps({"layer_payload_sha256": [hashlib.sha256(p).hexdigest() for p in LAYERS],
                                "vectors": manifest}, indent=1, sort_keys=True)
    (HERE / "manifest.json").write_text(manifest_text + "\n")
    PROFILE_PATH.parent.mkdir(exist_ok=True)
    PROFILE_PATH.write_bytes(HEADER.to_json_bytes())


if __name__ == "__main__":
    main()
