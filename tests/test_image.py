"""Image loading: input kinds, Pillow modes, alpha, EXIF, frames, size guard, bad input, pixel key."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from imageprism import DecompressionBombError, ImageLoadError, ImagePrismError
from imageprism._image import open_image
from imageprism.dimensions import ImageRequest

RGB = ImageRequest("RGB")
GRAY = ImageRequest("L")


def rgb(source, **kw) -> Image.Image:
    return open_image(source, **kw).pixels(RGB).image


def key(source, request=RGB) -> str:
    return open_image(source).pixels(request).key


def encode(image: Image.Image, fmt: str, **params) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **params)
    return buffer.getvalue()


@pytest.fixture
def photo() -> Image.Image:
    rng = np.random.default_rng(0)
    base = np.linspace(0, 255, 48 * 64, dtype=np.float64).reshape(48, 64)
    pixels = np.stack([base, base[::-1], rng.integers(0, 256, (48, 64))], axis=2)
    return Image.fromarray(pixels.astype(np.uint8), "RGB")


# -- input kinds -----------------------------------------------------------------


def test_every_input_kind_gives_the_same_pixels(photo: Image.Image, tmp_path: Path) -> None:
    data = encode(photo, "PNG")
    path = tmp_path / "photo.png"
    path.write_bytes(data)
    expected = np.asarray(photo)
    for source in (str(path), path, data, bytearray(data), io.BytesIO(data), photo, np.asarray(photo)):
        assert np.array_equal(np.asarray(rgb(source)), expected), type(source)


def test_numpy_gray_rgb_rgba_shapes() -> None:
    gray = np.full((5, 7), 100, np.uint8)
    assert open_image(gray).pixels(GRAY).image.size == (7, 5)
    assert np.asarray(rgb(gray))[0, 0].tolist() == [100, 100, 100]
    assert np.asarray(rgb(np.full((5, 7, 1), 100, np.uint8)))[0, 0].tolist() == [100, 100, 100]
    rgba = np.zeros((5, 7, 4), np.uint8)
    rgba[..., 3] = 255
    rgba[..., 0] = 200
    assert np.asarray(rgb(rgba))[0, 0].tolist() == [200, 0, 0]


# -- modes and alpha -------------------------------------------------------------


def test_alpha_is_composited_on_white() -> None:
    # fully transparent pixels look white whatever colour they store; half transparent blend
    pixels = np.zeros((4, 4, 4), np.uint8)
    pixels[..., 0] = 255  # stored red everywhere
    pixels[:2, :, 3] = 0  # top half transparent
    pixels[2:, :, 3] = 128  # bottom half half-transparent
    out = np.asarray(rgb(Image.fromarray(pixels, "RGBA")))
    assert out[0, 0].tolist() == [255, 255, 255]
    assert out[3, 0, 0] == 255 and 120 <= out[3, 0, 1] <= 135  # red over white, half


def test_hidden_colour_under_transparency_does_not_change_key() -> None:
    a = np.zeros((4, 4, 4), np.uint8)
    b = a.copy()
    b[..., :3] = 77  # different colour, still fully transparent
    assert key(Image.fromarray(a, "RGBA")) == key(Image.fromarray(b, "RGBA"))


@pytest.mark.parametrize("mode", ["1", "L", "LA", "P", "RGB", "RGBA", "CMYK", "YCbCr", "I;16", "I", "F"])
def test_every_mode_normalises_to_rgb_or_gray(mode: str, photo: Image.Image) -> None:
    image = photo.convert(mode) if mode not in ("I;16", "I", "F") else photo.convert("L").convert(mode)
    out = rgb(image)
    assert out.mode == "RGB" and out.size == photo.size
    assert open_image(image).pixels(GRAY).image.mode == "L"


def test_palette_with_transparency_uses_white_for_the_transparent_index() -> None:
    image = Image.new("P", (4, 4), 0)
    image.putpalette([10, 20, 30, 200, 0, 0] + [0] * 762)
    image.putpixel((0, 0), 1)
    image.info["transparency"] = 0
    out = np.asarray(rgb(encode_roundtrip(image, "PNG")))
    assert out[1, 1].tolist() == [255, 255, 255]  # index 0 is transparent
    assert out[0, 0].tolist() == [200, 0, 0]


def encode_roundtrip(image: Image.Image, fmt: str) -> bytes:
    return encode(image, fmt, transparency=image.info.get("transparency"))


def test_sixteen_bit_gray_scales_full_range_to_8_bits() -> None:
    values = np.array([[0, 257 * 128, 65535]], dtype=np.uint16)
    image = Image.fromarray(values)
    assert image.mode == "I;16"
    out = np.asarray(open_image(encode(image, "PNG")).pixels(GRAY).image)
    assert out.tolist() == [[0, 128, 255]]


def test_float_images_in_unit_range_scale_to_255() -> None:
    image = Image.fromarray(np.array([[0.0, 0.5, 1.0]], dtype=np.float32), "F")
    assert np.asarray(open_image(image).pixels(GRAY).image).tolist() == [[0, 128, 255]]


def test_cmyk_jpeg_loads_as_rgb(photo: Image.Image) -> None:
    out = rgb(encode(photo.convert("CMYK"), "JPEG", quality=95))
    assert out.mode == "RGB" and out.size == photo.size


def test_animated_gif_uses_first_frame() -> None:
    frames = [Image.new("RGB", (8, 8), color) for color in ((255, 0, 0), (0, 0, 255))]
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100)
    assert np.asarray(rgb(data))[0, 0].tolist() == [255, 0, 0]


# -- EXIF orientation ------------------------------------------------------------


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_is_applied(orientation: int, photo: Image.Image) -> None:
    from PIL import ImageOps

    exif = Image.Exif()
    exif[0x0112] = orientation
    stored = encode(photo, "PNG", exif=exif.tobytes())
    shown = ImageOps.exif_transpose(Image.open(io.BytesIO(stored)))
    assert np.array_equal(np.asarray(rgb(stored)), np.asarray(shown.convert("RGB")))
    if orientation in (5, 6, 7, 8):
        assert rgb(stored).size == (photo.height, photo.width)


def test_corrupt_exif_is_ignored(photo: Image.Image) -> None:
    data = bytearray(encode(photo, "JPEG", quality=95, exif=b"Exif\x00\x00II*\x00\xff\xff\xff\xff garbage"))
    assert rgb(bytes(data)).size == photo.size


# -- size guard ------------------------------------------------------------------


def png_header_only(width: int, height: int) -> bytes:
    """A tiny PNG that declares a huge size (a decompression bomb on disk)."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b"")


def test_bomb_is_rejected_before_decoding_with_size_and_setting() -> None:
    with pytest.raises(DecompressionBombError) as info:
        open_image(png_header_only(12_000, 12_000))
    message = str(info.value)
    assert "12000x12000" in message and "max_pixels" in message


def test_bomb_beyond_pillow_hard_limit_is_rejected() -> None:
    with pytest.raises(DecompressionBombError, match="max_pixels"):
        open_image(png_header_only(100_000, 100_000))


def test_pixel_limit_is_configurable(photo: Image.Image) -> None:
    data = encode(photo, "PNG")
    with pytest.raises(DecompressionBombError, match="64x48"):
        open_image(data, max_pixels=1000)
    with pytest.raises(DecompressionBombError):
        open_image(photo, max_pixels=1000)
    assert rgb(data, max_pixels=64 * 48).size == (64, 48)


# -- bad input -------------------------------------------------------------------


def test_bad_inputs_raise_image_load_error_naming_the_input(photo: Image.Image, tmp_path: Path) -> None:
    png = encode(photo, "PNG")
    jpeg = encode(photo, "JPEG", quality=90)
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "text.jpg").write_text("hello, not an image")
    (tmp_path / "trunc.png").write_bytes(png[: len(png) // 2])
    (tmp_path / "trunc.jpg").write_bytes(jpeg[: len(jpeg) // 2])
    cases = {
        str(tmp_path / "empty.jpg"): "empty.jpg",
        str(tmp_path / "text.jpg"): "text.jpg",
        str(tmp_path / "trunc.png"): "trunc.png",
        str(tmp_path / "trunc.jpg"): "trunc.jpg",
        str(tmp_path / "missing.png"): "missing.png",
        str(tmp_path): str(tmp_path.name),
        b"": "bytes of 0 bytes",
        b"\x89PNG garbage": "bytes of 12 bytes",
    }
    for source, named in cases.items():
        with pytest.raises(ImageLoadError) as info:
            open_image(source).pixels(RGB)
        assert named in str(info.value), str(info.value)
        assert isinstance(info.value, ValueError) and isinstance(info.value, ImagePrismError)


@pytest.mark.parametrize("source", [42, None, 3.5, ["a.jpg"], object()])
def test_unsupported_objects(source: object) -> None:
    with pytest.raises(ImageLoadError, match="unsupported input"):
        open_image(source)


@pytest.mark.parametrize(
    ("array", "needle"),
    [
        (np.zeros((4, 4), np.float32), "dtype uint8"),
        (np.zeros((4, 4), np.uint16), "dtype uint8"),
        (np.zeros((4, 4, 2), np.uint8), "shape"),
        (np.zeros((4,), np.uint8), "shape"),
        (np.zeros((0, 4, 3), np.uint8), "empty"),
    ],
)
def test_bad_numpy_arrays(array: np.ndarray, needle: str) -> None:
    with pytest.raises(ImageLoadError, match=needle):
        open_image(array)


def test_text_mode_file_object_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "x.txt"
    path.write_text("abc")
    with path.open("r") as handle, pytest.raises(ImageLoadError, match="binary mode"):
        open_image(handle)


# -- pixel key -------------------------------------------------------------------


def test_same_pixels_same_key_across_containers(photo: Image.Image) -> None:
    keys = {
        key(encode(photo, "PNG")),
        key(encode(photo, "TIFF")),
        key(encode(photo, "WEBP", lossless=True)),
        key(encode(photo, "BMP")),
        key(np.asarray(photo)),
        key(photo),
    }
    assert len(keys) == 1


def test_any_pixel_change_changes_the_key(photo: Image.Image) -> None:
    pixels = np.asarray(photo).copy()
    base = key(pixels)
    for y, x, c in [(0, 0, 0), (47, 63, 2), (20, 30, 1)]:
        changed = pixels.copy()
        changed[y, x, c] ^= 1
        assert key(changed) != base
    assert key(pixels[:, :-1]) != base  # same bytes prefix, different size


def test_jpeg_reduced_decode_keeps_short_side_and_is_faster_shape() -> None:
    big = Image.fromarray(np.random.default_rng(1).integers(0, 256, (1024, 1536, 3), dtype=np.uint8))
    data = encode(big, "JPEG", quality=90)
    reduced = open_image(data).pixels(ImageRequest("L", min_side=64)).image
    assert reduced.mode == "L" and min(reduced.size) >= 64 and reduced.size[0] < 1536
    full = open_image(data).pixels(ImageRequest("L")).image
    assert full.size == (1536, 1024)


def test_eps_is_never_opened() -> None:
    """EPS would be handed to Ghostscript: refused like an unknown format, whatever is installed."""
    eps = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n%%EOF\n"
    with pytest.raises(ImageLoadError, match="not an image in a format"):
        open_image(eps)
