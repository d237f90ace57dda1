"""Load a user's image file, stream or bytes as an RGB PIL image, or refuse it with one clear InputError.

    path | stream | bytes --read at most MAX_IMAGE_BYTES--> open (JPEG, PNG, WebP, BMP, GIF)
          --> size and aspect-ratio check --decode--> EXIF orientation
          --> mode to RGB (alpha composited on white, 16-bit scaled, CMYK converted) --> PIL.Image "RGB"

Pillow only; no torch, so the edge path can use it.
"""

from __future__ import annotations

import io
import os
import re
import struct
import warnings
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from prosemc.errors import InputError

# Pillow format names accepted (the JPEG opener also returns MPO, the multi-picture JPEG phones write).
ACCEPTED_FORMATS = ("JPEG", "PNG", "WEBP", "BMP", "GIF")
# Largest image decoded, in pixels: Pillow's own decompression-bomb threshold (~89 Mpx, 256 MiB of RGBA).
MAX_PIXELS = 89_478_485
MAX_IMAGE_BYTES = 64 << 20  # image files are read up to this size (a 100 Mpx JPEG is ~30 MB), never without end
MAX_ASPECT_RATIO = 32  # long side / short side: every model crops or scales to a near-square view
# Magic bytes of the accepted formats: data that starts like one of them but does not open is a corrupt file of it.
_SIGNATURES = ((b"\xff\xd8", "JPEG"), (b"\x89PNG\r\n\x1a\n", "PNG"), (b"GIF87a", "GIF"), (b"GIF89a", "GIF"))

_HINT = "pass a JPEG, PNG, WebP, BMP or GIF file"
_ALPHA_MODES = ("RGBA", "RGBa", "LA", "La", "PA")


IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif")


def image_files(folder: Path) -> list[Path]:
    """The image files directly in `folder` (by suffix), sorted by name."""
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def load_image(source: str | os.PathLike[str] | bytes | BinaryIO) -> Image.Image:
    """Read an image file (path), stream or bytes and return it decoded as an RGB PIL image, EXIF-upright."""
    name, data = _read_source(source)
    if not data:
        raise InputError(f"{name} is empty; {_HINT}")
    with warnings.catch_warnings():
        # The pixel limit is checked below against MAX_PIXELS, independent of Pillow's global setting.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        image = _open(name, data)
        _check_size(name, image.size)
        try:
            image.load()
        except Image.DecompressionBombError:
            _check_size(name, image.size, force=True)
        except (OSError, SyntaxError, ValueError, EOFError, struct.error) as exc:
            raise InputError(f"{name} is a truncated or corrupt {image.format or 'image'} ({_reason(exc)}); "
                             f"{_HINT} that is complete") from None
    image = _upright(image)
    return to_rgb(image)


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert any Pillow mode to RGB: transparency composited on white, 16/32-bit grey scaled to 0..255."""
    mode = image.mode
    if mode == "RGB":
        return image
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        # 16-bit grey (PNG and friends): 0..65535 maps linearly onto 0..255; mode I holds the same range.
        grey = np.asarray(image).astype(np.float64)
        grey = np.clip(grey, 0, 65535) / 257.0
        return Image.fromarray(np.rint(grey).astype(np.uint8), "L").convert("RGB")
    if mode == "F":
        grey = np.clip(np.asarray(image, dtype=np.float64), 0.0, 255.0)
        return Image.fromarray(np.rint(grey).astype(np.uint8), "L").convert("RGB")
    if mode in _ALPHA_MODES or (mode in ("P", "L", "RGB", "1") and "transparency" in image.info):
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return image.convert("RGB")  # 1, L, P, CMYK, YCbCr, LAB, HSV


def short_side_crop(image: Image.Image, short_side: int, crop_hw: tuple[int, int],
                    resample: Image.Resampling = Image.Resampling.BICUBIC) -> Image.Image:
    """Scale an RGB image so its short side is `short_side`, then cut the centre `crop_hw` (height, width).

    The crop is resampled straight from its box in the source, so the work follows the output, not the scaled
    image (224 x 4,480,000 pixels for a 1 x 20000 strip). Pillow's bicubic filters over the whole footprint when
    shrinking (antialiased), so big photos do not alias; reducing_gap first box-reduces very large ones by an
    integer factor, which only saves time.
    """
    width, height = image.size
    crop_h, crop_w = crop_hw
    scale = short_side / min(width, height)
    size = (max(crop_w, round(width * scale)), max(crop_h, round(height * scale)))
    left, top = (size[0] - crop_w) // 2, (size[1] - crop_h) // 2
    fx, fy = width / size[0], height / size[1]
    box = (left * fx, top * fy, (left + crop_w) * fx, (top + crop_h) * fy)
    return image.resize((crop_w, crop_h), resample, box=box, reducing_gap=3.0)


def _read_source(source: str | os.PathLike[str] | bytes | BinaryIO) -> tuple[str, bytes]:
    """Return (name for messages, raw bytes) of a path, a binary stream or a bytes object; at most MAX_IMAGE_BYTES."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        return "the image data", _within_limit("the image data", bytes(source))
    if hasattr(source, "read"):
        data = source.read(MAX_IMAGE_BYTES + 1)  # type: ignore[union-attr]
        return "the image data", _within_limit("the image data", data)
    if not isinstance(source, (str, os.PathLike)):
        raise InputError(f"cannot read an image from a {type(source).__name__}; pass a file path or bytes")
    path = Path(source)
    name = str(source)  # as the caller gave it, so that messages name the file the user passed
    try:
        with open(path, "rb") as stream:
            return name, _within_limit(name, stream.read(MAX_IMAGE_BYTES + 1))
    except FileNotFoundError:
        raise InputError(f"{path} does not exist; pass the path of an image file") from None
    except IsADirectoryError:
        raise InputError(f"{path} is a directory; pass the path of an image file") from None
    except OSError as exc:
        raise InputError(f"cannot read {path} ({_reason(exc)}); check the path and its permissions") from None


def _within_limit(name: str, data: bytes) -> bytes:
    if len(data) > MAX_IMAGE_BYTES:
        raise InputError(f"{name} is over the {MAX_IMAGE_BYTES >> 20} MiB limit for an image file; downscale or "
                         "recompress it (or check that it is an image at all)")
    return data


def _open(name: str, data: bytes) -> Image.Image:
    """Identify the container; refuse anything that is not one of ACCEPTED_FORMATS."""
    try:
        return Image.open(io.BytesIO(data), formats=ACCEPTED_FORMATS)
    except Image.DecompressionBombError as exc:
        found = re.search(r"\((\d+) pixels\)", str(exc))
        pixels = f"{int(found.group(1)) / 1e6:.0f} Mpx, " if found else ""
        raise InputError(
            f"{name} is too large to decode safely ({pixels}over the {MAX_PIXELS / 1e6:.0f} Mpx limit that guards "
            "against decompression bombs); downscale it first"
        ) from None
    except UnidentifiedImageError:
        claimed = _claimed_format(data)
        if claimed:
            raise InputError(f"{name} is a corrupt {claimed} (it starts like one but cannot be read); "
                             f"{_HINT} that is complete") from None
        other = _other_format(data)
        if other:
            raise InputError(f"{name} is a {other} image, which prosemc does not read; {_HINT}") from None
        raise InputError(f"{name} is not an image (unrecognised data starting {data[:12]!r}); {_HINT}") from None
    except (OSError, SyntaxError, ValueError, EOFError, struct.error) as exc:
        raise InputError(f"{name} is a corrupt {_claimed_format(data) or 'image'} ({_reason(exc)}); {_HINT}") from None


def _claimed_format(data: bytes) -> str | None:
    """The accepted format whose magic bytes `data` starts with, if any."""
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WebP"
    return next((kind for magic, kind in _SIGNATURES if data.startswith(magic)), None)


def _other_format(data: bytes) -> str | None:
    """Name the format if Pillow recognises the data as some image format outside ACCEPTED_FORMATS."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(io.BytesIO(data)) as other:
                return other.format
    except Exception:  # noqa: BLE001 - only used to word the message
        return None


def _check_size(name: str, size: tuple[int, int], force: bool = False) -> None:
    """Refuse images over MAX_PIXELS or MAX_ASPECT_RATIO before any pixel is decoded."""
    width, height = size
    if force or width * height > MAX_PIXELS:
        raise InputError(
            f"{name} is {width}x{height} pixels ({width * height / 1e6:.0f} Mpx), over the "
            f"{MAX_PIXELS / 1e6:.0f} Mpx limit that guards against decompression bombs; downscale it first"
        )
    if max(width, height) > MAX_ASPECT_RATIO * max(1, min(width, height)):
        raise InputError(
            f"{name} is {width}x{height} pixels, an aspect ratio over {MAX_ASPECT_RATIO}:1 that no model can "
            "use (they see a near-square view); crop it to the part that matters"
        )


def _upright(image: Image.Image) -> Image.Image:
    """Apply the EXIF orientation tag; an unreadable EXIF block leaves the image as stored."""
    try:
        return ImageOps.exif_transpose(image)
    except (SyntaxError, ValueError, OSError, KeyError, TypeError, struct.error):
        return image


def _reason(exc: BaseException) -> str:
    """The first line of an exception's message, for a one-line error."""
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
