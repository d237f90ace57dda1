"""`prosemc bench generalisation` at a small scale: lite-dense, 4 photos x 3 views, 2 folds. Each fold's codec never
trained on the photos it is measured on (photo hashes recorded in the fit), the report's numbers hang together and
validate against the JSON schema; new views and extra training photos do what they say; bad options are refused
before any work."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from prosemc.training.photos import pixel_hash


@pytest.fixture(scope="module")
def photos(tmp_path_factory, chelsea, coffee) -> Path:
    from PIL import Image
    import skimage.data

    folder = tmp_path_factory.mktemp("photos")
    for path in (chelsea, coffee):
        Image.open(path).convert("RGB").save(folder / f"{path.stem}.png")
    for name in ("camera", "coins"):
        Image.fromarray(getattr(skimage.data, name)()).convert("RGB").save(folder / f"{name}.png")
    return folder


SMALL = {"views": 3, "rd_views": 12, "table_views": 12}  # training views per photo, and what the fit counts on


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def report(photos, cache) -> dict:
    from prosemc.bench import generalisation

    seen: list[tuple[int, int]] = []
    results = generalisation.run("lite-dense", str(photos), folds=2, views=2, seed=3, resamples=200, cache_dir=cache,
                                 threads=1, progress=lambda done, total, note: seen.append((done, total)),
                                 config_overrides=SMALL)
    assert seen[0] == (0, 7) and seen[-1][0] < 7  # 1 + 2 fits and 4 photos
    return results


def test_fresh_views_change_what_is_measured_not_what_is_fitted(report, photos, cache) -> None:
    from prosemc.bench import generalisation

    fresh = generalisation.run("lite-dense", str(photos), folds=2, views=2, seed=3, resamples=200, cache_dir=cache,
                               threads=1, config_overrides=SMALL, fresh_seed=7)
    assert fresh["fresh_views_seed"] == 7 and report["fresh_views_seed"] is None
    assert fresh["all_photos_weights_sha256"] == report["all_photos_weights_sha256"]
    assert [f["weights_sha256"] for f in fresh["fold_fits"]] == [f["weights_sha256"] for f in report["fold_fits"]]
    assert [row["seen"] for row in fresh["per_layer"]] != [row["seen"] for row in report["per_layer"]]
    assert "new augmented views (seed 7" in generalisation.markdown(fresh, "test")


def test_extra_photos_train_every_codec_and_are_never_measured(report, photos, cache, tmp_path) -> None:
    from PIL import Image
    import skimage.data

    from prosemc.bench import generalisation

    Image.fromarray(skimage.data.rocket()).save(tmp_path / "rocket.png")
    extra = generalisation.run("lite-dense", str(photos), folds=2, views=1, seed=3, resamples=200, cache_dir=cache,
                               threads=1, config_overrides=SMALL, extra_images=str(tmp_path))
    rocket = pixel_hash(Image.open(tmp_path / "rocket.png").convert("RGB"))
    assert extra["extra_photos"] == 1 and extra["reproduces_shipped"] is None
    assert all(rocket in fit["train_photos_sha256"] and rocket not in fit["test_photos_sha256"]
               for fit in extra["fold_fits"])
    assert sorted(extra["photos"]) == sorted(report["photos"])  # measured: the cross-fit photos only
    assert extra["all_photos_weights_sha256"] != report["all_photos_weights_sha256"]
    assert "every codec also trains on the 1 photos of" in generalisation.markdown(extra, "test")


def test_each_fold_codec_never_trained_on_the_photos_it_is_measured_on(report, photos) -> None:
    from PIL import Image

    hashes = {pixel_hash(Image.open(path).convert("RGB")) for path in photos.iterdir()}
    assert len(report["fold_fits"]) == 2 and len(report["photos"]) == 4
    measured: list[str] = []
    for fit in report["fold_fits"]:
        trained, tested = set(fit["train_photos_sha256"]), set(fit["test_photos_sha256"])
        assert not trained & tested and trained | tested == hashes and len(tested) == 2
        assert fit["weights_sha256"] != report["all_photos_weights_sha256"]
        measured += fit["test_photos"]
    assert sorted(measured) == sorted(report["photos"])  # every photo measured unseen exactly once
    assert report["reproduces_shipped"] is None  # another config than the shipped weights': not compared
    assert [row["fold"] for row in report["per_photo"]] == [
        next(f["fold"] for f in report["fold_fits"] if name in f["test_photos"]) for name in report["photos"]]


def test_per_layer_numbers_hang_together(report) -> None:
    layers = report["per_layer"]
    assert 2 <= len(layers) <= 11 and [row["index"] for row in layers] == list(range(1, len(layers) + 1))
    for side in ("seen", "unseen"):
        sizes = [row[side]["payload_bytes"] for row in layers]
        assert sizes[0] > 0 and all(b > a for a, b in zip(sizes, sizes[1:]))
        cosines = [row[side]["per_token_cosine"] for row in layers]
        assert all(0 < c <= 1 for c in cosines) and cosines[-1] > 0.95
        assert all(0 <= row[side]["top1"] <= 1 for row in layers)
    for row in layers:
        for key in ("top1", "per_token_cosine", "payload_bytes"):
            assert row["gap"][key] == pytest.approx(row["seen"][key] - row["unseen"][key], abs=2e-4)
            low, high = row["gap_ci95"][key]
            assert low - 1e-4 <= row["gap"][key] <= high + 1e-4
    top1 = np.array([[row["seen"]["top1"], row["unseen"]["top1"]] for row in layers])
    per_photo = np.array([[p["top1_seen"], p["top1_unseen"]] for p in report["per_photo"]])  # [P, 2, K]
    assert per_photo.mean(axis=0).T == pytest.approx(top1, abs=1e-3)
    assert report["top1_gap_max_abs"] == pytest.approx(np.abs(top1[:, 0] - top1[:, 1]).max(), abs=2e-4)
    assert report["target_met"] == (report["top1_gap_max_abs"] <= 0.03)


def test_report_is_valid_json_and_markdown(report, valid_report) -> None:
    from prosemc.bench.generalisation import markdown
    from prosemc.report import document

    valid_report(document("bench generalisation", machine="test", **report), "bench generalisation")
    text = markdown(report, "test")
    assert text.count("\n| ") == 2 + len(report["per_layer"]) + 2 + 2  # both tables: header, rule and rows
    assert f"Largest |gap| in top-1: **{report['top1_gap_max_abs']}**" in text


@pytest.mark.parametrize("options, message", [
    (["--folds", "5"], "folds must be in 2..4"),
    (["--views", "25"], "views per photo must be in 1..24"),
    (["--fresh-seed", "0"], "seed 0 makes the training views themselves"),
    (["--folds", "2", "--extra-images", "PHOTOS"], "4 of the extra training photos are also cross-fit photos"),
])
def test_bad_options_are_refused_before_any_work(photos, tmp_path, cli_env, options, message) -> None:
    options = [str(photos) if option == "PHOTOS" else option for option in options]
    done = subprocess.run([sys.executable, "-m", "prosemc", "bench", "generalisation", "--images", str(photos),
                           "--out", str(tmp_path / "out"), *options], capture_output=True, text=True, env=cli_env,
                          timeout=120)
    assert done.returncode == 2, done.stderr
    assert message in done.stderr and "Traceback" not in done.stderr
    assert not list((tmp_path / "out").glob("*.json"))
