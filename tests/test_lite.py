"""The built-in `lite` model with its real weights: EfficientNet-Lite0 tokens, ImageNet labels, SmolLM2 answers.

SmolLM2 is converted once per test run into the run's temporary PROSEMC_CACHE (about 20-30 s on two cores), so the
conversion, the atomic cache and the reload are all exercised and the user's own cache is never touched.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("torch")
pytest.importorskip("efficientnet_lite_pytorch")
skimage_data = pytest.importorskip("skimage.data")

import torch  # noqa: E402

from prosemc.errors import InputError, ModelError  # noqa: E402
from prosemc.models.base import EdgeTokens  # noqa: E402
from prosemc.models.lite import (  # noqa: E402
    LiteModel,
    grounded,
    imagenet_labels,
    preprocess,
    tidy_answer,
    unanswerable,
)
from prosemc.models.cache_builds import MARKER, DamagedCacheError, stamp, verify  # noqa: E402
from prosemc.models.llm import SmolLM2, cache_root, converted_dir  # noqa: E402

CAT_LABELS = {"tabby cat", "tiger cat", "Egyptian Mau"}
COFFEE_LABELS = {"espresso", "cup", "coffee mug"}


@pytest.fixture(scope="module")
def lite() -> LiteModel:
    """One LiteModel for the module (encoder loads in well under a second)."""
    return LiteModel()


@pytest.fixture(scope="module")
def llm_cache() -> Path:
    """The test run's fresh PROSEMC_CACHE (set up and removed by conftest); SmolLM2 is converted into it once."""
    return Path(os.environ["PROSEMC_CACHE"])


@pytest.fixture(scope="module")
def answerer(llm_cache: Path) -> LiteModel:
    """A LiteModel whose language half lives in the temporary cache (converted on first answer)."""
    return LiteModel(cache_dir=llm_cache)


@pytest.fixture(scope="module")
def chelsea_tokens(lite: LiteModel) -> EdgeTokens:
    return lite.encode_image(Image.fromarray(skimage_data.chelsea()))


def full_model_label(lite: LiteModel, image: np.ndarray) -> str:
    """Top-1 label of the unsplit torch EfficientNet-Lite0 (forward = features + pool + fc)."""
    with torch.inference_mode():
        logits = lite.encoder(torch.from_numpy(preprocess(image)).unsqueeze(0))
    return lite.labels[int(logits.argmax())]


# edge half ---------------------------------------------------------------------------------------------------
def test_tokens_shape_dtype_and_sparsity(chelsea_tokens: EdgeTokens):
    tokens = chelsea_tokens.tokens
    assert tokens.shape == (49, 1280) and tokens.dtype == np.float32
    assert 0.80 < float(np.mean(tokens == 0)) < 0.98  # ReLU6 head: mostly zeros
    assert tokens.min() >= 0.0 and tokens.max() <= 6.0 and tokens.max() > 1.0
    assert chelsea_tokens.info == {}


def test_tokens_are_row_major_over_the_grid(lite: LiteModel, chelsea_tokens: EdgeTokens):
    with torch.inference_mode():
        features = lite.encoder.extract_features(torch.from_numpy(preprocess(skimage_data.chelsea()))[None])
    features = features[0].numpy()  # [1280, 7, 7]
    for row, col in ((0, 0), (0, 6), (3, 2), (6, 0), (6, 6)):
        np.testing.assert_array_equal(chelsea_tokens.tokens[row * 7 + col], features[:, row, col])


def test_encoding_is_deterministic_and_does_not_load_the_llm(lite: LiteModel, chelsea_tokens: EdgeTokens):
    again = lite.encode_image(skimage_data.chelsea())  # an [H, W, 3] array works as well as a PIL image
    np.testing.assert_array_equal(again.tokens, chelsea_tokens.tokens)
    assert lite._llm is None


def test_preprocess_scales_short_side_and_crops_the_centre():
    thirds = np.zeros((224, 672, 3), dtype=np.uint8)
    thirds[:, :224] = (255, 0, 0)
    thirds[:, 224:448] = (0, 255, 0)
    thirds[:, 448:] = (0, 0, 255)
    batch = preprocess(Image.fromarray(thirds))
    assert batch.shape == (3, 224, 224) and batch.dtype == np.float32
    np.testing.assert_allclose(batch[:, 112, 112], [-127 / 128, 1.0, -127 / 128])
    np.testing.assert_allclose(batch[:, 5, 5], [-127 / 128, 1.0, -127 / 128])  # no red or blue left in the crop
    small = preprocess(Image.new("L", (10, 30), 127))  # upscaled; grey becomes RGB; 127 maps to 0
    assert small.shape == (3, 224, 224) and np.abs(small).max() == 0.0


def test_preprocess_refuses_other_objects():
    with pytest.raises(InputError, match="pass a PIL image"):
        preprocess("chelsea.png")


# classifier --------------------------------------------------------------------------------------------------
def test_label_file_has_1000_names_in_index_order():
    labels = imagenet_labels()
    assert len(labels) == 1000
    assert (labels[0], labels[281], labels[967], labels[999]) == ("tench", "tabby cat", "espresso", "toilet paper")
    assert (labels[134], labels[517], labels[657], labels[744]) == ("crane (bird)", "crane (machine)", "missile",
                                                                    "projectile")


def test_label_names_are_short_distinct_names_not_descriptions():
    labels = imagenet_labels()
    assert len(set(labels)) == 1000 and len({name.lower() for name in labels}) == 1000
    assert not [name for name in labels if "," in name or len(name.split()) > 4 or name != name.strip()]


def test_classify_chelsea_is_a_cat_and_matches_torch(lite: LiteModel, chelsea_tokens: EdgeTokens):
    top = lite.classify(chelsea_tokens)
    assert len(top) == 5 and top[0][0] in CAT_LABELS
    assert top[0][0] == full_model_label(lite, skimage_data.chelsea())
    probs = [p for _, p in top]
    assert probs == sorted(probs, reverse=True) and 0.0 < sum(probs) <= 1.0 + 1e-9


def test_classify_coffee_is_espresso_and_matches_torch(lite: LiteModel):
    image = skimage_data.coffee()
    top = lite.classify(lite.encode_image(image), k=3)
    assert len(top) == 3 and top[0][0] == "espresso" and top[0][1] > 0.5
    assert {name for name, _ in top} <= COFFEE_LABELS | {"consomme"}
    assert top[0][0] == full_model_label(lite, image)


def test_classify_probabilities_match_torch_softmax(lite: LiteModel, chelsea_tokens: EdgeTokens):
    with torch.inference_mode():
        logits = lite.encoder(torch.from_numpy(preprocess(skimage_data.chelsea()))[None])[0]
    expected = torch.softmax(logits.double(), 0).numpy()
    for name, prob in lite.classify(chelsea_tokens):
        assert prob == pytest.approx(expected[lite.labels.index(name)], abs=1e-5)


def test_classify_needs_neither_image_nor_encoder(chelsea_tokens: EdgeTokens):
    cloud = LiteModel()
    assert cloud.classify(chelsea_tokens.tokens)[0][0] in CAT_LABELS
    assert cloud._encoder is None and cloud._llm is None


@pytest.mark.parametrize("shape", [(49, 1000), (1280,), (0, 1280), (2, 49, 1280)])
def test_tokens_of_another_shape_are_refused(lite: LiteModel, shape: tuple[int, ...]):
    with pytest.raises(ModelError, match=r"do not fit the lite model, which takes \[N, 1280\]"):
        lite.classify(np.zeros(shape, dtype=np.float32))


def test_non_finite_tokens_are_refused(lite: LiteModel, chelsea_tokens: EdgeTokens):
    broken = chelsea_tokens.tokens.copy()
    broken[3, 7] = np.nan
    with pytest.raises(ModelError, match="non-finite"):
        lite.classify(broken)


# cloud half --------------------------------------------------------------------------------------------------
def test_answer_is_deterministic_and_names_the_top_label(answerer: LiteModel, chelsea_tokens: EdgeTokens):
    first = answerer.answer(chelsea_tokens, "what is shown?")
    second = answerer.answer(EdgeTokens(chelsea_tokens.tokens.copy()), "what is shown?")
    assert first.text == second.text and first.labels == second.labels
    assert first.text and "\n" not in first.text
    top_words = {word.lower() for word in first.labels[0][0].split() if len(word) > 2}
    assert top_words & set(first.text.lower().replace(",", " ").replace(".", " ").split()), first.text
    assert answerer._encoder is None  # the cloud half never needed the image or the encoder


def test_answer_says_when_labels_cannot_answer(answerer: LiteModel, chelsea_tokens: EdgeTokens):
    reply = answerer.answer(chelsea_tokens, "How many people are there?")
    assert "only lists likely objects" in reply.text and "Egyptian Mau" in reply.text
    assert "colour" in answerer.answer(chelsea_tokens, "what color is the car?").text
    assert unanswerable("what is shown?") is None and unanswerable("what animal is this?") is None


def test_empty_question_is_refused(answerer: LiteModel, chelsea_tokens: EdgeTokens):
    with pytest.raises(InputError, match="the question is empty"):
        answerer.answer(chelsea_tokens, "  \n ")


def test_tidy_answer_keeps_two_sentences_of_the_first_paragraph():
    assert tidy_answer("A cat. It is striped. It sleeps.\n\nQuestion: more") == "A cat. It is striped."
    assert tidy_answer("The photo shows a cat. It is lying on a") == "The photo shows a cat."
    assert tidy_answer("The photo shows a cat lying on a") == "The photo shows a cat lying on a…"


# the SmolLM2 cache -------------------------------------------------------------------------------------------
def test_cache_is_complete_and_reloads_from_prosemc_cache(
    answerer: LiteModel, llm_cache: Path, chelsea_tokens: EdgeTokens, monkeypatch: pytest.MonkeyPatch
):
    answerer.answer(chelsea_tokens, "what is shown?")  # makes sure the conversion has happened
    folder = converted_dir(llm_cache)
    assert (folder / MARKER).is_file() and (folder / "model.safetensors").is_file()
    names = [p.name for p in llm_cache.iterdir()]  # (other tests may add their own cache entries)
    assert folder.name in names and not [n for n in names if n.startswith(".")]  # no temporary folder left behind
    monkeypatch.setenv("PROSEMC_CACHE", str(llm_cache))
    assert cache_root() == llm_cache and converted_dir() == folder
    reloaded = SmolLM2.load()  # from PROSEMC_CACHE, no conversion
    assert reloaded.folder == folder
    messages = [{"role": "user", "content": "Name one colour."}]
    assert reloaded.chat(messages, max_new_tokens=8) == answerer.llm.chat(messages, max_new_tokens=8)


def test_cache_root_defaults(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    monkeypatch.delenv("PROSEMC_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert cache_root() == tmp_path / "prosemc"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert cache_root() == tmp_path / ".cache" / "prosemc"


def test_damaged_cache_is_detected_by_its_checksums(answerer: LiteModel, llm_cache: Path, tmp_path: Path):
    """NaN written over weights keeps a valid safetensors header: only the checksum of the build catches it."""
    answerer.llm  # noqa: B018 - the session's conversion
    source = converted_dir(llm_cache)
    verify(source)  # the session's build matches its checksums
    copy = tmp_path / source.name
    shutil.copytree(source, copy)
    weights = copy / "model.safetensors"
    with open(weights, "r+b") as stream:
        header = int.from_bytes(stream.read(8), "little")
        stream.seek(8 + header + 4096)
        stream.write(np.full(256, np.nan, dtype=np.float32).tobytes())
    with pytest.raises(DamagedCacheError, match=r"model.safetensors does not match its checksum"):
        SmolLM2._load_verified(copy)
    (copy / MARKER).unlink()
    assert stamp(copy) is None and stamp(source) is not None  # no marker: not a build, converted again on load


def test_replies_that_name_no_label_are_not_grounded():
    espresso = [("espresso", 0.94), ("cup", 0.02)]
    assert not grounded("The photo is likely a vintage car, possibly a vintage Ferrari.", espresso)
    assert grounded("The photo most likely shows an espresso.", espresso)
    cat = [("Egyptian Mau", 0.38), ("tiger cat", 0.33), ("tabby cat", 0.16), ("lynx", 0.04)]
    assert grounded("It is a cat, specifically a domestic cat.", cat)
    assert not grounded("It is a lynx.", cat)  # below the 5 % the prompt shows
    assert not grounded("", cat)
