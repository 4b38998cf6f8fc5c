"""A malformed-input corpus, built here (nothing downloaded), run end to end through the public API.

Every case goes through ``ImagePrism.embed``, ``compare`` (on either side) and
``embed_batch`` (``on_error="skip"`` and ``"raise"``), as a path and as bytes, with
the hash dimension and a model-backed dimension (``semantic`` with a tiny local
ONNX stand-in). Each case must give either

* a correct result: checked against a twin whose decoded pixels are known to be
  the same (e.g. an EXIF-rotated file against its pixel-rotated twin), or
* an :class:`~imageprism.ImagePrismError` subclass whose message names the input,

and must do so within :data:`TIME_LIMIT` seconds. Decompression bombs are also
checked for memory, in a subprocess, since the peak RSS of this process says
nothing once another test has used more.
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
import struct
import subprocess
import sys
import threading
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fakehub import onnx_bytes
from PIL import Image, ImageOps

from imageprism import DecompressionBombError, HashConfig, ImageLoadError, ImagePrism, ImagePrismError
from imageprism.dimensions.semantic import SemanticConfig

REPO = Path(__file__).resolve().parent.parent
# Pillow's own notices about the files here (the outcome is asserted, the notice is noise)
pytestmark = [
    pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning"),
    pytest.mark.filterwarnings("ignore:Corrupt EXIF data:UserWarning"),
]
#: seconds one case may take through one API call (a hang fails the test, it does not block it)
TIME_LIMIT = 20.0


def bounded(fn: Callable[[], Any], seconds: float = TIME_LIMIT) -> Any:
    """Run ``fn`` in a worker thread; fail the test if it has not finished after ``seconds``."""
    outcome: dict[str, Any] = {}

    def target() -> None:
        try:
            outcome["value"] = fn()
        except BaseException as exc:  # re-raised in the caller
            outcome["error"] = exc

    worker = threading.Thread(target=target, daemon=True)
    worker.start()
    worker.join(seconds)
    if worker.is_alive():
        pytest.fail(f"did not finish within {seconds} s (hang)")
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


# -- building the corpus -----------------------------------------------------------------------


def encode(image: Image.Image, fmt: str, **params: Any) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **params)
    return buffer.getvalue()


def photo(width: int = 64, height: int = 48, seed: int = 0) -> Image.Image:
    """Smooth gradients plus noise: hashes with structure, not a flat image."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    r = 255 * x / max(width - 1, 1)
    g = 255 * y / max(height - 1, 1)
    b = 128 + 60 * np.sin(x / 5.0) * np.cos(y / 7.0) + rng.normal(0, 8, (height, width))
    return Image.fromarray(np.clip(np.stack([r, g, b], axis=2), 0, 255).astype(np.uint8), "RGB")


def blocks(width: int = 64, height: int = 48, seed: int = 1) -> Image.Image:
    """Flat 8x8 blocks of random colours: a JPEG of it decodes the same whatever the block order.

    Each block has only a DC coefficient, and with 4:4:4 sampling (no chroma
    upsampling across block borders) a decoded block depends on that block alone,
    so the JPEG of a rotated copy decodes to exactly the rotated decode.
    """
    rng = np.random.default_rng(seed)
    cells = rng.integers(0, 256, (height // 8, width // 8, 3), dtype=np.uint8)
    return Image.fromarray(np.kron(cells, np.ones((8, 8, 1), np.uint8)), "RGB")


def png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def raw_png(pixels: np.ndarray, color_type: int, bit_depth: int) -> bytes:
    """A PNG written by hand (Pillow cannot write 16-bit RGB): big-endian samples, filter 0."""
    height, width = pixels.shape[:2]
    dtype = ">u2" if bit_depth == 16 else np.uint8
    rows = pixels.astype(dtype).reshape(height, -1)
    raw = b"".join(b"\x00" + row.tobytes() for row in rows)
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", zlib.compress(raw)) + png_chunk(b"IEND", b"")


def png_bomb(width: int, height: int) -> bytes:
    """69 bytes on disk declaring ``width x height`` RGBA pixels."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 6, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + png_chunk(b"IEND", b"")


def jpeg_bomb(width: int, height: int) -> bytes:
    data = bytearray(encode(photo(16, 16), "JPEG"))
    sof = data.index(b"\xff\xc0")
    struct.pack_into(">HH", data, sof + 5, height, width)
    return bytes(data)


def gif_bomb(width: int, height: int) -> bytes:
    data = bytearray(encode(photo(16, 16).convert("P"), "GIF"))
    struct.pack_into("<HH", data, 6, width, height)  # logical screen size
    return bytes(data)


def webp_bomb(width: int, height: int) -> bytes:
    data = bytearray(encode(photo(16, 16), "WEBP", lossless=True))
    assert data[12:16] == b"VP8L" and data[20] == 0x2F
    bits = struct.unpack_from("<I", data, 21)[0]
    struct.pack_into("<I", data, 21, (bits & ~((1 << 28) - 1)) | (width - 1) | ((height - 1) << 14))
    return bytes(data)


def tiff_bomb(width: int, height: int) -> bytes:
    data = bytearray(encode(photo(16, 16), "TIFF"))
    ifd = struct.unpack_from("<I", data, 4)[0]
    for k in range(struct.unpack_from("<H", data, ifd)[0]):
        entry = ifd + 2 + 12 * k
        tag, kind = struct.unpack_from("<HH", data, entry)
        if tag in (256, 257):
            struct.pack_into("<H" if kind == 3 else "<I", data, entry + 8, width if tag == 256 else height)
    return bytes(data)


BOMBS: dict[str, Callable[[int, int], bytes]] = {
    "png": png_bomb, "jpeg": jpeg_bomb, "gif": gif_bomb, "webp": webp_bomb, "tiff": tiff_bomb,
}


def with_exif_segment(jpeg: bytes, payload: bytes) -> bytes:
    """``jpeg`` with an APP1 segment holding ``payload`` right after SOI (pixels untouched)."""
    segment = b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload
    return jpeg[:2] + segment + jpeg[2:]


def corrupt_entropy(jpeg: bytes) -> bytes:
    """Overwrite bytes in the middle of the entropy-coded scan (avoiding 0xFF, a marker prefix)."""
    data = bytearray(jpeg)
    start = data.index(b"\xff\xda")
    start += 2 + struct.unpack_from(">H", data, start + 2)[0]
    end = len(data) - 2
    rng = np.random.default_rng(3)
    for pos in rng.integers(start + (end - start) // 4, end - (end - start) // 4, 40):
        data[pos] = int(rng.integers(0, 0xFF))
    return bytes(data)


def exif_bytes(orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return exif.tobytes()


@dataclasses.dataclass(frozen=True)
class Case:
    """One corpus entry. ``twin``: an input that must give the same embeddings (a correct result)."""

    name: str
    make: Callable[[Path], Any]
    expect: str  # "ok" | "error" | "either"
    error: type[ImagePrismError] = ImageLoadError
    named: str | None = None  # text the error message must contain (default: the file name)
    twin: Callable[[Path], Any] | None = None
    min_hash: float = 1.0  # the hash score the twin must reach (1.0: identical)


def file_case(name: str, data: bytes | Callable[[], bytes], expect: str = "error", **kw: Any) -> Case:
    """A case that is a file ``name`` in the corpus folder, passed by path."""

    def make(folder: Path) -> Path:
        path = folder / name
        path.write_bytes(data() if callable(data) else data)
        return path

    return Case(name, make, expect, **kw)


def file_twin(name: str, data: bytes | Callable[[], bytes]) -> Callable[[Path], Path]:
    return file_case("twin-" + name, data, "ok").make


def lazily_opened(data: bytes) -> Callable[[Path], Image.Image]:
    return lambda folder: Image.open(io.BytesIO(data))


def closed_image(folder: Path) -> Image.Image:
    image = photo()
    image.close()
    return image


def gray16_png() -> bytes:
    gray = np.asarray(photo().convert("L"), np.uint16)
    return raw_png(gray * 257, color_type=0, bit_depth=16)


def rgb16_png() -> bytes:
    return raw_png(np.asarray(photo(), np.uint16) * 257, color_type=2, bit_depth=16)


def float_tiff() -> bytes:
    gray = np.asarray(photo().convert("L"), np.float32) / 255.0
    return encode(Image.fromarray(gray, mode="F"), "TIFF")


def palette_transparent() -> tuple[bytes, bytes]:
    """A palette PNG whose index 0 is transparent, and the same composited on white."""
    indices = (np.arange(48 * 64).reshape(48, 64) // 97 % 6).astype(np.uint8)
    image = Image.fromarray(indices, "P")
    palette = [255, 0, 0, 0, 255, 0, 0, 0, 255, 10, 20, 30, 200, 100, 0, 90, 90, 90]
    image.putpalette(palette)
    colours = np.array(palette, np.uint8).reshape(-1, 3)[indices]
    colours[indices == 0] = 255
    return encode(image, "PNG", transparency=0), encode(Image.fromarray(colours, "RGB"), "PNG")


def animation(fmt: str) -> tuple[bytes, bytes]:
    """A two-frame animation and its first frame alone (lossless, so pixels are exact)."""
    first = blocks(32, 32, seed=5)
    second = ImageOps.invert(first)
    if fmt == "GIF":
        first_p = first.quantize(colors=64, method=Image.Quantize.MEDIANCUT)
        second_p = second.quantize(colors=64, method=Image.Quantize.MEDIANCUT)
        anim = encode(first_p, "GIF", save_all=True, append_images=[second_p], duration=100, loop=0)
        return anim, encode(first_p.convert("RGB"), "PNG")
    anim = encode(first, "WEBP", save_all=True, append_images=[second], duration=100, lossless=True)
    return anim, encode(first, "PNG")


def exif_twins(fmt: str, orientation: int) -> tuple[bytes, bytes]:
    """``(stored with EXIF orientation, pixels already rotated)``: the decoded pixels are the same."""
    if fmt == "JPEG":
        base = blocks()
        params: dict[str, Any] = dict(quality=90, subsampling=0)
    else:
        base = photo()
        params = {}
    rotated = ImageOps.exif_transpose(Image.open(io.BytesIO(encode(base, "PNG", exif=exif_bytes(orientation)))))
    return encode(base, fmt, exif=exif_bytes(orientation), **params), encode(rotated, fmt, **params)


def build_cases() -> list[Case]:
    good_png = encode(photo(), "PNG")
    good_jpeg = encode(photo(), "JPEG", quality=90)
    palette, palette_on_white = palette_transparent()
    gif, gif_first = animation("GIF")
    webp_anim, webp_first = animation("WEBP")
    cases = [
        file_case("empty.jpg", b"", named="empty.jpg"),
        file_case("text.jpg", b"hello, this is not a JPEG\n" * 3),
        file_case("html-page.png", b"<!doctype html><html><body>404 Not Found</body></html>"),
        file_case("truncated.jpg", good_jpeg[: len(good_jpeg) // 2]),
        file_case("truncated-header.jpg", good_jpeg[:40]),
        file_case("truncated.png", good_png[: len(good_png) // 2]),
        file_case("truncated-header.png", good_png[:30]),
        file_case("truncated.gif", gif[: len(gif) // 2]),
        file_case("truncated.webp", webp_anim[: len(webp_anim) // 2]),
        file_case("truncated-still.webp", lambda: (d := encode(photo(), "WEBP", quality=80))[: len(d) // 2]),
        file_case("signature-only.png", b"\x89PNG\r\n\x1a\n"),
        file_case("corrupt-entropy.jpg", corrupt_entropy(good_jpeg), expect="either"),
        *[file_case(f"bomb.{fmt}", build(30_000, 30_000), error=DecompressionBombError) for fmt, build in BOMBS.items()],
        file_case("bomb-under-pillow-limit.png", png_bomb(10_000, 10_000), error=DecompressionBombError),
        Case("directory.jpg", lambda folder: (folder / "directory.jpg").mkdir(exist_ok=True) or folder / "directory.jpg", "error"),
        Case("missing.png", lambda folder: folder / "missing.png", "error"),
        Case("empty path", lambda folder: "", "error", named="''"),
        Case("path with a NUL byte", lambda folder: str(folder / "a\x00b.jpg"), "error", named="a\\x00b.jpg"),
        # valid but unusual images: a correct result, checked against a twin
        file_case("1x1.png", encode(Image.new("RGB", (1, 1), (200, 30, 90)), "PNG"), "ok",
                  twin=lambda folder: np.array([[[200, 30, 90]]], np.uint8)),
        file_case("2x2.png", encode(Image.fromarray(np.arange(12, dtype=np.uint8).reshape(2, 2, 3) * 20), "PNG"), "ok",
                  twin=lambda folder: np.arange(12, dtype=np.uint8).reshape(2, 2, 3) * 20),
        file_case("1x300-strip.png", encode(photo(300, 1), "PNG"), "ok", twin=lambda folder: np.asarray(photo(300, 1))),
        file_case("gray16.png", gray16_png(), "ok", twin=file_twin("gray8.png", encode(photo().convert("L"), "PNG"))),
        file_case("rgb16.png", rgb16_png(), "ok", twin=file_twin("rgb8.png", good_png)),
        file_case("float.tiff", float_tiff(), "ok", twin=file_twin("gray8b.png", encode(photo().convert("L"), "PNG"))),
        file_case("cmyk.tiff", encode(photo().convert("CMYK"), "TIFF"), "ok", twin=file_twin("rgb8b.png", good_png)),
        file_case("cmyk.jpg", encode(photo().convert("CMYK"), "JPEG", quality=95), "ok",
                  twin=file_twin("rgb.jpg", encode(photo(), "JPEG", quality=95)), min_hash=0.9),
        file_case("palette-transparent.png", palette, "ok", twin=file_twin("palette-on-white.png", palette_on_white)),
        file_case("animated.gif", gif, "ok", twin=file_twin("gif-first-frame.png", gif_first)),
        file_case("animated.webp", webp_anim, "ok", twin=file_twin("webp-first-frame.png", webp_first)),
        file_case("corrupt-exif.jpg", with_exif_segment(good_jpeg, b"Exif\x00\x00II*\x00\xff\xff\xff\x7f garbage"), "ok",
                  twin=file_twin("no-exif.jpg", good_jpeg)),
        file_case("exif-bad-orientation.jpg", encode(photo(), "JPEG", quality=90, exif=exif_bytes(99)), "ok",
                  twin=file_twin("no-exif-b.jpg", good_jpeg)),
        # in-memory inputs
        Case("lazily opened truncated PIL image", lazily_opened(good_png[: len(good_png) // 2]), "error", named="PIL image"),
        Case("closed PIL image", closed_image, "error", named="PIL image"),
    ]
    for fmt, ext in (("PNG", "png"), ("JPEG", "jpg")):
        for orientation in range(1, 9):
            stored, rotated = exif_twins(fmt, orientation)
            cases.append(file_case(f"exif-{orientation}.{ext}", stored, "ok", twin=file_twin(f"rotated-{orientation}.{ext}", rotated)))
    return cases


CASES = build_cases()
UNSUPPORTED: list[tuple[str, object, str]] = [
    ("int", 42, "unsupported input"),
    ("None", None, "unsupported input"),
    ("float", 3.5, "unsupported input"),
    ("list of paths", ["a.jpg"], "unsupported input"),
    ("dict", {"path": "a.jpg"}, "unsupported input"),
    ("object", object(), "unsupported input"),
    ("float array", np.zeros((8, 8), np.float32), "dtype uint8"),
    ("uint16 array", np.zeros((8, 8, 3), np.uint16), "dtype uint8"),
    ("bool array", np.zeros((8, 8), bool), "dtype uint8"),
    ("object array", np.full((8, 8), None, object), "dtype uint8"),
    ("2-channel array", np.zeros((8, 8, 2), np.uint8), "shape"),
    ("1-d array", np.zeros((64,), np.uint8), "shape"),
    ("0-d array", np.array(7, np.uint8), "shape"),
    ("4-d array", np.zeros((2, 8, 8, 3), np.uint8), "shape"),
    ("empty array", np.zeros((0, 8, 3), np.uint8), "empty"),
]


# -- fixtures ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("corpus")


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("model") / "tiny-clip.onnx"
    path.write_bytes(onnx_bytes())
    return path


@pytest.fixture(scope="module", params=["hash", "hash+semantic"])
def prism(request: pytest.FixtureRequest, tiny_model: Path) -> ImagePrism:
    if request.param == "hash":
        return ImagePrism()
    return ImagePrism(dimensions=["hash", "semantic"], config={"semantic": SemanticConfig(model_path=tiny_model)})


@pytest.fixture(scope="module")
def reference(corpus: Path) -> Path:
    path = corpus / "reference.png"
    path.write_bytes(encode(photo(seed=9), "PNG"))
    return path


# -- the checks -------------------------------------------------------------------------------


def _label(case: Case, source: object) -> str:
    if case.named is not None:
        return case.named
    if isinstance(source, (str, os.PathLike)):
        return Path(source).name
    return type(source).__name__


def _assert_names_input(exc: BaseException, needle: str, case: str) -> None:
    assert isinstance(exc, ImagePrismError), f"{case}: {type(exc).__name__}: {exc}"
    assert needle in str(exc), f"{case}: the message does not name the input ({needle!r}): {exc}"


def _same_embeddings(a: dict[str, np.ndarray | None], b: dict[str, np.ndarray | None]) -> bool:
    return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def _check_error_everywhere(prism: ImagePrism, case: Case, source: object, reference: Path, needle: str) -> None:
    with pytest.raises(case.error) as info:
        bounded(lambda: prism.embed(source))
    _assert_names_input(info.value, needle, case.name)
    for pair in ((source, reference), (reference, source)):
        with pytest.raises(case.error) as info:
            bounded(lambda: prism.compare(*pair))
        _assert_names_input(info.value, needle, case.name)
    batch = bounded(lambda: prism.embed_batch([reference, source, reference], on_error="skip"))
    assert batch.embeddings[1] is None and batch.embeddings[0] is not None and batch.embeddings[2] is not None
    assert [f.index for f in batch.failures] == [1], case.name
    assert isinstance(batch.failures[0].error, case.error)
    _assert_names_input(batch.failures[0].error, needle, case.name)
    with pytest.raises(case.error):
        bounded(lambda: prism.embed_batch([reference, source], on_error="raise"))


def _check_result(prism: ImagePrism, case: Case, source: object, folder: Path) -> dict[str, np.ndarray | None]:
    embedding = bounded(lambda: prism.embed(source))
    assert set(embedding) == set(prism.dimensions)
    assert embedding["hash"] is not None and embedding["hash"].dtype == np.uint8
    again = bounded(lambda: prism.embed(source))
    assert _same_embeddings(embedding, again), f"{case.name}: not deterministic"
    assert bounded(lambda: prism.compare(source, source)).scores["hash"] == 1.0
    batch = bounded(lambda: prism.embed_batch([source, source], on_error="skip"))
    assert batch.failures == () and all(_same_embeddings(e, embedding) for e in batch.embeddings)  # type: ignore[arg-type]
    if case.twin is not None:
        twin = case.twin(folder)
        result = bounded(lambda: prism.compare(source, twin))
        assert result.scores["hash"] >= case.min_hash, f"{case.name}: {result}"
        if case.min_hash == 1.0:  # the decoded pixels are the same: every dimension agrees exactly
            assert _same_embeddings(embedding, bounded(lambda: prism.embed(twin))), case.name
    return embedding


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_corpus_case_through_the_public_api(prism: ImagePrism, case: Case, corpus: Path, reference: Path) -> None:
    source = case.make(corpus)
    sources = [source]
    if isinstance(source, Path) and source.is_file():
        sources.append(source.read_bytes())  # the same content as bytes: "<bytes of N bytes>"
    for src in sources:
        needle = _label(case, src) if not isinstance(src, bytes) else f"bytes of {len(src)} bytes"
        if case.expect == "ok":
            _check_result(prism, case, src, corpus)
        elif case.expect == "error":
            _check_error_everywhere(prism, case, src, reference, needle)
        else:  # either a deterministic result or a clean error naming the input
            try:
                _check_result(prism, case, src, corpus)
            except ImagePrismError as exc:
                _check_error_everywhere(prism, dataclasses.replace(case, error=type(exc)), src, reference, needle)


@pytest.mark.parametrize(("name", "source", "needle"), UNSUPPORTED, ids=[u[0] for u in UNSUPPORTED])
def test_unsupported_objects_and_bad_arrays(prism: ImagePrism, name: str, source: object, needle: str, reference: Path) -> None:
    case = Case(name, lambda folder: source, "error")
    label = f"numpy array shape={source.shape}" if isinstance(source, np.ndarray) else type(source).__name__
    _check_error_everywhere(prism, case, source, reference, label)
    with pytest.raises(ImageLoadError, match=needle):
        prism.embed(source)


def test_device_files_are_rejected_without_reading_forever() -> None:
    if not Path("/dev/zero").exists():
        pytest.skip("no /dev/zero on this platform")
    with pytest.raises(ImageLoadError, match="'/dev/zero' is a device"):
        bounded(lambda: ImagePrism().embed("/dev/zero"), seconds=5)


def test_arrays_and_pil_images_obey_the_pixel_limit_too() -> None:
    prism = ImagePrism(max_pixels=30 * 30)
    for source in (np.zeros((40, 40, 3), np.uint8), Image.new("RGB", (40, 40))):
        with pytest.raises(DecompressionBombError, match="40x40 = 1,600 pixels"):
            prism.embed(source)
    assert prism.embed(np.zeros((30, 30), np.uint8))["hash"] is not None


def test_all_nan_float_image_gives_a_result_without_warnings() -> None:
    image = Image.fromarray(np.full((8, 8), np.nan, np.float32), mode="F")
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        black = ImagePrism().embed(np.zeros((8, 8), np.uint8))
        assert _same_embeddings(ImagePrism().embed(image), black)


def test_premultiplied_la_image_is_read() -> None:
    la = Image.fromarray(np.stack([np.full((8, 8), 100, np.uint8), np.full((8, 8), 255, np.uint8)], axis=2), "LA")
    assert _same_embeddings(ImagePrism().embed(la.convert("La")), ImagePrism().embed(np.full((8, 8), 100, np.uint8)))


def _plain_hash() -> HashConfig:
    """Hashes of the image as it stands, without flipped, rotated or cropped variants (where the
    configuration has them): a rotation-tolerant hash could not show whether EXIF was applied."""
    fields = {f.name for f in dataclasses.fields(HashConfig)}
    return HashConfig(**{k: v for k, v in (("geometry", "none"), ("crop_scales", ()), ("rotations", ()), ("shifted_crops", ())) if k in fields})  # type: ignore[arg-type]


def test_exif_rotated_jpeg_of_a_photo_scores_near_its_pixel_rotated_twin(corpus: Path) -> None:
    """A real photo is not made of flat blocks: its re-encoded rotation differs by JPEG noise only."""
    prism = ImagePrism(config={"hash": _plain_hash()})
    for orientation in (3, 6, 8):
        base = photo(128, 96)
        rotated = ImageOps.exif_transpose(Image.open(io.BytesIO(encode(base, "PNG", exif=exif_bytes(orientation)))))
        stored = encode(base, "JPEG", quality=90, exif=exif_bytes(orientation))
        score = prism.compare(stored, encode(rotated, "JPEG", quality=90)).scores["hash"]
        unrotated = prism.compare(stored, encode(base, "JPEG", quality=90)).scores["hash"]
        assert score >= 0.95 and unrotated < 0.8, (orientation, score, unrotated)


# -- bombs: bounded memory and time, in a fresh process --------------------------------------------

_BOMB_SCRIPT = """
import json, resource, sys, time
sys.path.insert(0, {tests!r})
from test_malformed import BOMBS
from imageprism import ImagePrism, DecompressionBombError
prism = ImagePrism()
bombs = {{name: build(30_000, 30_000) for name, build in BOMBS.items()}}
prism.embed({ok!r})  # warm up: first decode allocations are not the bomb's
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
out = {{}}
for name, data in bombs.items():
    start = time.perf_counter()
    try:
        prism.embed(data)
        out[name] = "accepted"
    except DecompressionBombError:
        out[name] = time.perf_counter() - start
out["rss_growth_kib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
out["sizes"] = {{name: len(data) for name, data in bombs.items()}}
print(json.dumps(out))
"""


def test_bombs_are_rejected_before_decoding_in_bounded_memory_and_time() -> None:
    resource = pytest.importorskip("resource")
    del resource
    ok = encode(photo(), "PNG")
    script = _BOMB_SCRIPT.format(tests=str(Path(__file__).parent), ok=ok)
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert run.returncode == 0, run.stderr
    out = json.loads(run.stdout.strip().splitlines()[-1])
    for name in BOMBS:
        # 30000 x 30000 RGB(A) would need 2.7-3.6 GB decoded; the files are tiny
        assert out["sizes"][name] < 2000
        assert out[name] != "accepted", name
        assert out[name] < 0.5, f"{name} bomb took {out[name]:.2f} s to reject"
    assert out["rss_growth_kib"] < 50 * 1024, f"peak memory grew by {out['rss_growth_kib'] / 1024:.0f} MiB"


# -- the command line -----------------------------------------------------------------------------


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "imageprism", *args], capture_output=True, text=True, cwd=REPO, timeout=120)


def test_cli_reports_bad_files_in_one_line_each(corpus: Path, reference: Path) -> None:
    truncated = corpus / "cli-truncated.png"
    truncated.write_bytes(encode(photo(), "PNG")[:200])
    bomb = corpus / "cli-bomb.png"
    bomb.write_bytes(png_bomb(30_000, 30_000))

    out = cli("compare", str(truncated), str(reference))
    assert out.returncode == 1 and out.stdout == ""
    assert out.stderr.count("\n") == 1 and "cli-truncated.png" in out.stderr and "Traceback" not in out.stderr

    missing = corpus / "cli-missing.jpg"
    out = cli("embed", str(reference), str(bomb), str(missing), "--json")
    assert out.returncode == 1, out.stderr
    records = json.loads(out.stdout)  # every input is listed; the bad ones with their error, no embedding
    assert [record["image"] for record in records if "error" not in record] == [str(reference)]
    assert [record["image"] for record in records if "error" in record] == [str(bomb), str(missing)]
    assert all(set(record) == {"image", "error"} for record in records if "error" in record)
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 2 and "Traceback" not in out.stderr
    assert "cli-bomb.png" in lines[0] and "max_pixels" in lines[0]
    assert "cli-missing.jpg" in lines[1] and "does not exist" in lines[1]


def test_beyond_pillows_hard_limit_the_message_names_both_limits(monkeypatch: pytest.MonkeyPatch) -> None:
    bomb = png_bomb(15_000, 15_000)  # 225 MP: above 2 x PIL.Image.MAX_IMAGE_PIXELS (179 MP)
    with pytest.raises(DecompressionBombError) as info:
        ImagePrism(max_pixels=300_000_000).embed(bomb)
    message = str(info.value)
    assert "max_pixels is 300,000,000" in message and "PIL.Image.MAX_IMAGE_PIXELS" in message
    assert "above the limit of 300,000,000" not in message  # the old message blamed max_pixels alone
    # with Pillow's check off, max_pixels alone decides (still before decoding)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)
    with pytest.raises(DecompressionBombError, match="15000x15000 = 225,000,000 pixels, above the limit of 200,000,000"):
        bounded(lambda: ImagePrism(max_pixels=200_000_000).embed(bomb), seconds=5)


# -- nothing lost ------------------------------------------------------------------------------------


def _whole_corpus(folder: Path) -> tuple[list[object], list[str]]:
    """Every corpus input (files by path and as bytes, in-memory ones, unsupported objects) and its expectation."""
    items: list[object] = []
    expect: list[str] = []
    for case in CASES:
        source = case.make(folder)
        for src in [source, *([source.read_bytes()] if isinstance(source, Path) and source.is_file() else [])]:
            items.append(src)
            expect.append(case.expect)
    for _, source, _ in UNSUPPORTED:
        items.append(source)
        expect.append("error")
    return items, expect


def test_embed_batch_skip_accounts_for_every_input(corpus: Path, tiny_model: Path) -> None:
    items, expect = _whole_corpus(corpus)
    prism = ImagePrism(dimensions=["hash", "semantic"], config={"semantic": SemanticConfig(model_path=tiny_model)},
                       batch_size=4)  # many chunks: the decode-ahead thread and chunk edges are crossed
    batch = bounded(lambda: prism.embed_batch(items, on_error="skip"), seconds=120)
    assert len(batch.embeddings) == len(items)
    failed = {f.index: f for f in batch.failures}
    assert len(failed) == len(batch.failures)  # no input reported twice
    for i, embedding in enumerate(batch.embeddings):
        assert (embedding is None) == (i in failed), i  # a result or a failure, never both, never neither
        if expect[i] == "error":
            assert i in failed and isinstance(failed[i].error, ImageLoadError), i
            assert failed[i].input in str(failed[i].error), failed[i]  # the failure names its input
        elif expect[i] == "ok":
            assert embedding is not None and set(embedding) == {"hash", "semantic"}, i


def test_dedup_skip_accounts_for_every_input(corpus: Path) -> None:
    items, expect = _whole_corpus(corpus)
    prism = ImagePrism(batch_size=4)
    result = bounded(lambda: prism.dedup(items, threshold=0.9, on_error="skip"), seconds=120)
    labels = result.labels.tolist()
    assert len(labels) == len(items)
    failed = {f.index: f for f in result.failures}
    assert len(failed) == len(result.failures)
    members = [i for group in result.groups.values() for i in group]
    assert sorted(members + list(failed)) == list(range(len(items)))  # each input exactly once
    for i, label in enumerate(labels):
        assert (label == -1) == (i in failed), i
        if label != -1:
            assert labels[label] == label and label <= i  # grouped under an earlier representative
        if expect[i] == "error":
            assert i in failed and isinstance(failed[i].error, ImageLoadError)
            assert failed[i].input in str(failed[i].error), failed[i]
        elif expect[i] == "ok":
            assert label != -1, i
    # a file and its bytes are the same picture: they end up in one group
    for i, item in enumerate(items[:-1]):
        if isinstance(item, Path) and isinstance(items[i + 1], bytes) and labels[i] != -1:
            assert labels[i + 1] == labels[i], item.name
    with pytest.raises(ImageLoadError):
        prism.dedup(items, threshold=0.9)  # on_error="raise" (the default) stops at the first bad input
