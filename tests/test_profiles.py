"""Profiles: the built-in ones match the code, which header parts a profile keeps, and where profiles come from."""

from __future__ import annotations

import json

import pytest

from prosemc import format as psem
from prosemc.errors import InputError
from prosemc.profiles import builtin_folder, builtin_profiles, default_store, load_profile, profile_of, source_label

SHA = "4aeb230666d2d5878bc6dab16827b731b06f4fd89fabe7a7112ce80f1e814bbe"
BASELINE = psem.PsemHeader(
    "lite", (49, 1280),
    {"id": "sr-baseline/1", "model_sha256": None, "params": {"clip": [0.0, 6.0], "deadzone_rounding": 0.35, "reconstruction_offset": 0.5,
                                       "steps": [5.24, 2.62, 1.31, 0.655, 0.3275]}},
    {"id": "constriction-ans/1"}, layers=5, metadata={"info": {"rows": 2}})


def test_packaged_profiles_are_what_the_code_derives_in_canonical_json():
    derived = builtin_profiles()
    files = sorted(builtin_folder().glob("*.json"))
    assert sorted(p.stem for p in files) == sorted(derived), "run: python -m prosemc.profiles"
    for path in files:
        assert path.read_bytes() == derived[path.stem].to_json_bytes(), "run: python -m prosemc.profiles"
    metaae = derived["lite-metaae"]
    assert metaae.codec == {"id": "metaae/1", "model_sha256": SHA, "params": {"layers": 6}} and metaae.layers == 6


def test_profile_of_drops_metadata_and_the_codecs_per_image_params_only():
    profile = profile_of(BASELINE)
    assert profile.metadata == {} and profile.codec_params == {"deadzone_rounding": 0.35, "reconstruction_offset": 0.5}
    assert (profile.encoder, profile.token_shape, profile.layers, profile.entropy) == ("lite", (49, 1280), 5,
                                                                                        BASELINE.entropy)
    assert psem.Profile.of(profile).hex == default_store().find("lite-baseline").hex
    metaae = psem.PsemHeader("lite", (49, 1280), {"id": "metaae/1", "model_sha256": SHA, "params": {"layers": 6}},
                             {"id": "constriction-ans/1"}, layers=6)
    assert profile_of(metaae) == metaae  # nothing per image: the whole header is the profile, the patch is empty
    assert psem.header_size(metaae, profile_of(metaae)) == 18
    unknown_codec = psem.PsemHeader("x", (1, 1), {"id": "new/9", "params": {"steps": 1}}, {"id": "none"}, layers=1)
    assert profile_of(unknown_codec).codec_params == {"steps": 1}


def test_baseline_compact_header_carries_only_the_per_image_params_and_metadata():
    compact = psem.dumps(BASELINE, [], profile=profile_of(BASELINE))
    patch = compact[15:-4]
    assert compact[5] == 1 and json.loads(patch) == {"codec": {"params": {"clip": [0.0, 6.0],
                                                                          "steps": [5.24, 2.62, 1.31, 0.655, 0.3275]}},
                                                     "metadata": {"info": {"rows": 2}}}
    assert len(compact) == psem.header_size(BASELINE, profile_of(BASELINE)) < psem.header_size(BASELINE) - 130
    assert psem.loads(compact, profiles=default_store()).header == BASELINE


def test_compact_chunk_sizes_by_payload_length():
    assert [psem.chunk_size(n, compact=True) - n for n in (0, 31, 32, 4095, 4096, 2**19)] == [5, 5, 6, 6, 7, 8]
    assert psem.chunk_size(340) - 340 == 16
    assert psem.layers_within(18, [330, 622], max_bytes=384) == 1
    assert psem.layers_within(18, [330, 622], max_bytes=347) == 0
    assert str(psem.PrefixBudget(18, max_bytes=347).too_small(330)) == (
        "a budget of 347 bytes holds no layer: the header and layer 1 need 348 bytes; raise the budget to at least 348")


def test_store_reads_user_files_lazily_names_a_bad_one_and_ids_any_json_spelling(tmp_path, monkeypatch):
    monkeypatch.setenv("PROSEMC_PROFILES", str(tmp_path))
    (tmp_path / "pretty.json").write_text(json.dumps(BASELINE.to_dict(), indent=2))
    store = default_store()
    pretty = store.find("pretty")
    assert pretty is not None and pretty.id == psem.Profile.of(BASELINE).id and source_label(pretty).endswith("pretty.json")
    assert store.find(pretty.hex) is pretty and store.get(pretty.id) is pretty
    assert source_label(store.find("lite-metaae")) == "built-in"
    (tmp_path / "broken.json").write_text('{"encoder": "lite"')
    broken = default_store()  # nothing is read until a profile is looked up
    with pytest.raises(psem.InvalidHeaderError, match=r"profile file .*broken.json is not a valid .psem header; "
                                                      r"fix or remove it \(invalid .psem header: not JSON"):
        broken.get(b"\0" * 8)


def test_load_profile_from_a_full_file_a_name_or_refuses_a_compact_file(tmp_path):
    full = tmp_path / "b.psem"
    full.write_bytes(psem.dumps(BASELINE, []))
    assert load_profile(str(full), default_store()).header == profile_of(BASELINE)
    assert load_profile("lite-metaae", default_store()).hex == "6094ba00f9a244a6"
    compact = tmp_path / "c.psem"
    compact.write_bytes(psem.dumps(BASELINE, [], profile=profile_of(BASELINE)))
    with pytest.raises(InputError, match="is a compact .psem, which names a profile instead of holding one"):
        load_profile(str(compact), default_store())
    with pytest.raises(InputError, match="no profile file and no known profile named 'nothing'"):
        load_profile("nothing", default_store())


def test_a_header_a_merge_patch_cannot_carry_is_refused_by_the_writer():
    with_null = psem.PsemHeader("lite", (1, 1), {"id": "raw-f32/1", "model_sha256": None}, {"id": "none"}, layers=1,
                               metadata={"x": None})
    with pytest.raises(psem.InvalidHeaderError, match="a JSON merge patch cannot carry"):
        psem.dumps(with_null, [], profile=profile_of(with_null))
    assert psem.loads(psem.dumps(with_null, [])).header == with_null  # the full form still writes it
