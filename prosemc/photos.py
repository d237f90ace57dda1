"""Real photos that install offline with packages (scikit-image, scikit-learn, matplotlib), by name.

    packaged_photos(names) -> {name: RGB PIL image}

Licences: scikit-image's data images are CC0 or public domain (see skimage/data/README.txt);
scikit-learn's sample images (china, flower) are CC-BY 2.0 from Flickr; matplotlib's grace_hopper.jpg is a
public-domain US Navy photo. Used for benchmarks, demos and (with augmentation) codec training.
"""

from __future__ import annotations

from typing import Any, Callable

from prosemc.errors import InputError


def _skimage(name: str) -> Callable[[], Any]:
    def load() -> Any:
        import skimage.data

        return getattr(skimage.data, name)()

    return load


def _stereo_motorcycle() -> Any:
    import skimage.data

    return skimage.data.stereo_motorcycle()[0]


def _sklearn(index: int) -> Callable[[], Any]:
    def load() -> Any:
        from sklearn.datasets import load_sample_images

        return load_sample_images().images[index]

    return load


def _grace_hopper() -> Any:
    import matplotlib.cbook
    from PIL import Image

    with matplotlib.cbook.get_sample_data("grace_hopper.jpg") as f:
        return Image.open(f).convert("RGB")


# Colour photos of everyday scenes (the encoder is an ImageNet classifier): name -> loader
PHOTOS: dict[str, Callable[[], Any]] = {
    "chelsea": _skimage("chelsea"),
    "coffee": _skimage("coffee"),
    "astronaut": _skimage("astronaut"),
    "rocket": _skimage("rocket"),
    "motorcycle": _stereo_motorcycle,
    "china": _sklearn(0),
    "flower": _sklearn(1),
    "grace_hopper": _grace_hopper,
    "hubble": _skimage("hubble_deep_field"),
    "retina": _skimage("retina"),
    "immunohistochemistry": _skimage("immunohistochemistry"),
    "coins": _skimage("coins"),
    "camera": _skimage("camera"),
    "horse": _skimage("horse"),
    "moon": _skimage("moon"),
    "brick": _skimage("brick"),
    "grass": _skimage("grass"),
    "gravel": _skimage("gravel"),
}
# The photos benchmarks report on; codec training must never see them.
HELD_OUT = ("chelsea", "coffee", "astronaut", "rocket", "motorcycle", "china", "grace_hopper")


def packaged_photos(names: tuple[str, ...] | list[str] = HELD_OUT) -> dict[str, Any]:
    """Load the named packaged photos as RGB PIL images."""
    import numpy as np
    from PIL import Image

    unknown = [n for n in names if n not in PHOTOS]
    if unknown:
        raise InputError(f"unknown packaged photo {unknown[0]!r}; choose from {', '.join(PHOTOS)}")
    photos = {}
    for name in names:
        picture = PHOTOS[name]()
        if not isinstance(picture, Image.Image):
            array = np.asarray(picture)
            if array.dtype == bool:
                array = array.astype(np.uint8) * 255
            picture = Image.fromarray(array)
        photos[name] = picture.convert("RGB")
    return photos
