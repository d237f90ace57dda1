"""Many images or files in one process: default output names, --out-dir, --from lists, per-item failures, exit codes,
query over several files and JSONL pairs; and the conventions every command shares (-q, -v, messages, --version)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from prosemc.cli import cli

CAT_LABELS = {"tabby cat", "tiger cat", "Persian cat", "Siamese cat", "Egyptian Mau", "lynx"}


def invoke(*args: str, input: bytes | str | None = None):
    return CliRunner().invoke(cli, list(args), input=input)


@pytest.fixture(scope="module")
def photos(tmp_path_factory, chelsea, coffee) -> Path:
    """A folder with two photos and a text file that is not an image."""
    folder = tmp_path_factory.mktemp("photos")
    shutil.copy(chelsea, folder / "cat.jpg")
    shutil.copy(coffee, folder / "cup.jpg")
    (folder / "notes.jpg").write_text("not an image\n")
    return folder


@pytest.fixture(scope="module")
def batch(photos, tmp_path_factory, valid_report) -> tuple[Path, dict, object]:
    """cat, notes (fails), cup encoded in one call into an out dir, with -v."""
    out = tmp_path_factory.mktemp("out")
    result = invoke("-v", "encode", *(str(photos / n) for n in ("cat.jpg", "notes.jpg", "cup.jpg")), "--out-dir",
                    str(out), "--json")
    return out, valid_report(result.stdout, "encode"), result


def test_a_batch_writes_every_good_image_and_reports_the_bad_one_with_exit_code_3(batch, photos):
    out, report, result = batch
    assert result.exit_code == 3, result.output
    assert sorted(p.name for p in out.iterdir()) == ["cat.psem", "cup.psem"]
    assert (report["succeeded"], report["failed"]) == (2, 1)
    cat, notes, cup = report["results"]
    assert (cat["input"], cat["output"]) == (str(photos / "cat.jpg"), str(out / "cat.psem"))
    assert notes == {"input": str(photos / "notes.jpg"), "error": f"{photos / 'notes.jpg'} is not an image "
                     "(unrecognised data starting b'not an image'); pass a JPEG, PNG, WebP, BMP or GIF file"}
    assert report["bytes"] == cat["bytes"] + cup["bytes"] == sum(p.stat().st_size for p in out.iterdir())
    err = result.stderr.splitlines()
    assert f"prosemc: error: {notes['error']}" in err
    assert err[-1] == f"prosemc: error: 1 of 3 images failed ({photos / 'notes.jpg'}); the others succeeded"
    assert err[-2].startswith(f"prosemc: encoded 2 of 3 images into {out}, {report['bytes']} bytes, in ")
    assert sum("model lite loaded" in line for line in err) == 1  # -v: the model loaded once for the batch
    assert sum(line.startswith(f"prosemc: {out / 'cat.psem'}: 6 of 6 layers") for line in err) == 1  # -v: each image


def test_a_batch_writes_the_same_bytes_as_single_encodes(batch, photos, tmp_path):
    out, _, _ = batch
    single = tmp_path / "cup.psem"
    assert invoke("encode", str(photos / "cup.jpg"), "-o", str(single)).exit_code == 0
    assert single.read_bytes() == (out / "cup.psem").read_bytes()


def test_default_output_name_refuses_to_overwrite_without_force(photos, tmp_path):
    shutil.copy(photos / "cat.jpg", tmp_path / "photo.jpg")
    first = invoke("encode", str(tmp_path / "photo.jpg"))
    assert first.exit_code == 0, first.output
    written = tmp_path / "photo.psem"
    assert written.stat().st_size > 1000 and first.stderr.startswith(f"prosemc: {written}: 6 of 6 layers")
    written.write_bytes(b"keep me")
    again = invoke("encode", str(tmp_path / "photo.jpg"))
    assert again.exit_code == 2 and written.read_bytes() == b"keep me"
    assert again.stderr == (f"prosemc: error: {written} already exists; pass --force to overwrite, or write elsewhere "
                            "(-o FILE or --out-dir DIR)\n")
    assert invoke("encode", str(tmp_path / "photo.jpg"), "--force", "-q").exit_code == 0
    assert written.read_bytes()[:4] == b"\x89PSM"


def test_batch_outputs_are_checked_before_any_work(photos, tmp_path):
    (tmp_path / "cup.psem").write_bytes(b"old")
    cat, cup = str(photos / "cat.jpg"), str(photos / "cup.jpg")
    exists = invoke("encode", cat, cup, "--out-dir", str(tmp_path))
    assert exists.exit_code == 2 and "cup.psem already exists; pass --force" in exists.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cup.psem"]  # cat.psem was not written either
    twice = invoke("encode", cat, str(tmp_path / "cat.png"), "--out-dir", str(tmp_path / "o"))
    assert twice.exit_code == 2 and f"would both be written to {tmp_path / 'o' / 'cat.psem'}" in twice.stderr
    several = invoke("encode", cat, cup, "-o", "x.psem")
    assert several.exit_code == 2 and "-o names the output of a single IMAGE; for several use --out-dir" in several.stderr
    stdin = invoke("encode", "-", input=b"x")
    assert stdin.exit_code == 2 and "an image read from standard input has no name" in stdin.stderr


def test_find_piped_into_encode_from_stdin_in_one_process(photos, tmp_path, cli_env):
    """`find ... | prosemc encode --from - --out-dir DIR`, through a real pipe; every image failing exits 2."""
    out = tmp_path / "out"
    done = subprocess.run(["bash", "-o", "pipefail", "-c", f"find {photos} -name 'c*.jpg' | sort | prosemc encode "
                           f"--from - --out-dir {out} --json"], capture_output=True, text=True, env=cli_env,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert [r["output"] for r in report["results"]] == [str(out / "cat.psem"), str(out / "cup.psem")]
    assert done.stderr.splitlines()[-1].startswith(f"prosemc: encoded 2 of 2 images into {out}")
    listed = tmp_path / "bad.txt"
    listed.write_text(f"{photos / 'notes.jpg'}\n\n{tmp_path / 'missing.jpg'}\n")
    bad = invoke("encode", "--from", str(listed), "--out-dir", str(out))
    assert bad.exit_code == 2 and bad.stderr.splitlines()[-1].startswith("prosemc: error: all 2 images failed")


def test_query_several_files_and_jsonl_pairs_in_one_process(batch, tmp_path, valid_report):
    out, _, _ = batch
    cat, cup = str(out / "cat.psem"), str(out / "cup.psem")
    (tmp_path / "broken.psem").write_bytes(b"PSEM but not really")
    several = invoke("query", cat, cup, str(tmp_path / "broken.psem"), "what is shown?")
    assert several.exit_code == 3, several.output
    lines = several.stdout.splitlines()
    assert [line.split(": ")[0] for line in lines] == [cat, cup] and "espresso" in lines[1].lower()
    assert f"prosemc: error: {tmp_path / 'broken.psem'}: not a .psem file (bad magic bytes)" in several.stderr
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text(json.dumps({"file": cat, "question": "what animal is this?"}) + "\n"
                     + json.dumps({"file": cup, "question": "what is shown?"}) + "\n")
    answered = invoke("query", "--jsonl", str(pairs), "--json", "--layers", "2")
    assert answered.exit_code == 0, answered.output
    report = valid_report(answered.stdout, "query")
    assert (report["succeeded"], report["failed"]) == (2, 0)
    assert [r["question"] for r in report["results"]] == ["what animal is this?", "what is shown?"]
    assert [len(r["layers"]) for r in report["results"]] == [2, 2]
    assert report["results"][0]["labels"][0]["label"] in CAT_LABELS
    assert "prosemc: answered 2 of 2 questions in" in answered.stderr
    assert "using" not in answered.stderr  # a deliberate --layers 2 is not news


def test_bad_jsonl_is_refused_before_any_work(tmp_path):
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text('{"file": "a.psem", "question": "what?"}\n["not", "an", "object"]\n')
    result = invoke("query", "--jsonl", str(pairs))
    assert result.exit_code == 2
    assert result.stderr == (f'prosemc: error: {pairs} line 2 is not a JSON object with "file" and "question" strings; '
                             'write one {"file": "x.psem", "question": "what is shown?"} per line\n')
    both = invoke("query", "a.psem", "what?", "--jsonl", str(pairs))
    assert both.exit_code == 2 and "give either IN... QUESTION or --jsonl FILE, not both" in both.stderr
    alone = invoke("query", "a.psem")
    assert alone.exit_code == 2 and "give the .psem file(s) and then the question" in alone.stderr


def test_quiet_keeps_only_data_and_verbose_adds_details(batch, tmp_path, valid_report):
    out, _, _ = batch
    cut = tmp_path / "two.psem"
    quiet = invoke("truncate", str(out / "cat.psem"), "-o", str(cut), "--layers", "2", "-q")
    assert quiet.exit_code == 0 and quiet.stderr == ""
    said = invoke("truncate", str(out / "cat.psem"), "-o", str(cut), "--layers", "1")
    assert said.stderr == f"prosemc: kept 1 layer, {cut.stat().st_size} bytes -> {cut}\n"  # one prefix, "1 layer"
    assert invoke("truncate", str(out / "cat.psem"), "-o", str(cut), "--layers", "2").exit_code == 0
    decoded = invoke("decode", str(cut), "-o", str(tmp_path / "t.safetensors"), "--json")
    report = valid_report(decoded.stdout, "decode")
    assert report["status"] == "prefix" and len(report["layers"]) == 2 and report["tokens"]["shape"] == [49, 1280]
    assert decoded.stderr == f"prosemc: {cut}: prefix: 2 of 6 layers; using 2 layers ({report['bytes']} bytes)\n"
    chosen = invoke("decode", str(out / "cat.psem"), "-o", str(tmp_path / "t.safetensors"), "--layers", "2")
    assert chosen.stderr.startswith("prosemc: decoded 2 layers of ") and "using" not in chosen.stderr
    verbose = invoke("decode", str(out / "cat.psem"), "-o", str(tmp_path / "t.safetensors"), "--layers", "2", "-v")
    assert f"prosemc: {out / 'cat.psem'}: using 2 layers" in verbose.stderr
    both = invoke("-q", "info", str(cut), "-v")
    assert both.exit_code == 2 and "-q/--quiet and -v/--verbose exclude each other" in both.stderr


def test_version_lists_the_libraries_and_weights_without_importing_torch(cli_env):
    probe = ("import atexit, sys; atexit.register(lambda: sys.stderr.write(str(sorted(m for m in ('torch', "
             "'transformers', 'numpy', 'onnxruntime') if m in sys.modules)))); sys.argv = ['prosemc', '--version']; "
             "from prosemc.cli import main; main()")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=cli_env, timeout=60)
    assert done.returncode == 0 and done.stderr == "[]"  # nothing heavy imported
    lines = done.stdout.splitlines()
    assert lines[0].startswith("prosemc 0.1.0 (writes PSEM 1.0 full and 2.0 compact; JSON schema 1)")
    for library in ("torch", "transformers", "onnxruntime"):
        assert f"{library} " in lines[2]
    from prosemc.codec.metaae_weights import shipped_weights_path
    import hashlib

    sha = hashlib.sha256(shipped_weights_path("lite").read_bytes()).hexdigest()
    assert f"codec weights metaae/1 for lite: sha256 {sha}" in lines


def test_quiet_batch_prints_nothing_but_its_json(photos, tmp_path, valid_report):
    result = invoke("-q", "encode", str(photos / "cat.jpg"), str(photos / "cup.jpg"), "--out-dir", str(tmp_path),
                    "--json")
    assert result.exit_code == 0 and result.stderr == ""  # no progress line, no summary
    assert valid_report(result.stdout, "encode")["succeeded"] == 2


def test_counted_nouns_have_the_right_plural():
    from prosemc.text import plural

    assert [plural(1, "layer"), plural(2, "layer"), plural(0, "complete layer")] == ["1 layer", "2 layers",
                                                                                       "0 complete layers"]
    assert [plural(1, "entry"), plural(5, "entry"), plural(3, "single-image process")] == [
        "1 entry", "5 entries", "3 single-image processes"]


def test_a_large_lite_dense_batch_uses_the_compiled_encoder_with_the_same_bytes(photos, tmp_path, monkeypatch,
                                                                               valid_report):
    pytest.importorskip("numba")
    from prosemc.cli import main_job

    single = invoke("encode", str(photos / "cat.jpg"), "--model", "lite-dense", "-o", str(tmp_path / "one.psem"),
                    "--json")
    assert single.exit_code == 0 and json.loads(single.stdout)["runtime"]["coder"] == "constriction"
    monkeypatch.setattr(main_job, "COMPILED_BATCH", 2)  # a 256-image batch, in two images
    out = tmp_path / "batch"
    result = invoke("encode", str(photos / "cat.jpg"), str(photos / "cup.jpg"), "--model", "lite-dense",
                    "--out-dir", str(out), "--json")
    report = valid_report(result.stdout, "encode")
    assert result.exit_code == 0 and [r["runtime"]["coder"] for r in report["results"]] == ["numba", "numba"]
    assert (out / "cat.psem").read_bytes() == (tmp_path / "one.psem").read_bytes()
