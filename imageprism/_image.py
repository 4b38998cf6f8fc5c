"""Image loading: every input kind in, normalised pixels and a pixel-content key out.

Inputs: a path (``str`` or ``os.PathLike``), ``bytes``, a binary file object, a
``PIL.Image.Image``, or a numpy ``uint8`` array (HxW gray, HxWx3 RGB, HxWx4 RGBA).

What every dimension sees, whatever the container:

* **Orientation**: the EXIF orientation tag is applied (a corrupt EXIF block is
  ignored, as if the tag were 1).
* **Frames**: animated images (GIF, APNG, WebP, multi-page TIFF) use their first frame.
* **Alpha**: transparent pixels are composited onto **white** (LA, RGBA, PA, P with a
  transparency entry). The colour stored under a fully transparent pixel is
  invisible, so two images that look the same compare as the same. Note that
  imagehash ignores alpha instead; for images without transparency the hash
  dimension is bit-exact with imagehash.
* **Modes**: 1 (bilevel) and L stay grayscale; P, CMYK, YCbCr, LAB and HSV become
  RGB through Pillow's conversions. High-bit-depth grayscale is scaled to 8 bits:
  ``I;16*`` by ``/257`` (full 16-bit range); ``I`` (32-bit int) likewise, unless
  all values already fit in 0..255; ``F`` (float) as 0..1 when all values are
  within 0..1, else as 0..255; values outside the range are clipped.
* **Size limit**: the declared size is checked *before* decoding. More than
  ``max_pixels`` (default :data:`DEFAULT_MAX_PIXELS`) raises
  :class:`~imageprism.errors.DecompressionBombError`.
* **Byte limit**: only regular files are opened (a FIFO, socket or device is refused
  without reading it); a file, file object or ``bytes`` larger than ``max_bytes``
  (default :data:`DEFAULT_MAX_BYTES`) raises :class:`~imageprism.errors.InputTooLargeError`
  without being read whole, and so does a JPEG with more than :data:`MAX_JPEG_SCANS`
  scans (each scan is a pass over the whole image; real files have at most a few dozen).

The pixel key is a BLAKE2b digest of the normalised pixels (mode, size, bytes):
the same pixels give the same key whether they came from PNG, TIFF, lossless
WebP, numpy or PIL; any pixel change gives a different key.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import io
import os
import stat
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from imageprism.errors import DecompressionBombError, ImageLoadError, InputTooLargeError

if TYPE_CHECKING:
    from imageprism.dimensions._base import ImageRequest

__all__ = ["DEFAULT_MAX_BYTES", "DEFAULT_MAX_PIXELS", "MAX_JPEG_SCANS", "ImageInput", "Pixels", "SourceImage", "describe_input", "file_kind", "open_image"]

#: Default pixel limit (width x height), Pillow's own warning threshold (~89.5 MP):
#: a 12 MP photo uses an eighth of it; raise it with ``ImagePrism(max_pixels=...)``.
DEFAULT_MAX_PIXELS = 89_478_485

#: Default byte limit of one input (256 MiB): far above any photo, well below memory;
#: raise it with ``ImagePrism(max_bytes=...)``.
DEFAULT_MAX_BYTES = 256 * 2**20

#: Most scans (SOS markers) a JPEG may have: baseline files have 1, progressive ones about
#: 10; each scan costs a pass over the whole image, so thousands of them take minutes.
MAX_JPEG_SCANS = 100

ImageInput = Union[str, os.PathLike, bytes, bytearray, memoryview, IO[bytes], Image.Image, np.ndarray]

_ALPHA_MODES = {"LA", "La", "RGBA", "RGBa", "PA"}
_GRAY_MODES = {"1", "L"}
_HIGH_DEPTH_GRAY = {"I", "F"}


def describe_input(source: object) -> str:
    """A short, readable name of an input for error messages."""
    if isinstance(source, (str, os.PathLike)):
        return repr(os.fspath(source))
    if isinstance(source, (bytes, bytearray, memoryview)):
        return f"<{type(source).__name__} of {len(source)} bytes>"
    if isinstance(source, np.ndarray):
        return f"<numpy array shape={source.shape} dtype={source.dtype}>"
    if isinstance(source, Image.Image):
        return f"<PIL image mode={source.mode} size={source.size[0]}x{source.size[1]}>"
    name = getattr(source, "name", None)
    if isinstance(name, str):
        return f"<file object {name!r}>"
    return f"<{type(source).__name__} object>"


@dataclasses.dataclass(frozen=True)
class Pixels:
    """Decoded, normalised pixels (mode ``RGB`` or ``L``) and their content key."""

    image: Image.Image
    key: str


def pixel_key(image: Image.Image) -> str:
    """BLAKE2b-128 of mode, size and raw bytes of a normalised image."""
    digest = hashlib.blake2b(digest_size=16)
    digest.update(f"{image.mode}:{image.size[0]}x{image.size[1]}:".encode())
    digest.update(image.tobytes())
    return digest.hexdigest()


class SourceImage:
    """One input, opened (header read, size checked) but decoded only on demand.

    :meth:`pixels` returns the pixels a dimension asked for; requests that need the
    same decode share it, so an image is decoded once however many dimensions use it.
    """

    def __init__(self, label: str, *, data: bytes | None = None, image: Image.Image | None = None,
                 max_pixels: int = DEFAULT_MAX_PIXELS) -> None:
        self.label = label
        self._data = data
        self._image = image
        self._max_pixels = max_pixels
        self._memo: dict[tuple[str, int | None], Pixels] = {}
        self._lock = threading.Lock()
        self._format: str | None = None
        self._opened: Image.Image | None = None  # the header parsed here, reused by the first decode
        self._declared: tuple[int, int] | None = None  # its displayed size (a draft decode shrinks .size)
        if data is not None:
            self._opened = self._open_checked()
            self._declared = _displayed_size(self._opened)
            self._format = self._opened.format
            if self._format in ("JPEG", "MPO") and _may_have_many_scans(self._opened, data):
                _check_jpeg_scans(data, label)

    @property
    def size(self) -> tuple[int, int]:
        """``(width, height)`` of the whole image as displayed (EXIF orientation applied), from its header."""
        if self._declared is None:
            assert self._image is not None  # a SourceImage holds data (measured when opened) or an image
            self._declared = _displayed_size(self._image)
        return self._declared

    def pixels(self, request: ImageRequest) -> Pixels:
        """The normalised pixels for ``request`` (memoised)."""
        draft_side = request.min_side if self._format == "JPEG" else None
        memo_key = (request.mode, draft_side)
        with self._lock:
            found = self._memo.get(memo_key)
            if found is None:
                if draft_side is not None:
                    image = self._decode(draft=(request.mode, draft_side))
                    image = _convert(image, request.mode)
                else:
                    image = _convert(self._full(), request.mode)
                found = Pixels(image, pixel_key(image))
                self._memo[memo_key] = found
            return found

    # -- decoding -----------------------------------------------------------------

    def _full(self) -> Image.Image:
        """Full-resolution image, normalised to L or RGB (memoised)."""
        found = self._memo.get(("full", None))
        if found is None:
            found = Pixels(self._decode(draft=None), "")
            self._memo[("full", None)] = found
        return found.image

    def _open_checked(self) -> Image.Image:
        assert self._data is not None
        try:
            with _pillow_size_warnings_silenced(self._max_pixels):
                image = Image.open(io.BytesIO(self._data), formats=_safe_formats())
        except UnidentifiedImageError:
            raise ImageLoadError(f"{self.label} is not an image in a format Pillow can read") from None
        except Image.DecompressionBombError as exc:  # beyond Pillow's own hard limit
            raise self._bomb_error(str(exc)) from None
        except Exception as exc:  # decoders raise many types on malformed headers
            raise ImageLoadError(f"{self.label} could not be opened as an image: {exc}") from exc
        width, height = image.size
        if width <= 0 or height <= 0:
            raise ImageLoadError(f"{self.label} declares an empty image ({width}x{height})")
        if width * height > self._max_pixels:
            raise self._bomb_error((width, height))
        return image

    def _bomb_error(self, size: tuple[int, int] | str) -> DecompressionBombError:
        if isinstance(size, str):  # Pillow's hard limit (2 x PIL.Image.MAX_IMAGE_PIXELS) applies before ours
            return DecompressionBombError(
                f"{self.label} declares a size Pillow refuses ({size}); imageprism's max_pixels is "
                f"{self._max_pixels:,}. If the image is trusted, raise ImagePrism(max_pixels=...) and also "
                "PIL.Image.MAX_IMAGE_PIXELS (process-wide; Pillow refuses more than twice that value, whatever "
                "max_pixels says; None turns Pillow's check off and leaves max_pixels in charge)"
            )
        declared = f"{size[0]}x{size[1]} = {size[0] * size[1]:,} pixels"
        return DecompressionBombError(
            f"{self.label} declares {declared}, above the limit of {self._max_pixels:,} pixels; "
            "if the image is trusted, raise the limit with ImagePrism(max_pixels=...)"
        )

    def _decode(self, draft: tuple[str, int] | None) -> Image.Image:
        if self._image is not None:
            image = self._image
            try:  # a caller's lazily opened PIL image may be truncated, or closed
                image.load()
            except Exception as exc:
                raise ImageLoadError(f"{self.label} could not be decoded: {exc}") from exc
        else:
            image, self._opened = self._opened or self._open_checked(), None
            try:
                with _pillow_size_warnings_silenced(self._max_pixels):
                    if draft is not None:
                        _apply_draft(image, *draft)
                    image.load()
            except Exception as exc:  # truncated data, corrupt entropy, decoder errors
                raise ImageLoadError(f"{self.label} could not be decoded: {exc}") from exc
        try:
            return _normalise(_oriented(image))
        except ImageLoadError:
            raise
        except Exception as exc:
            raise ImageLoadError(f"{self.label} could not be converted to RGB: {exc}") from exc


#: formats never opened: EPS hands the file to Ghostscript, unsafe on untrusted input
EXCLUDED_FORMATS = frozenset({"EPS"})


#: tried first, as ``Image.open`` itself does (its preinit formats): a JPEG is recognised at the
#: first try instead of after every plugin without a quick check (they each parse the header)
_COMMON_FORMATS = ("BMP", "GIF", "JPEG", "PPM", "PNG")


@functools.lru_cache(maxsize=1)
def _safe_formats() -> tuple[str, ...]:
    """Every format Pillow can open, except :data:`EXCLUDED_FORMATS`; the common ones first."""
    Image.init()
    rest = [f for f in Image.OPEN if f not in _COMMON_FORMATS]
    return tuple(f for f in (*_COMMON_FORMATS, *rest) if f in Image.OPEN and f not in EXCLUDED_FORMATS)


@contextlib.contextmanager
def _pillow_size_warnings_silenced(max_pixels: int) -> Iterator[None]:
    """Pillow warns above its own limit; silence that only when ours is higher (we check first).

    ``warnings.catch_warnings`` mutates process-global state, so the default path avoids it.
    """
    limit = Image.MAX_IMAGE_PIXELS
    if limit is None or max_pixels <= limit:
        yield
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        yield


def _apply_draft(image: Image.Image, mode: str, min_side: int) -> None:
    """Ask the JPEG decoder for a reduced size whose shorter side stays >= ``min_side``."""
    width, height = image.size
    shorter = min(width, height)
    if shorter <= min_side:
        return
    scale = min_side / shorter
    requested = (max(1, int(width * scale + 0.999)), max(1, int(height * scale + 0.999)))
    image.draft(mode if image.mode in ("RGB", "L", "YCbCr") else None, requested)


def _exif_orientation(image: Image.Image) -> int:
    """The EXIF orientation tag (1 when absent, invalid or unreadable)."""
    try:
        orientation = image.getexif().get(0x0112, 1)
    except Exception:  # corrupt EXIF: treat as no orientation
        return 1
    return orientation if isinstance(orientation, int) else 1


def _displayed_size(image: Image.Image) -> tuple[int, int]:
    width, height = image.size
    return (height, width) if _exif_orientation(image) in (5, 6, 7, 8) else (width, height)


def _oriented(image: Image.Image) -> Image.Image:
    if _exif_orientation(image) == 1:
        return image
    try:
        return ImageOps.exif_transpose(image)
    except Exception:
        return image


def _normalise(image: Image.Image) -> Image.Image:
    """Any Pillow mode to ``L`` (grayscale sources) or ``RGB`` (everything else)."""
    mode = image.mode
    if mode in ("RGB", "L"):
        return image
    if mode == "1":
        return image.convert("L")
    if mode == "P" and "transparency" in image.info:
        return _composite(image.convert("RGBA"))
    if mode in _ALPHA_MODES:
        if mode in ("LA", "La"):  # Pillow converts La (premultiplied) only to LA
            return _composite(image.convert("LA").convert("RGBA")).convert("L")
        return _composite(image.convert("RGBA"))
    if mode.startswith("I;16") or mode in _HIGH_DEPTH_GRAY:
        return _high_depth_gray(image)
    return image.convert("RGB")


def _composite(rgba: Image.Image) -> Image.Image:
    background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(background, rgba).convert("RGB")


def _high_depth_gray(image: Image.Image) -> Image.Image:
    values = np.asarray(image).astype(np.float64)
    if image.mode == "F":
        present = values[~np.isnan(values)]  # np.nanmin warns on an all-NaN image
        scale = 255.0 if present.size and present.min() >= 0.0 and present.max() <= 1.0 else 1.0
    elif image.mode == "I" and values.size and values.min() >= 0 and values.max() <= 255:
        scale = 1.0
    else:
        scale = 1.0 / 257.0
    values = np.nan_to_num(values * scale, nan=0.0, posinf=255.0, neginf=0.0)
    return Image.fromarray(np.clip(np.rint(values), 0, 255).astype(np.uint8), mode="L")


def _convert(image: Image.Image, mode: str) -> Image.Image:
    return image if image.mode == mode else image.convert(mode)


def _from_array(array: np.ndarray, label: str) -> Image.Image:
    if array.dtype != np.uint8:
        raise ImageLoadError(
            f"{label}: numpy images must have dtype uint8, got {array.dtype}; "
            "convert first, e.g. np.clip(a * 255, 0, 255).astype(np.uint8) for floats in 0..1"
        )
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.ndim == 2:
        mode = "L"
    elif array.ndim == 3 and array.shape[2] in (3, 4):
        mode = "RGB" if array.shape[2] == 3 else "RGBA"
    else:
        raise ImageLoadError(
            f"{label}: numpy images must be HxW (gray), HxWx3 (RGB) or HxWx4 (RGBA), got shape {array.shape}"
        )
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise ImageLoadError(f"{label} is empty (shape {array.shape})")
    return Image.fromarray(np.ascontiguousarray(array), mode=mode)


def _may_have_many_scans(image: Image.Image, data: bytes) -> bool:
    """Whether libjpeg would decode a second scan of this JPEG: a progressive one, or one whose
    first scan lacks some of the frame's components (a sequential file with one scan holding them
    all ends at that scan: libjpeg refuses any further one). MPO files are always counted."""
    if image.format != "JPEG" or image.info.get("progressive"):
        return True
    components = _first_scan_components(data)
    return components is None or components < getattr(image, "layers", 0)


def _first_scan_components(data: bytes) -> int | None:
    """The component count of a JPEG's first SOS segment, found by walking the header's
    length-prefixed segments (so a thumbnail inside an APP segment is skipped); ``None`` when
    the header is not the plain sequence of segments this expects."""
    pos = 2  # after SOI
    while pos + 4 < len(data):
        if data[pos] != 0xFF:
            return None
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
        elif marker == 0xDA:
            return data[pos + 4]
        elif marker == 0xD9:  # the end of the image before any scan: not a header this expects
            return None
        elif 0xD0 <= marker <= 0xD8 or marker == 0x01:  # markers without a length
            pos += 2
        else:
            pos += 2 + int.from_bytes(data[pos + 2 : pos + 4], "big")
    return None


def _check_jpeg_scans(data: bytes, label: str) -> None:
    """Refuse a JPEG with more than :data:`MAX_JPEG_SCANS` scans, before decoding.

    Entropy-coded data never contains ``FF DA`` (an ``FF`` there is followed by ``00``),
    so counting that marker is a cheap upper bound of the scan count.
    """
    scans = data.count(b"\xff\xda")
    if scans > MAX_JPEG_SCANS:
        raise InputTooLargeError(
            f"{label} is a JPEG with {scans:,} scans, above the limit of {MAX_JPEG_SCANS}; real photos have at most "
            "a few dozen, and each scan costs a pass over the whole image. Re-encode it if it is trusted "
            "(e.g. as a baseline JPEG or PNG)"
        )


def _too_large(label: str, size: int | str, max_bytes: int) -> InputTooLargeError:
    return InputTooLargeError(
        f"{label} is {size if isinstance(size, str) else f'{size:,} bytes'}, above the limit of {max_bytes:,} bytes; "
        "if the file is trusted, raise the limit with ImagePrism(max_bytes=...) (CLI: --max-bytes)"
    )


def file_kind(mode: int) -> str | None:
    """What a non-regular file is (``None`` for a regular file)."""
    for test, kind in ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
                       (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a device (character special file)"),
                       (stat.S_ISBLK, "a device (block special file)")):
        if test(mode):
            return kind
    return None if stat.S_ISREG(mode) else "not a regular file"


def _read_path(path: Path, label: str, max_bytes: int) -> bytes:
    """The bytes of a regular file of at most ``max_bytes``; anything else is refused before it is read."""
    try:
        kind = file_kind(os.stat(path).st_mode)  # follows links; never opens a FIFO or device
        if kind is not None:
            raise ImageLoadError(f"{label} is {kind}, not an image file")
        # O_NONBLOCK: if the path was swapped for a FIFO since the stat, opening it does not wait
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | getattr(os, "O_CLOEXEC", 0))
        with os.fdopen(fd, "rb") as file:
            info = os.fstat(file.fileno())
            kind = file_kind(info.st_mode)
            if kind is not None:
                raise ImageLoadError(f"{label} is {kind}, not an image file")
            if info.st_size > max_bytes:
                raise _too_large(label, info.st_size, max_bytes)
            # its stated size and one byte more: a read of max_bytes would allocate that much and
            # cost 4x the read of a small file; a file that grew since the fstat reads on to the limit
            data = file.read(info.st_size + 1)
            if len(data) > info.st_size:
                data += file.read(max_bytes + 1 - len(data))
    except FileNotFoundError:
        raise ImageLoadError(f"{label} does not exist") from None
    except PermissionError:
        raise ImageLoadError(f"{label} is not readable (permission denied)") from None
    except OSError as exc:
        raise ImageLoadError(f"{label} could not be read: {exc.strerror or exc}") from exc
    except ImageLoadError:
        raise
    except ValueError as exc:  # e.g. "embedded null byte" in a file name from an untrusted list
        raise ImageLoadError(f"{label} is not a usable path: {exc}") from exc
    if len(data) > max_bytes:
        raise _too_large(label, f"more than {max_bytes:,} bytes", max_bytes)
    return data


def open_image(
    source: ImageInput | Any, *, max_pixels: int = DEFAULT_MAX_PIXELS, max_bytes: int = DEFAULT_MAX_BYTES
) -> SourceImage:
    """Open any supported input; raises :class:`ImageLoadError` naming the input on failure.

    Paths, file objects and bytes larger than ``max_bytes`` raise
    :class:`~imageprism.errors.InputTooLargeError` without being read whole.
    """
    label = describe_input(source)
    if isinstance(source, SourceImage):
        return source
    if isinstance(source, (str, os.PathLike)):
        path = os.fsdecode(source)
        if not path:
            raise ImageLoadError(f"{label} is an empty path; pass the path of an image file")
        data = _read_path(Path(path), label, max_bytes)
    elif isinstance(source, (bytes, bytearray, memoryview)):
        if len(source) > max_bytes:
            raise _too_large(label, len(source), max_bytes)
        data = bytes(source)
    elif isinstance(source, Image.Image):
        width, height = source.size
        if width * height > max_pixels:
            raise SourceImage(label, image=source, max_pixels=max_pixels)._bomb_error((width, height))
        if width == 0 or height == 0:
            raise ImageLoadError(f"{label} is empty")
        return SourceImage(label, image=source, max_pixels=max_pixels)
    elif isinstance(source, np.ndarray):
        if source.ndim >= 2 and source.shape[0] * source.shape[1] > max_pixels:  # the same limit as files
            raise SourceImage(label, max_pixels=max_pixels)._bomb_error((source.shape[1], source.shape[0]))
        return SourceImage(label, image=_from_array(source, label), max_pixels=max_pixels)
    elif callable(getattr(source, "read", None)):
        try:
            data = source.read(max_bytes + 1)
        except Exception as exc:
            raise ImageLoadError(f"{label} could not be read: {exc}") from exc
        if not isinstance(data, (bytes, bytearray)):
            raise ImageLoadError(f"{label} is a text-mode file; open it in binary mode ('rb')")
        if len(data) > max_bytes:
            raise _too_large(label, f"more than {max_bytes:,} bytes", max_bytes)
        data = bytes(data)
    else:
        raise ImageLoadError(
            f"unsupported input {label}; pass a path, bytes, a binary file object, "
            "a PIL.Image.Image or a numpy uint8 array"
        )
    if not data:
        raise ImageLoadError(f"{label} is empty (0 bytes)")
    return SourceImage(label, data=data, max_pixels=max_pixels)
