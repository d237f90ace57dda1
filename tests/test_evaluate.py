"""`prosemc eval` and its pieces: rows per scheme and level, budgets, the references' byte sizes."""

from __future__ import annotations

import io
import json
import shutil

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from prosemc.cli import cli
from prosemc.evaluate import Evaluation, Sent, float32_json, image_at_budget, per_token_cosine, token_cosine


@pytest.fixture(scope="module")
def folder(tmp_path_factory, coffee):
    path = tmp_path_factory.mktemp("eval")
    shutil.copy(coffee, path / "coffee.jpg")
    (path / "notes.txt").write_text("not an image, skipped by suffix")
    return path


def test_eval_json_rows_cover_every_scheme_and_improve_with_level(folder, valid_report):
    result = CliRunner().invoke(cli, ["eval", "--images", str(folder), "--json"])
    assert result.exit_code == 0, result.output
    data = valid_report(result.stdout, "eval")
    assert (data["model"], data["images"], data["codecs"]) == ("lite", 1, ["metaae", "baseline"])
    schemes = {r["scheme"] for r in data["rows"]}
    assert schemes == {"metaae", "baseline", "metaae-compact", "baseline-compact", "raw-f16", "int8", "paper-json",
                       "jpeg", "webp"}
    for scheme in ("metaae", "baseline", "paper-json", "webp"):
        rows = [r for r in data["rows"] if r["scheme"] == scheme]
        assert [r["level"] for r in rows] == list(range(1, len(rows) + 1))
        assert all(a["bytes"] < b["bytes"] for a, b in zip(rows, rows[1:]))
        assert rows[-1]["token_cosine"] > rows[0]["token_cosine"]
    metaae = [r for r in data["rows"] if r["scheme"] == "metaae"]
    assert len(metaae) == 6 and metaae[-1]["token_cosine"] > 0.99 and metaae[-1]["top1_agreement"] == 1.0
    assert all(-1.0 <= r["per_token_cosine"] <= 1.0 + 1e-9 for r in data["rows"])
    assert metaae[-1]["per_token_cosine"] > 0.98 and metaae[0]["per_token_cosine"] < metaae[-1]["per_token_cosine"]
    assert all(r["answer_consistency"] is None for r in data["rows"])
    assert [r["bytes"] for r in data["rows"] if r["scheme"] == "webp"][:3] == pytest.approx([256, 384, 512], abs=12)
    compact = [r for r in data["rows"] if r["scheme"] == "metaae-compact"]
    assert [full["bytes"] - r["bytes"] for full, r in zip(metaae, compact)] == [246 - 18 + 10 * k for k in range(1, 7)]
    strip = ("scheme", "bytes")
    assert [{k: v for k, v in r.items() if k not in strip} for r in compact] == \
        [{k: v for k, v in r.items() if k not in strip} for r in metaae]  # same tokens: same metrics


def test_eval_answers_measure_consistency(folder):
    result = CliRunner().invoke(cli, ["eval", "--images", str(folder), "--codec", "metaae", "--no-references",
                                      "--answers", "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)["rows"]
    assert [r["scheme"] for r in rows] == ["metaae"] * 6 + ["metaae-compact"] * 6
    assert all(0.0 <= r["answer_consistency"] <= 1.0 + 1e-6 for r in rows)
    assert [r["answer_consistency"] for r in rows[:6]] == [r["answer_consistency"] for r in rows[6:]]
    assert rows[-1]["answer_consistency"] > 0.99  # the full stream gives the uncompressed answer back


def test_eval_refuses_a_folder_without_images(tmp_path):
    result = CliRunner().invoke(cli, ["eval", "--images", str(tmp_path)])
    assert result.exit_code == 2 and "no images in" in result.output


def test_at_budget_takes_each_images_largest_fitting_level_and_scores_misses_zero():
    evaluation = Evaluation("m", images=["a", "b"])
    for image, sizes in (("a", [100, 300]), ("b", [200, 600])):
        for level, size in enumerate(sizes, start=1):
            evaluation.add(image, Sent("s", level, size, np.zeros(1)),
                           {"token_cosine": level / 2, "top1_agreement": 1.0, "answer_consistency": None})
    (row,) = evaluation.at_budget(300)
    assert row["images_fitting"] == 2 and row["bytes"] == 250 and row["token_cosine"] == 0.75
    (row,) = evaluation.at_budget(150)
    assert row["images_fitting"] == 1 and row["top1_agreement"] == 0.5 and row["answer_consistency"] is None


def test_float32_json_round_trips_and_image_at_budget_fits():
    values = np.random.default_rng(0).normal(size=(3, 5)).astype(np.float32)
    assert np.array_equal(np.array(json.loads(float32_json(values)), dtype=np.float32), values)
    image = Image.fromarray(np.random.default_rng(1).integers(0, 255, (224, 224, 3), dtype=np.uint8))
    for budget in (300, 2000):
        data = image_at_budget(image, "WEBP", budget)
        assert data is not None and len(data) <= budget
        assert Image.open(io.BytesIO(data)).format == "WEBP"
    assert token_cosine(np.ones((2, 2)), 2 * np.ones((2, 2))) == pytest.approx(1.0)
    # per token: a weak token's error counts as much as a strong one's, which the flattened cosine hides
    a = np.array([[100.0, 0.0], [1.0, 0.0]])
    b = np.array([[100.0, 0.0], [0.0, 1.0]])
    assert token_cosine(a, b) == pytest.approx(0.9999, abs=1e-4) and per_token_cosine(a, b) == pytest.approx(0.5)
    assert per_token_cosine(np.zeros((1, 3)), np.zeros((1, 3))) == 1.0


def test_rd_overheads_meet_the_compact_target_and_the_report_has_the_thin_link_table(chelsea):
    from prosemc.bench import rd
    from prosemc.models.images import load_image
    from prosemc.models.lite import LiteModel

    (metaae,) = rd.form_overheads({"chelsea": load_image(str(chelsea))}, LiteModel(), ["metaae"])
    assert (metaae["full_header"], metaae["full_framing"], metaae["compact_header"]) == (246, 16, 18)
    assert metaae["compact_header"] + metaae["compact_framing"] == metaae["compact_overhead_max"] <= 24
    budgets = [{"budget": b, "scheme": s, "images_fitting": 1, "bytes": b - 10, "token_cosine": 0.5,
                "top1_agreement": 1.0, "answer_consistency": 0.9}
               for b in (256, 384, 4096) for s in ("metaae", "metaae-compact", "webp")]
    results = {"model": "lite", "images": 1, "photos": ["chelsea"], "rows": [], "budgets": budgets,
               "overheads": [metaae], "latency": {"assumptions": "-", "stages_s": {}, "paths": []}}
    text = rd.markdown(results, "test machine", "rd.png")
    thin = text.split("## Thin links")[1].split("Header and layer-1")[0]
    assert "| 384 | metaae-compact | 1 | 374 |" in thin and "| 384 | webp |" in thin
    assert "| 384 | metaae |" not in thin and "| 4096 |" not in thin
    assert f"| metaae | {metaae['layer1_payload']:.1f} | 246 | 16 | 18.0 | 6.0 | 24 |" in text
