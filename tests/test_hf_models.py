"""The Hugging Face split VLMs on tiny random checkpoints of the real classes (LLaVA, Idefics3, Qwen2-VL).

The strongest check: at lossless settings, edge half -> tokens [N, D] -> cloud half gives the unsplit model's
own logits and its own greedy answer on the same image.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

import tiny_vlms  # noqa: E402
from tiny_vlms import one_torch_thread  # noqa: E402,F401 - autouse fixture
from PIL import Image  # noqa: E402

from prosemc.errors import InputError, ModelError  # noqa: E402
from prosemc.models.base import EdgeTokens  # noqa: E402
from prosemc.models.hf import load_hf_model  # noqa: E402
from prosemc.models.hf.checkpoint import config_hash, file_sha256, parse_model_id, same_checkpoint  # noqa: E402

FAMILIES = ["llava", "idefics3", "smolvlm", "qwen2_vl"]
QUESTION = "What is in the picture?"
# For a 40x50 (h x w) image: the tokens each tiny model's edge half must send, and the info the cloud needs.
EXPECTED = {
    # CLIP 32 px / patch 8 -> 16 patches (CLS dropped), tower width 32 (the projector would widen to 64)
    "llava": ((16, 32), {"pixel_hw": [32, 32]}),
    # resized to 51x64 -> 2x2 tiles of 32 px + global view = 5 views x 16 tokens (64 patches / 2**2), width 48
    "idefics3": ((80, 48), {"rows": 2, "cols": 2}),
    "smolvlm": ((80, 48), {"rows": 2, "cols": 2}),
    # resized to 40x48 -> 10x12 patches of 4 px -> merged 2x2 -> 30 tokens of width 48
    "qwen2_vl": ((30, 48), {"image_grid_thw": [1, 10, 12]}),
}
VISION = {"llava": "vision_tower", "idefics3": "vision_model", "smolvlm": "vision_model", "qwen2_vl": "visual"}
LANGUAGE = {"llava": "language_model", "idefics3": "text_model", "smolvlm": "text_model", "qwen2_vl": "language_model"}


def image(height: int, width: int, seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8), "RGB")


@pytest.fixture(scope="session")
def tiny_folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tiny_vlms")
    return {name: getattr(tiny_vlms, f"build_tiny_{name}")(root / name) for name in FAMILIES}


@pytest.fixture(scope="session", params=FAMILIES)
def family(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture(scope="session")
def models(tiny_folders: dict[str, Path]) -> dict:
    return {name: load_hf_model(str(folder), max_new_tokens=6) for name, folder in tiny_folders.items()}


@pytest.fixture(scope="session")
def picture() -> Image.Image:
    return image(40, 50, seed=1)


@pytest.fixture(scope="session")
def encoded(models: dict, picture: Image.Image) -> dict[str, EdgeTokens]:
    return {name: model.encode_image(picture) for name, model in models.items()}


def test_lossless_split_gives_the_unsplit_logits(family: str, models: dict, encoded: dict, picture) -> None:
    model = models[family]
    split = model.split_logits(encoded[family], QUESTION)
    reference = model.reference_logits(picture, QUESTION)
    assert split.shape == reference.shape == (model.model.config.text_config.vocab_size,)
    np.testing.assert_allclose(split, reference, rtol=0, atol=1e-4)


@pytest.mark.parametrize("size", [(64, 30), (20, 20)])
def test_lossless_split_holds_for_other_image_sizes(family: str, models: dict, size: tuple[int, int]) -> None:
    model, other = models[family], image(*size, seed=2)
    split = model.split_logits(model.encode_image(other), QUESTION)
    np.testing.assert_allclose(split, model.reference_logits(other, QUESTION), rtol=0, atol=1e-4)


def test_split_prompt_is_the_processors_own_prompt(family: str, models: dict, encoded: dict, picture) -> None:
    model = models[family]
    split = model._prompt(encoded[family], QUESTION)["input_ids"]
    reference = model._reference_inputs(picture, QUESTION)["input_ids"]
    assert split.tolist() == reference.tolist()


def test_bfloat16_weights_split_losslessly(family: str, tiny_folders: dict, picture) -> None:
    model = load_hf_model(str(tiny_folders[family]), dtype="bfloat16", max_new_tokens=2)
    tokens = model.encode_image(picture)
    assert tokens.tokens.dtype == np.float32  # bf16 values are exact in float32, so nothing is lost
    assert tokens.tokens.shape == EXPECTED[family][0]
    split, reference = model.split_logits(tokens, QUESTION), model.reference_logits(picture, QUESTION)
    np.testing.assert_allclose(split, reference, rtol=0, atol=1e-2)  # within bf16 rounding of the logits


def test_perturbed_or_other_tokens_change_the_logits(family: str, models: dict, encoded: dict) -> None:
    model, tokens = models[family], encoded[family]
    clean = model.split_logits(tokens, QUESTION)
    noise = np.random.default_rng(3).standard_normal(tokens.tokens.shape).astype(np.float32)
    noisy = model.split_logits(EdgeTokens(tokens.tokens + noise, tokens.info), QUESTION)
    assert np.abs(noisy - clean).max() > 1e-3
    other = model.encode_image(image(40, 50, seed=9))
    assert other.tokens.shape == tokens.tokens.shape
    assert np.abs(model.split_logits(other, QUESTION) - clean).max() > 1e-3


def test_answer_is_deterministic_and_equals_the_unsplit_answer(family, models, encoded, picture) -> None:
    model = models[family]
    first = model.answer(encoded[family], QUESTION)
    assert isinstance(first.text, str) and first.labels is None
    assert model.answer(encoded[family], QUESTION) == first
    assert model.reference_answer(picture, QUESTION).text == first.text


def test_edge_tokens_have_the_family_shape(family: str, encoded: dict) -> None:
    shape, info = EXPECTED[family]
    tokens = encoded[family]
    assert tokens.tokens.dtype == np.float32 and tokens.tokens.shape == shape
    assert tokens.info == info
    assert np.isfinite(tokens.tokens).all()


def test_info_survives_json_and_gives_the_same_answer(family: str, models: dict, encoded: dict) -> None:
    model, tokens = models[family], encoded[family]
    info = json.loads(json.dumps(tokens.info))
    assert info == tokens.info
    assert len(json.dumps(tokens.info)) < 100
    restored = EdgeTokens(np.array(tokens.tokens.tolist(), dtype=np.float32), info)
    assert model.answer(restored, QUESTION) == model.answer(tokens, QUESTION)


def _counting_hook(module) -> list[int]:
    calls: list[int] = []
    module.register_forward_hook(lambda *_: calls.append(1))
    return calls


def test_halves_stay_on_their_side(family: str, tiny_folders: dict, picture) -> None:
    model = load_hf_model(str(tiny_folders[family]), max_new_tokens=2)
    vision = _counting_hook(getattr(model.model.model, VISION[family]))
    language = _counting_hook(getattr(model.model.model, LANGUAGE[family]))
    tokens = model.encode_image(picture)
    assert vision and not language  # the edge never runs the language model
    vision.clear()
    model.answer(tokens, QUESTION)
    assert language and not vision  # the cloud never runs the vision tower


def test_tokens_from_another_model_are_refused(family: str, models: dict, encoded: dict) -> None:
    model, tokens = models[family], encoded[family]
    with pytest.raises(ModelError, match="another model"):
        model.answer(EdgeTokens(tokens.tokens[:, :-1], tokens.info), QUESTION)
    with pytest.raises(ModelError, match="image tokens"):
        model.answer(EdgeTokens(tokens.tokens[:-1], tokens.info), QUESTION)
    with pytest.raises(ModelError, match="token info"):
        model.answer(EdgeTokens(tokens.tokens, {}), QUESTION)
    with pytest.raises(ModelError, match="NaN"):
        model.answer(EdgeTokens(np.full_like(tokens.tokens, np.nan), tokens.info), QUESTION)


def test_bad_inputs_are_refused(family: str, models: dict, encoded: dict) -> None:
    model = models[family]
    with pytest.raises(InputError, match="PIL image"):
        model.encode_image(np.zeros((8, 8, 3), dtype=np.uint8))
    image_token = model.processor.image_token
    with pytest.raises(InputError, match="special token"):
        model.answer(encoded[family], f"what is {image_token} here?")
    with pytest.raises(InputError, match="must be text"):
        model.answer(encoded[family], 42)


def test_grayscale_images_are_converted(models: dict) -> None:
    tokens = models["llava"].encode_image(image(40, 50, seed=1).convert("L"))
    assert tokens.tokens.shape == EXPECTED["llava"][0]


def test_model_id_is_name_config_hash_and_weights_hash(tiny_folders: dict, models: dict) -> None:
    folder = tiny_folders["llava"]
    config = json.loads((folder / "config.json").read_text())
    weights = hashlib.sha256(f"model.safetensors:{hashlib.sha256((folder / 'model.safetensors').read_bytes()).hexdigest()}\n"
                             .encode()).hexdigest()[:8]
    assert models["llava"].model_id == f"llava@{config_hash(config)}-{weights}"
    ids = {model.model_id for model in models.values()}
    assert len(ids) == len(FAMILIES)
    again = load_hf_model(str(folder) + "/")
    assert again.model_id == models["llava"].model_id


def test_a_copy_under_another_name_is_the_same_checkpoint_and_new_weights_are_not(tiny_folders, tmp_path) -> None:
    original = load_hf_model(str(tiny_folders["llava"])).model_id
    copy = shutil.copytree(tiny_folders["llava"], tmp_path / "renamed-copy")
    copied = load_hf_model(str(copy)).model_id
    assert copied.startswith("renamed-copy@") and copied != original and same_checkpoint(original, copied)
    name, config, _ = parse_model_id(original)
    assert same_checkpoint(f"some-old-name@{config}", copied)  # ids written before the weights hash: by config
    blob = bytearray((copy / "model.safetensors").read_bytes())
    blob[-1] ^= 1  # one weight changed: a fine-tune is another model
    (copy / "model.safetensors").write_bytes(bytes(blob))
    changed = load_hf_model(str(copy)).model_id
    assert parse_model_id(changed)[1] == config and not same_checkpoint(original, changed)
    assert not same_checkpoint(original, "lite") and same_checkpoint("lite", "lite")


def test_cache_blobs_are_hashed_by_name_and_other_files_once(tmp_path, monkeypatch) -> None:
    blob = tmp_path / "blobs" / ("ab" * 32)
    blob.parent.mkdir()
    blob.write_bytes(b"not read")
    link = tmp_path / "model.safetensors"
    link.symlink_to(blob)
    assert file_sha256(link) == "ab" * 32
    plain = tmp_path / "plain.bin"
    plain.write_bytes(b"weights")
    memo: dict[str, str] = {}
    assert file_sha256(plain, memo) == hashlib.sha256(b"weights").hexdigest() and len(memo) == 1
    memo[next(iter(memo))] = "remembered"
    assert file_sha256(plain, memo) == "remembered"  # same path, size and mtime: not read again


def test_hub_id_resolves_from_the_local_cache_only(tiny_folders, tmp_path, monkeypatch) -> None:
    from huggingface_hub import constants

    revision = "0" * 40
    repo = tmp_path / "hub" / "models--tiny-org--llava"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(revision)
    shutil.copytree(tiny_folders["llava"], repo / "snapshots" / revision)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    model = load_hf_model("tiny-org/llava")
    assert model.model_id.startswith("tiny-org/llava@")
    assert same_checkpoint(model.model_id, load_hf_model(str(tiny_folders["llava"])).model_id)
    assert load_hf_model(str(repo / "snapshots" / revision)).model_id == model.model_id  # the snapshot folder too
    assert model.checkpoint.folder == repo / "snapshots" / revision
    with pytest.raises(ModelError, match="not in the local Hugging Face cache.*hf download tiny-org/absent"):
        load_hf_model("tiny-org/absent")


def test_missing_or_unsupported_checkpoints_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="does not exist"):
        load_hf_model(str(tmp_path / "nowhere"))
    with pytest.raises(ModelError, match="no config.json"):
        load_hf_model(str(tmp_path))
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(ModelError, match="'bert'.*supported: llava.*idefics3.*qwen2_vl"):
        load_hf_model(str(tmp_path))
    pixtral = {"model_type": "llava", "vision_config": {"model_type": "pixtral"}}
    (tmp_path / "config.json").write_text(json.dumps(pixtral))
    with pytest.raises(ModelError, match="'pixtral' vision tower"):
        load_hf_model(str(tmp_path))
    with pytest.raises(ModelError, match="valid hub id"):
        load_hf_model("not a model")


def test_importing_the_package_loads_no_torch() -> None:
    code = "import sys, prosemc.models.hf; assert 'torch' not in sys.modules and 'transformers' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
