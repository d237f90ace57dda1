"""Where each supported VLM family is split, and how its two halves talk: tokens [N, D] plus a small `info`.

    edge:  pixels --vision tower (+ connector where that shrinks the tokens)--> tokens [N, D], info
    cloud: tokens [N, D], info --(projector where not on the edge)--> image features --model's own merge--> LM

The split point is chosen per family from the token sizes of the released checkpoints (floats per image view):

| family   | edge sends                               | e.g.         | sent              | instead of        |
| -------- | ---------------------------------------- | ------------ | ----------------- | ----------------- |
| llava    | tower's selected layer, CLS dropped      | llava-1.5    | [576, 1024] 590 K | [576, 4096] 2.4 M |
| idefics3 | connector output (pixel shuffle + MLP)   | SmolVLM-256M | [64, 576] 37 K    | [1024, 768] 786 K |
|          |                                          | Idefics3-8B  | [169, 4096] 692 K | [676, 1152] 779 K |
| qwen2_vl | merger output (2x2 patches merged + MLP) | Qwen2-VL-2B  | [n/4, 1536]       | [n, 1280]         |
|          |                                          | Qwen2-VL-7B  | [n/4, 3584]       | [n, 1280]         |

The cloud feeds the image features through the hook the model's own forward offers for precomputed encoder
outputs (`mm_encoder_outputs={"image": BaseModelOutputWithPooling(pooler_output=[features])}`), so the merge into
the image-token positions (get_placeholder_mask / inputs_merger + masked_scatter) is the model's own code.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from transformers.modeling_outputs import BaseModelOutputWithPooling

from prosemc.errors import ModelError


def _int_list(info: dict[str, Any], key: str, length: int | None = None) -> list[int]:
    value = info.get(key)
    if not isinstance(value, list) or not all(isinstance(v, int) and v >= 0 for v in value):
        raise ModelError(f"token info lacks a valid {key!r} (got {value!r}); the tokens were made by another model")
    if length is not None and len(value) != length:
        raise ModelError(f"token info {key!r} must hold {length} integers, got {value!r}; re-encode the image")
    return value


def _patches_per_side(config: dict[str, Any]) -> int | None:
    """Patches along one side of the vision tower's square input, from config.json (None if not stated)."""
    vision = config.get("vision_config") or {}
    size, patch = vision.get("image_size"), vision.get("patch_size")
    if not isinstance(size, int) or not isinstance(patch, int) or patch < 1 or size % patch:
        return None
    return size // patch


class Family:
    """One VLM family's split: what the edge computes, what `info` holds, what the cloud adds back."""

    name: str = ""
    split: str = ""  # where the edge stops, in words

    def pixel_inputs(self, processor: Any, image: Any, images_kwargs: dict[str, Any]) -> dict[str, Any]:
        """The image processor's outputs for one RGB image (pixel tensors plus grid / tiling metadata)."""
        return dict(processor.image_processor(images=[image], **images_kwargs))

    def edge_tokens(self, model: Any, pixels: dict[str, Any]) -> tuple[torch.Tensor, dict[str, Any]]:
        """Run the edge part on `pixels`: tokens [N, D] and the JSON-able info the cloud needs."""
        raise NotImplementedError

    def token_width(self, config: Any) -> int:
        """D, the width of the tokens this family's edge half sends."""
        raise NotImplementedError

    def token_grid(self, config: dict[str, Any]) -> tuple[int, int] | None:
        """(rows, cols) of the grid one tile's tokens lie on, row-major, from config.json; None if it varies."""
        return None

    def placeholder_inputs(self, info: dict[str, Any]) -> dict[str, Any]:
        """A stand-in for the processed image that `processor.replace_image_token` reads to expand the prompt."""
        raise NotImplementedError

    def forward_kwargs(
        self, model: Any, processor: Any, tokens: torch.Tensor, info: dict[str, Any], input_ids: torch.Tensor
    ) -> dict[str, Any]:
        """Model kwargs that put `tokens` [N, D] into the image-token positions via the model's own forward."""
        return {"mm_encoder_outputs": {"image": BaseModelOutputWithPooling(pooler_output=[tokens])}}


class LlavaFamily(Family):
    """LLaVA-1.5: the edge sends the tower's selected layer; the cloud runs the (widening) projector."""

    name = "llava"
    split = "vision tower, selected feature layer (projector runs in the cloud: it widens the tokens)"

    def edge_tokens(self, model: Any, pixels: dict[str, Any]) -> tuple[torch.Tensor, dict[str, Any]]:
        config = model.config
        pixel_values = pixels["pixel_values"].to(model.device, model.dtype)
        layers = config.vision_feature_layer
        layers = [layers] if isinstance(layers, int) else list(layers)
        out = model.model.vision_tower(pixel_values, output_hidden_states=True, return_dict=True)
        selected = [out.hidden_states[i] for i in layers]
        if config.vision_feature_select_strategy == "default":
            selected = [h[:, 1:] for h in selected]  # drop CLS, as LlavaModel.get_image_features does
        tokens = torch.cat(selected, dim=-1)[0]  # [N, D]
        height, width = (int(s) for s in pixel_values.shape[-2:])
        return tokens, {"pixel_hw": [height, width]}

    def token_grid(self, config: dict[str, Any]) -> tuple[int, int] | None:
        side = _patches_per_side(config)
        return (side, side) if side else None

    def token_width(self, config: Any) -> int:
        layers = config.vision_feature_layer
        return config.vision_config.hidden_size * (1 if isinstance(layers, int) else len(layers))

    def placeholder_inputs(self, info: dict[str, Any]) -> dict[str, Any]:
        height, width = _int_list(info, "pixel_hw", 2)
        return {"pixel_values": [np.broadcast_to(np.float32(0), (3, height, width))]}

    def forward_kwargs(
        self, model: Any, processor: Any, tokens: torch.Tensor, info: dict[str, Any], input_ids: torch.Tensor
    ) -> dict[str, Any]:
        features = model.model.multi_modal_projector(tokens[None])[0]  # [N, text width]
        return super().forward_kwargs(model, processor, features, info, input_ids)


class Idefics3Family(Family):
    """Idefics3 / SmolVLM: the edge runs tower + connector (pixel shuffle cuts tokens by scale_factor**2)."""

    name = "idefics3"
    split = "vision tower + connector (pixel shuffle and projection shrink the tokens)"

    def pixel_inputs(self, processor: Any, image: Any, images_kwargs: dict[str, Any]) -> dict[str, Any]:
        return dict(processor.image_processor(images=[[image]], **images_kwargs))

    def edge_tokens(self, model: Any, pixels: dict[str, Any]) -> tuple[torch.Tensor, dict[str, Any]]:
        if "rows" not in pixels or "cols" not in pixels:
            raise ModelError("the image processor did not report the tile grid (rows/cols); update transformers")
        pixel_values = pixels["pixel_values"].to(model.device, model.dtype)
        mask = pixels.get("pixel_attention_mask")
        mask = mask.to(model.device) if mask is not None else None
        features = model.model.get_image_features(pixel_values, mask, return_dict=True).pooler_output
        tokens = torch.cat(list(features), dim=0)  # [tiles * image_seq_len, D]
        return tokens, {"rows": int(pixels["rows"][0][0]), "cols": int(pixels["cols"][0][0])}

    def token_width(self, config: Any) -> int:
        return config.text_config.hidden_size

    def token_grid(self, config: dict[str, Any]) -> tuple[int, int] | None:
        side, scale = _patches_per_side(config), config.get("scale_factor")
        if not side or not isinstance(scale, int) or scale < 1 or side % scale:
            return None
        return side // scale, side // scale  # each tile's pixel shuffle keeps the grid, row-major

    def placeholder_inputs(self, info: dict[str, Any]) -> dict[str, Any]:
        for key in ("rows", "cols"):
            if not isinstance(info.get(key), int) or info[key] < 0:
                raise ModelError(f"token info lacks a valid {key!r} (got {info.get(key)!r}); re-encode the image")
        return {"rows": [[info["rows"]]], "cols": [[info["cols"]]]}


class Qwen2VLFamily(Family):
    """Qwen2-VL: the edge runs tower + merger (2x2 patches merged); the cloud needs image_grid_thw for M-RoPE."""

    name = "qwen2_vl"
    split = "vision tower + patch merger (merging 2x2 patches shrinks the tokens)"

    def edge_tokens(self, model: Any, pixels: dict[str, Any]) -> tuple[torch.Tensor, dict[str, Any]]:
        pixel_values = pixels["pixel_values"].to(model.device)
        grid = pixels["image_grid_thw"].to(model.device)
        features = model.model.get_image_features(pixel_values, grid, return_dict=True).pooler_output
        tokens = torch.cat(list(features), dim=0)  # [t*h*w / merge**2, D]
        return tokens, {"image_grid_thw": [int(v) for v in grid[0].tolist()]}

    def token_width(self, config: Any) -> int:
        return config.vision_config.hidden_size

    def placeholder_inputs(self, info: dict[str, Any]) -> dict[str, Any]:
        return {"image_grid_thw": torch.tensor([_int_list(info, "image_grid_thw", 3)])}

    def forward_kwargs(
        self, model: Any, processor: Any, tokens: torch.Tensor, info: dict[str, Any], input_ids: torch.Tensor
    ) -> dict[str, Any]:
        kwargs = super().forward_kwargs(model, processor, tokens, info, input_ids)
        kwargs["image_grid_thw"] = self.placeholder_inputs(info)["image_grid_thw"].to(model.device)
        type_ids = processor.create_mm_token_type_ids(input_ids.tolist())
        kwargs["mm_token_type_ids"] = torch.tensor(type_ids, device=model.device)
        return kwargs


FAMILY_CLASSES: dict[str, type[Family]] = {f.name: f for f in (LlavaFamily, Idefics3Family, Qwen2VLFamily)}
