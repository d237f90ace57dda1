"""Golden vectors: committed bytes are exactly what the generator makes, and each reads as the manifest says."""

from __future__ import annotations

import hashlib
import json
import runpy
from pathlib import Path

import pytest

from prosemc import format as psem

VECTORS = Path(__file__).resolve().parents[1] / "formats" / "vectors"
MANIFEST = json.loads((VECTORS / "manifest.json").read_text())
NAMES = sorted(MANIFEST["vectors"])


def test_generator_reproduces_committed_vectors_byte_for_byte():
    build = runpy.run_path(str(VECTORS / "make_vectors.py"))["build"]
    generated = build()
    assert sorted(generated) == NAMES
    for name, (data, expected) in generated.items():
        assert (VECTORS / name).read_bytes() == data, name
        assert {k: v for k, v in MANIFEST["vectors"][name].items() if k not in ("sha256", "bytes")} == expected


def test_there_are_hostile_vectors_for_every_error_class():
    errors = {v["error"] for v in MANIFEST["vectors"].values() if "error" in v}
    expected = {cls.__name__ for cls in psem.PsemError.__subclasses__()}
    assert errors == expected


@pytest.mark.parametrize("name", NAMES)
def test_vector_reads_as_manifest_says(name: str):
    expected = MANIFEST["vectors"][name]
    data = (VECTORS / name).read_bytes()
    assert hashlib.sha256(data).hexdigest() == expected["sha256"]
    if "error" in expected:
        with pytest.raises(psem.PsemError) as info:
            psem.loads(data)
        assert type(info.value).__name__ == expected["error"]
        assert "; " in str(info.value)  # every message names the problem and then the fix
        return
    parsed = psem.loads(data)
    assert len(parsed.layers) == expected["layers"]
    assert parsed.end.status == expected["status"]
    if name.startswith("multilayer") or name in ("extension-chunk.psem", "minor-version-1.7.psem", "cut-mid-layer.psem"):
        digests = [hashlib.sha256(p).hexdigest() for p in parsed.layers]
        assert digests == MANIFEST["layer_payload_sha256"][: len(digests)]
    if "strict_error" in expected:
        with pytest.raises(psem.TruncatedError, match="2 complete layers, then truncated at byte"):
            psem.loads(data, strict=True)


def test_multilayer_header_fields():
    parsed = psem.loads((VECTORS / "multilayer.psem").read_bytes())
    header = parsed.header
    assert (header.encoder, header.token_shape, header.token_dtype, header.layers) == ("lite", (49, 1280), "float32", 4)
    assert header.codec == {"id": "sr-baseline/1", "model_sha256": None, "params": {"step": 2.0}}
    assert header.entropy == {"id": "constriction-ans/1"}
    assert [len(p) for p in parsed.layers] == [8, 16, 32, 64]


def test_minor_version_keeps_unknown_keys_and_reads_layers():
    parsed = psem.loads((VECTORS / "minor-version-1.7.psem").read_bytes())
    assert parsed.header.extra == {"future_key": {"x": 1}}
    assert len(parsed.layers) == 4


def test_extension_chunk_is_skipped_but_reported():
    parsed = psem.loads((VECTORS / "extension-chunk.psem").read_bytes())
    assert [(c.type, c.payload) for c in parsed.extensions] == [(b"xtRa", b"future extension data")]


def test_schema_file_lists_the_required_fields_the_reader_enforces():
    schema = json.loads((VECTORS.parent / "psem-header.schema.json").read_text())
    assert schema["required"] == ["encoder", "tokens", "codec", "entropy", "layers"]
    assert schema["properties"]["layers"]["maximum"] == psem.DEFAULT_LIMITS.layers
