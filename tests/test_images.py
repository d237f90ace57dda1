"""load_image: every accepted format and mode comes back RGB with the right pixels; bad input is refused."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from prosemc.errors import InputError
from prosemc.models.images import MAX_PIXELS, load_image


def encode(image: Image.Image, fmt: str, **params) -> bytes:
    """Save a PIL image to bytes in the given format."""
    buffer = io.BytesIO()
    image.save(buffer, fmt, **params)
    return buffer.getvalue()


def pixel(image: Image.Image, xy: tuple[int, int]) -> tuple[int, ...]:
    return tuple(int(v) for v in image.getpixel(xy))


def test_rgb_png_roundtrip_exact(tmp_path: Path):
    array = np.random.default_rng(0).integers(0, 256, (17, 31, 3), dtype=np.uint8)
    path = tmp_path / "x.png"
    path.write_bytes(encode(Image.fromarray(array), "PNG"))
    for source in (path, str(path), path.read_bytes()):
        image = load_image(source)
        assert image.mode == "RGB" and image.size == (31, 17)
        np.testing.assert_array_equal(np.asarray(image), array)


@pytest.mark.parametrize("fmt", ["JPEG", "WEBP", "BMP", "GIF", "PNG"])
def test_each_format_decodes_to_rgb(fmt: str):
    image = Image.new("RGB", (40, 30), (200, 30, 40))
    loaded = load_image(encode(image, fmt))
    assert loaded.mode == "RGB" and loaded.size == (40, 30)
    r, g, b = pixel(loaded, (20, 15))
    assert abs(r - 200) <= 8 and abs(g - 30) <= 8 and abs(b - 40) <= 8


def test_large_and_tiny_sizes():
    assert load_image(encode(Image.new("RGB", (1, 1), (1, 2, 3)), "PNG")).size == (1, 1)
    assert load_image(encode(Image.new("L", (4000, 3000), 9), "PNG")).size == (4000, 3000)


def test_grey_and_bilevel_become_grey_rgb():
    assert pixel(load_image(encode(Image.new("L", (3, 3), 77), "PNG")), (1, 1)) == (77, 77, 77)
    assert pixel(load_image(encode(Image.new("1", (3, 3), 1), "PNG")), (1, 1)) == (255, 255, 255)


def test_palette_without_transparency():
    image = Image.new("P", (4, 4), 0)
    image.putpalette([10, 20, 30] + [0, 0, 0] * 255)
    assert pixel(load_image(encode(image, "PNG")), (0, 0)) == (10, 20, 30)


def test_rgba_transparent_pixel_is_white_and_half_alpha_blends():
    array = np.zeros((2, 2, 4), dtype=np.uint8)
    array[0, 0] = (0, 0, 0, 0)  # fully transparent black -> white
    array[0, 1] = (255, 0, 0, 255)  # opaque red stays red
    array[1, 0] = (0, 0, 0, 128)  # half-transparent black -> mid grey
    loaded = load_image(encode(Image.fromarray(array, "RGBA"), "PNG"))
    assert pixel(loaded, (0, 0)) == (255, 255, 255)
    assert pixel(loaded, (1, 0)) == (255, 0, 0)
    assert all(abs(v - 127) <= 1 for v in pixel(loaded, (0, 1)))


def test_la_transparent_is_white():
    image = Image.new("LA", (2, 1), (0, 0))
    image.putpixel((1, 0), (40, 255))
    loaded = load_image(encode(image, "PNG"))
    assert pixel(loaded, (0, 0)) == (255, 255, 255)
    assert pixel(loaded, (1, 0)) == (40, 40, 40)


@pytest.mark.parametrize("fmt", ["PNG", "GIF"])
def test_palette_with_transparency_is_white(fmt: str):
    image = Image.new("P", (2, 1), 0)
    image.putpalette([0, 0, 0, 0, 200, 0] + [0, 0, 0] * 254)
    image.putpixel((1, 0), 1)
    loaded = load_image(encode(image, fmt, transparency=0))
    assert pixel(loaded, (0, 0)) == (255, 255, 255)
    assert pixel(loaded, (1, 0)) == (0, 200, 0)


def test_webp_with_alpha_is_composited():
    image = Image.new("RGBA", (8, 8), (0, 0, 255, 0))
    loaded = load_image(encode(image, "WEBP", lossless=True))
    assert pixel(loaded, (4, 4)) == (255, 255, 255)


def test_gif_first_frame():
    frames = [Image.new("RGB", (6, 6), colour) for colour in ((255, 0, 0), (0, 0, 255))]
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:])
    assert Image.open(io.BytesIO(data)).n_frames == 2
    r, g, b = pixel(load_image(data), (3, 3))
    assert r > 200 and b < 50


def test_16bit_grey_is_scaled_not_clipped():
    array = np.array([[0, 257, 32896, 65535]], dtype=np.uint16)
    data = encode(Image.fromarray(array), "PNG")
    assert Image.open(io.BytesIO(data)).mode.startswith("I")
    loaded = np.asarray(load_image(data))
    assert loaded[0, :, 0].tolist() == [0, 1, 128, 255]
    assert (loaded[..., 0] == loaded[..., 2]).all()


def test_mode_i_is_scaled():
    image = Image.fromarray(np.array([[0, 65535, 70000]], dtype=np.int32), "I")
    from prosemc.models.images import to_rgb

    assert np.asarray(to_rgb(image))[0, :, 1].tolist() == [0, 255, 255]


def test_cmyk_jpeg():
    image = Image.new("CMYK", (16, 16), (0, 255, 255, 0))  # pure red in CMYK
    loaded = load_image(encode(image, "JPEG", quality=95))
    r, g, b = pixel(loaded, (8, 8))
    assert r > 230 and g < 30 and b < 30


def test_exif_orientation_is_applied():
    # Stored 40 wide x 20 high, red top-left corner; orientation 6 = rotate 90 degrees clockwise to display.
    image = Image.new("RGB", (40, 20), (0, 0, 255))
    image.paste((255, 0, 0), (0, 0, 10, 10))
    exif = Image.Exif()
    exif[0x0112] = 6
    loaded = load_image(encode(image, "JPEG", exif=exif, quality=95))
    assert loaded.size == (20, 40)
    # After a clockwise turn the stored top-left corner is at the top-right.
    r, _, b = pixel(loaded, (17, 2))
    assert r > 200 and b < 60
    r, _, b = pixel(loaded, (2, 2))
    assert b > 200 and r < 60


def test_empty_input_is_refused(tmp_path: Path):
    path = tmp_path / "empty.png"
    path.write_bytes(b"")
    with pytest.raises(InputError) as info:
        load_image(path)
    assert str(info.value) == f"{path} is empty; pass a JPEG, PNG, WebP, BMP or GIF file"  # the path as given
    with pytest.raises(InputError, match="is empty"):
        load_image(b"")


def test_non_image_is_refused(tmp_path: Path):
    path = tmp_path / "x.txt"
    path.write_text("hello, not a picture\n")
    with pytest.raises(InputError) as info:
        load_image(path)
    message = str(info.value)
    assert message.startswith(f"{path} is not an image (")
    assert message.endswith("; pass a JPEG, PNG, WebP, BMP or GIF file")
    assert "\n" not in message


def test_unsupported_format_is_named():
    with pytest.raises(InputError, match=r"is a TIFF image, which prosemc does not read; pass a JPEG"):
        load_image(encode(Image.new("RGB", (4, 4)), "TIFF"))


def test_missing_file_is_refused(tmp_path: Path):
    with pytest.raises(InputError, match="does not exist"):
        load_image(tmp_path / "nope.jpg")


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_truncated_image_is_refused(fmt: str):
    array = np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    data = encode(Image.fromarray(array), fmt)
    with pytest.raises(InputError, match=r"is a truncated or corrupt (PNG|JPEG|image) \(.*\); pass a JPEG"):
        load_image(data[: len(data) // 2])


def png_with_size(width: int, height: int) -> bytes:
    """A valid 1x1 PNG whose IHDR claims width x height (CRC fixed), as a decompression bomb would."""
    data = bytearray(encode(Image.new("L", (1, 1)), "PNG"))
    ihdr = 8 + 8  # signature, then length + type of the first chunk
    data[ihdr : ihdr + 8] = struct.pack(">II", width, height)
    crc = zlib.crc32(bytes(data[ihdr - 4 : ihdr + 13]))
    data[ihdr + 13 : ihdr + 17] = struct.pack(">I", crc)
    return bytes(data)


@pytest.mark.parametrize("size", [(10_000, 9_000), (60_000, 60_000)])
def test_decompression_bomb_is_refused(size: tuple[int, int]):
    assert size[0] * size[1] > MAX_PIXELS
    with pytest.raises(InputError, match=r"limit that guards against decompression bombs|too large to decode"):
        load_image(png_with_size(*size))
