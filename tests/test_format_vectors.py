"""Golden vectors: committed bytes are exactly what the generator makes, and each reads as the manifest says."""

from __future__ import annotations

import hashlib
import io
import json
import runpy
from pathlib import Path

import pytest

from prosemc import format as psem

VECTORS = Path(__file__).resolve().parents[1] / "formats" / "vectors"
MANIFEST = json.loads((VECTORS / "manifest.json").read_text())
NAMES = sorted(MANIFEST["vectors"])
PROFILES = psem.ProfileStore([VECTORS / "profiles"])
PROFILES_ID = next(iter(PROFILES)).hex
SAME_LAYERS = ("extension-chunk.psem", "minor-version-1.7.psem", "cut-mid-layer.psem")


def test_generator_reproduces_committed_vectors_byte_for_byte():
    generator = runpy.run_path(str(VECTORS / "make_vectors.py"))
    generated = generator["build"]()
    assert sorted(generated) == NAMES
    for name, (data, expected) in generated.items():
        assert (VECTORS / name).read_bytes() == data, name
        assert {k: v for k, v in MANIFEST["vectors"][name].items() if k not in ("sha256", "bytes")} == expected
    assert generator["PROFILE_PATH"].read_bytes() == generator["HEADER"].to_json_bytes()


def test_there_are_hostile_vectors_for_every_error_class_in_both_forms():
    def errors(compact: bool) -> set[str]:
        return {v["error"] for name, v in MANIFEST["vectors"].items()
                if "error" in v and name.startswith("attacks/compact-") == compact}

    every = {cls.__name__ for cls in psem.PsemError.__subclasses__()}
    assert errors(compact=False) | {"UnknownProfileError"} == every
    assert errors(compact=True) == every - {"EmptyInputError", "BadMagicError"}  # the forms share the first bytes


@pytest.mark.parametrize("name", NAMES)
def test_vector_reads_as_manifest_says(name: str):
    expected = MANIFEST["vectors"][name]
    data = (VECTORS / name).read_bytes()
    assert hashlib.sha256(data).hexdigest() == expected["sha256"]
    if "error" in expected:
        with pytest.raises(psem.PsemError) as info:
            psem.loads(data, profiles=PROFILES)
        assert type(info.value).__name__ == expected["error"]
        assert "; " in str(info.value)  # every message names the problem and then the fix
        return
    parsed = psem.loads(data, profiles=PROFILES)
    assert len(parsed.layers) == expected["layers"]
    assert parsed.end.status == expected["status"]
    if name.startswith(("multilayer", "compact")) or name in SAME_LAYERS:
        digests = [hashlib.sha256(p).hexdigest() for p in parsed.layers]
        assert digests == MANIFEST["layer_payload_sha256"][: len(digests)]
    if "strict_error" in expected:
        with pytest.raises(psem.TruncatedError, match="2 complete layers, then truncated at byte"):
            psem.loads(data, strict=True, profiles=PROFILES)


@pytest.mark.parametrize("name", [n for n in NAMES if n.startswith("compact") and "cut" not in n])
def test_compact_vector_needs_its_profile_and_expands_to_the_full_vector(name: str):
    data = (VECTORS / name).read_bytes()
    with pytest.raises(psem.UnknownProfileError, match=f"names profile {PROFILES_ID}, which this reader does not know"):
        psem.loads(data)
    full = io.BytesIO()
    result = psem.truncate(data, full, form="full", profiles=PROFILES)
    parsed, expanded = psem.loads(data, profiles=PROFILES), psem.loads(full.getvalue())
    assert result.converted and (expanded.header, expanded.layers) == (parsed.header, parsed.layers)
    if name in ("compact.psem", "compact.prefix2.psem"):
        assert full.getvalue() == (VECTORS / name.replace("compact", "multilayer")).read_bytes()


def test_compact_vector_is_the_full_one_with_an_18_byte_header_and_short_frames():
    full, compact = (VECTORS / "multilayer.psem").read_bytes(), (VECTORS / "compact.psem").read_bytes()
    header_saved = len(psem.loads(full).header.to_json_bytes()) + 20 - 18
    assert len(full) - len(compact) == header_saved + (16 - 5) * 2 + (16 - 6) * 2  # 8 and 16 bytes: 1-byte tags
    assert compact[:6] == b"\x89PSc\x20\x00" and compact[6:14].hex() == PROFILES_ID


def test_compact_patched_vector_carries_what_differs_from_its_profile():
    parsed = psem.loads((VECTORS / "compact-patched.psem").read_bytes(), profiles=PROFILES)
    assert parsed.header.codec_params == {"step": 1.5}
    assert parsed.header.metadata == {"tool": "prosemc-vectors", "image": "chelsea"}
    minor = psem.loads((VECTORS / "compact-minor-version-2.9.psem").read_bytes(), profiles=PROFILES)
    assert minor.header.extra == {"future_key": {"x": 1}}


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
