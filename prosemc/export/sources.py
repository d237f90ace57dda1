"""What `prosemc export` turns into a graph: a model's edge half as one torch module from raw pixels to tokens.

    pixels [1, 3, H, W] float32, 0..255 --normalise (in the graph)--> vision tower (+ connector) --> tokens [N, D]

    lite       (x - 127) / 128 -> EfficientNet-Lite0 features [1, 1280, 7, 7] -> tokens [49, 1280]
    llava      CLIP normalisation -> tower's selected layer, CLS dropped -> [patches, D]
    idefics3   (x / 255 - mean) / std -> one view at the tower's size (no tiling) -> connector -> [image_seq_len, D]
    qwen2_vl   normalisation -> 2 frames x 14 px patches in merge order (the processor's layout) -> tower + merger

Hugging Face models are exported at one static image size: LLaVA at its crop, SmolVLM / Idefics3 as a single view
at the tower's size (info rows = cols = 0, which the cloud half's processor expands as one image), Qwen2-VL at a
square side chosen with --image-size. Needs torch (and transformers for Hugging Face models).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from prosemc.errors import InputError, ModelError
from prosemc.export.pixels import PixelRecipe

_FILTERS = {1: "lanczos", 2: "bilinear", 3: "bicubic"}  # PIL's resample numbers
QWEN2_VL_DEFAULT_SIDE = 448


@dataclass
class EdgeSource:
    """A model's edge half ready to export: the module, its pixel recipe, the info its tokens carry."""

    model_id: str  # as the .psem header's "encoder" names it
    family: str  # "lite", "llava", "idefics3", "qwen2_vl"
    module: torch.nn.Module  # pixels [1, 3, H, W] (0..255) -> tokens [N, D]
    recipe: PixelRecipe
    info: dict[str, Any]
    normalisation: str  # how the graph normalises pixels, in words, for the manifest

    def tokens(self, pixels: np.ndarray) -> np.ndarray:
        """Reference tokens [N, D] float32 of pixels [1, 3, H, W] from the torch module (fp32)."""
        with torch.inference_mode():
            return self.module(torch.from_numpy(np.ascontiguousarray(pixels, dtype=np.float32))).float().numpy()


class _Normalised(torch.nn.Module):
    """Base of the wrappers: pixels 0..255 -> (pixels * scale - mean) / std, channels first."""

    def __init__(self, model: torch.nn.Module, mean: Any, std: Any, scale: float) -> None:
        super().__init__()
        self.model = model
        self.scale = scale
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1))

    def normalise(self, pixels: torch.Tensor) -> torch.Tensor:
        return (pixels * self.scale - self.mean) / self.std


class LiteEdge(torch.nn.Module):
    """EfficientNet-Lite0 features as tokens [49, 1280], normalised exactly as prosemc.models.lite.preprocess."""

    def __init__(self, encoder: torch.nn.Module) -> None:
        super().__init__()
        self.encoder = encoder

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        features = self.encoder.extract_features((pixels - 127.0) / 128.0)  # [1, 1280, 7, 7]
        return features.reshape(features.shape[1], -1).transpose(0, 1)  # [49, 1280], row-major over the grid


class LlavaEdge(_Normalised):
    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        config = self.model.config
        layers = config.vision_feature_layer
        layers = [layers] if isinstance(layers, int) else list(layers)
        out = self.model.model.vision_tower(self.normalise(pixels), output_hidden_states=True, return_dict=True)
        selected = [out.hidden_states[i] for i in layers]
        if config.vision_feature_select_strategy == "default":
            selected = [hidden[:, 1:] for hidden in selected]  # CLS dropped, as LlavaModel.get_image_features
        return torch.cat(selected, dim=-1)[0]


class Idefics3Edge(_Normalised):
    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        mask = torch.ones((1, 1, pixels.shape[-2], pixels.shape[-1]), dtype=torch.bool)
        views = self.model.model.get_image_features(self.normalise(pixels)[None], mask, return_dict=True).pooler_output
        return torch.cat(list(views), dim=0)


class Qwen2VLEdge(_Normalised):
    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        vision = self.model.config.vision_config
        patch, merge, frames = vision.patch_size, vision.spatial_merge_size, vision.temporal_patch_size
        rows, cols = pixels.shape[-2] // patch, pixels.shape[-1] // patch
        x = self.normalise(pixels).repeat(frames, 1, 1, 1)  # a still image is `frames` identical frames
        x = x.reshape(1, frames, 3, rows // merge, merge, patch, cols // merge, merge, patch)
        x = x.permute(0, 3, 6, 4, 7, 2, 1, 5, 8).reshape(rows * cols, 3 * frames * patch * patch)
        grid = torch.tensor([[1, rows, cols]])
        merged = self.model.model.get_image_features(x, grid, return_dict=True).pooler_output
        return torch.cat(list(merged), dim=0)


def edge_source(model: str, image_size: int | None = None) -> EdgeSource:
    """The exportable edge half of `model` ("lite", a Hugging Face hub id or folder); ModelError otherwise."""
    if model == "lite":
        if image_size is not None:
            raise InputError("--image-size applies to Qwen2-VL models only; lite takes 224 x 224 crops")
        from prosemc.models.lite import INPUT_SIZE, build_encoder

        recipe = PixelRecipe(INPUT_SIZE, INPUT_SIZE, "short-side-crop", "bicubic", short_side=INPUT_SIZE)
        return EdgeSource("lite", "lite", LiteEdge(build_encoder()).eval(), recipe, {}, "in graph: (x - 127) / 128")
    from prosemc.models import BUILTIN_MODELS

    if model in BUILTIN_MODELS:
        raise InputError(f"prosemc exports 'lite' and Hugging Face VLMs, not {model!r} yet; export --model lite")
    from transformers.utils import logging as transformers_logging

    from prosemc.models.hf import load_hf_model

    transformers_logging.disable_progress_bar()  # stderr is for prosemc's own progress
    split = load_hf_model(model)
    processor = split.processor.image_processor
    family, vlm = split.family.name, split.model
    resample = _FILTERS.get(int(getattr(processor, "resample", 3)))
    if resample is None:
        raise ModelError(f"{split.model_id}'s image processor resamples with filter {processor.resample}, which a "
                         "bundle cannot reproduce; prosemc exports bicubic, bilinear or lanczos processors")
    mean, std = list(processor.image_mean), list(processor.image_std)
    scale = float(getattr(processor, "rescale_factor", 1 / 255))
    words = f"in graph: (x * {scale:.6g} - mean {mean}) / std {std}"
    if image_size is not None and family != "qwen2_vl":
        raise InputError(f"--image-size applies to Qwen2-VL models only; {split.model_id} has a fixed input size")
    if family == "llava":
        height, width = int(processor.crop_size["height"]), int(processor.crop_size["width"])
        recipe = PixelRecipe(height, width, "short-side-crop", resample, short_side=int(processor.size["shortest_edge"]))
        module: torch.nn.Module = LlavaEdge(vlm, mean, std, scale)
        info: dict[str, Any] = {"pixel_hw": [height, width]}
    elif family == "idefics3":
        side = int(processor.max_image_size["longest_edge"])
        recipe = PixelRecipe(side, side, "stretch", resample)
        module, info = Idefics3Edge(vlm, mean, std, scale), {"rows": 0, "cols": 0}
    else:
        side = _qwen2_vl_side(vlm.config.vision_config, processor, image_size)
        recipe = PixelRecipe(side, side, "stretch", resample)
        patch = vlm.config.vision_config.patch_size
        module, info = Qwen2VLEdge(vlm, mean, std, scale), {"image_grid_thw": [1, side // patch, side // patch]}
    return EdgeSource(split.model_id, family, module.eval(), recipe, info, words)


def _qwen2_vl_side(vision: Any, processor: Any, requested: int | None) -> int:
    """A square side that is a multiple of patch * merge and within the processor's pixel limits."""
    factor = vision.patch_size * vision.spatial_merge_size
    low = math.ceil(math.sqrt(processor.size["shortest_edge"]) / factor) * factor
    high = math.floor(math.sqrt(processor.size["longest_edge"]) / factor) * factor
    if requested is None:
        return max(low, min(high, QWEN2_VL_DEFAULT_SIDE // factor * factor))
    if requested % factor or not low <= requested <= high:
        raise InputError(f"--image-size {requested} does not fit this Qwen2-VL model: use a multiple of {factor} "
                         f"between {low} and {high}")
    return requested
