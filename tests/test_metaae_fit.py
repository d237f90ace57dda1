"""`prosemc fit` / training.fit.fit: tiny runs on two photos: resume from a checkpoint, same seed, user errors."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

pytest.importorskip("torch")

from prosemc.codec.metaae import MetaAutoEncoderCodec  # noqa: E402
from prosemc.training.fit import fit  # noqa: E402
from prosemc.errors import InputError, ModelError  # noqa: E402

TINY = dict(levels=[4, 8], epochs=3, seed=3, views=3, quiet=True,
            config_overrides={"batch": 2, "refine_steps": [2.0, 1.0]})


@pytest.fixture(scope="module")
def photos(tmp_path_factory, chelsea, coffee) -> Path:
    folder = tmp_path_factory.mktemp("photos")
    for path in (chelsea, coffee):
        shutil.copy(path, folder / path.name)
    return folder


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("tokens")


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_resume_gives_the_uninterrupted_weights_and_seed_repeats(photos, cache, tmp_path) -> None:
    whole = fit("lite", photos, tmp_path / "whole.safetensors", cache_dir=cache, **TINY)
    assert whole.steps == 9 and whole.resumed_from_step == 0  # 6 views / batch 2 = 3 steps x 3 epochs
    again = fit("lite", photos, tmp_path / "again.safetensors", cache_dir=cache, **TINY)
    assert again.sha256 == whole.sha256 == sha(tmp_path / "whole.safetensors")

    out = tmp_path / "resumed.safetensors"
    first = fit("lite", photos, out, cache_dir=cache, max_steps=4, **TINY)
    assert first.sha256 == "" and first.steps == 4 and not out.exists()
    assert (tmp_path / ".resumed.safetensors.ckpt.pt").is_file()
    second = fit("lite", photos, out, cache_dir=cache, **TINY)
    assert second.resumed_from_step == 4 and second.steps == 9
    assert second.sha256 == whole.sha256
    assert not (tmp_path / ".resumed.safetensors.ckpt.pt").exists()

    other_seed = fit("lite", photos, tmp_path / "seed4.safetensors", cache_dir=cache, **{**TINY, "seed": 4})
    assert other_seed.sha256 != whole.sha256


def test_fitted_weights_make_a_working_codec(photos, cache, tmp_path) -> None:
    out = tmp_path / "w.safetensors"
    fit("lite", photos, out, cache_dir=cache, **TINY)
    codec = MetaAutoEncoderCodec(out)
    assert codec.weights.levels == (4, 8) and codec.weights.layer_count == 4
    tokens = np.load(next(cache.glob("*.npy")))[0].astype(np.float32)
    encoded = codec.encode(tokens)
    decoded = codec.decode(encoded.params, encoded.layers, tokens.shape)
    assert decoded.shape == tokens.shape and float(np.abs(decoded - tokens).max()) <= 0.6 + 1e-6  # dead zone 0.6 x last step


def test_user_errors(tmp_path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InputError, match="holds no images"):
        fit("lite", empty, tmp_path / "x.safetensors")
    with pytest.raises(InputError, match="does not exist"):
        fit("lite", tmp_path / "missing", tmp_path / "x.safetensors")
    with pytest.raises(ModelError, match="'nope' is not in the local Hugging Face cache"):
        fit("nope", empty, tmp_path / "x.safetensors")
    with pytest.raises(InputError, match="per-token models take --steps"):
        fit("lite-dense", empty, tmp_path / "x.safetensors", levels=[4, 8])


def test_cli_exit_codes(tmp_path, photos, cache, valid_report) -> None:
    from prosemc.cli import cli

    runner = CliRunner()
    empty = tmp_path / "empty"
    empty.mkdir()
    result = runner.invoke(cli, ["fit", "--model", "lite", "--images", str(empty), "-o", str(tmp_path / "x")])
    assert result.exit_code == 2 and "holds no images" in result.output
    result = runner.invoke(cli, ["fit", "--model", "nope", "--images", str(photos), "-o", str(tmp_path / "x")])
    assert result.exit_code == 2 and "nope" in result.output
    result = runner.invoke(cli, ["fit", "--images", str(photos), "-o", str(tmp_path / "c.safetensors"), "--levels",
                                 "4,8", "--epochs", "1", "--views", "2", "--cache-dir", str(cache), "--json"])
    assert result.exit_code == 0, result.output
    report = valid_report(result.stdout, "fit")
    assert report["finished"] and report["codec"]["weights_sha256"] == sha(tmp_path / "c.safetensors")


def test_several_image_sources_in_order(photos, tmp_path) -> None:
    from prosemc.cli import cli
    from prosemc.training.photos import builtin_sources, sources_from

    single = tmp_path / "single.png"
    shutil.copy(next(photos.iterdir()), single)
    names = [s.name for s in sources_from(["builtin", str(photos), str(single), str(photos)])]
    folder = [str(p) for p in sorted(photos.iterdir())]
    assert names == [s.name for s in builtin_sources("train")] + folder + [str(single)]  # a folder named twice: once
    assert len(names) == 34 + len(folder) + 1
    with pytest.raises(InputError, match=f"{tmp_path / 'missing'} does not exist"):
        sources_from(["builtin", tmp_path / "missing"])
    result = CliRunner().invoke(cli, ["fit", "--images", "builtin", "--images", str(tmp_path / "missing"), "-o",
                                      str(tmp_path / "x.safetensors")])
    assert result.exit_code == 2 and "missing does not exist" in result.output and not (tmp_path / "x.safetensors").exists()
