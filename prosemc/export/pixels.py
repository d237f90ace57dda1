"""The pixel recipe of a bundle: how an RGB image becomes the graph's input, written into the manifest. No torch.

    RGB image --short-side-crop (scale the short side, cut the centre) | stretch (scale to H x W)-->
        [H, W, 3] uint8 --float32, channels first--> pixels [1, 3, H, W] in 0..255

Normalisation ((x - 127) / 128 for `lite`, (x / 255 - mean) / std for CLIP-style towers) happens inside the
graph, so the board feeds raw pixel values and a recipe is only geometry and a resampling filter.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from prosemc.errors import InputError, ModelError

RESIZE_MODES = ("short-side-crop", "stretch")
RESAMPLE_FILTERS = ("bicubic", "bilinear", "lanczos")


@dataclass(frozen=True)
class PixelRecipe:
    """Geometry and filter that turn any RGB image into pixels [1, 3, height, width] float32 in 0..255."""

    height: int
    width: int
    resize: str  # one of RESIZE_MODES
    resample: str  # one of RESAMPLE_FILTERS
    short_side: int = 0  # short-side-crop: the short side before the centre crop

    def __post_init__(self) -> None:
        if self.resize not in RESIZE_MODES or self.resample not in RESAMPLE_FILTERS:
            raise ModelError(f"unknown pixel recipe {self.resize!r} / {self.resample!r}; re-export the bundle")
        if not (1 <= self.height <= 8192 and 1 <= self.width <= 8192):
            raise ModelError(f"pixel recipe size {self.height}x{self.width} is out of range; re-export the bundle")
        if self.resize == "short-side-crop" and self.short_side < max(self.height, self.width):
            raise ModelError(f"pixel recipe short side {self.short_side} is below the crop; re-export the bundle")

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Any) -> "PixelRecipe":
        try:
            return cls(**{key: data[key] for key in ("height", "width", "resize", "resample")},
                       short_side=int(data.get("short_side", 0)))
        except (KeyError, TypeError) as error:
            raise ModelError(f"the manifest's pixel recipe is incomplete ({error!r}); re-export the bundle") from None

    def pixels(self, image: Any) -> np.ndarray:
        """An RGB PIL image as pixels [1, 3, H, W] float32 (0..255), following the recipe."""
        from PIL import Image

        from prosemc.models.images import short_side_crop, to_rgb

        if not isinstance(image, Image.Image):
            raise InputError(f"cannot encode a {type(image).__name__}; pass an image file")
        filters = {"bicubic": Image.Resampling.BICUBIC, "bilinear": Image.Resampling.BILINEAR,
                   "lanczos": Image.Resampling.LANCZOS}
        image = to_rgb(image)
        if self.resize == "short-side-crop":
            image = short_side_crop(image, self.short_side, (self.height, self.width), filters[self.resample])
        else:
            image = image.resize((self.width, self.height), filters[self.resample], reducing_gap=3.0)
        return np.asarray(image, dtype=np.float32).transpose(2, 0, 1)[None].copy()
