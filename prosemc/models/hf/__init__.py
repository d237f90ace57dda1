"""Off-the-shelf Hugging Face VLMs (LLaVA-1.5, SmolVLM / Idefics3, Qwen2-VL) split into an edge and a cloud half.

    load_hf_model("llava-hf/llava-1.5-7b-hf" | "/path/to/folder") -> HFSplitModel
        .encode_image(pil)            edge:  image -> EdgeTokens(tokens [N, D] float32, info)
        .answer(tokens, question)     cloud: tokens + question -> Answer(text)

Importing this package is cheap; torch and transformers load with the first model.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from prosemc.models.hf.checkpoint import FAMILIES, SUPPORTED, find_checkpoint

if TYPE_CHECKING:
    from prosemc.models.hf.split import HFSplitModel

__all__ = ["FAMILIES", "SUPPORTED", "load_hf_model"]


def load_hf_model(
    name_or_path: str, *, dtype: str = "float32", device: str = "cpu", max_new_tokens: int = 64
) -> HFSplitModel:
    """A split VLM for a hub id (resolved from the local HF cache only) or a checkpoint folder.

    Checks the checkpoint exists and its family is supported now (ModelError otherwise); weights load lazily.
    `model_id` is `<name>@<config hash>` (see checkpoint.model_id_for).
    """
    checkpoint = find_checkpoint(name_or_path)
    from prosemc.models.hf.split import HFSplitModel

    return HFSplitModel(checkpoint, dtype=dtype, device=device, max_new_tokens=max_new_tokens)
