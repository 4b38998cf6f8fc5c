"""The parity photos: shared dev images and inputs derived from them, reproducibly.

Used by ``tests/parity_generate.py`` (to compute the reference vectors) and by
``tests/test_parity.py`` (to feed imageprism the very same pixels). Every derived
input is made with plain numpy slicing/repeating, so it is bit-identical on every
machine; :func:`pixel_digest` lets the test confirm that.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image


def _load(folder: Path, name: str) -> np.ndarray:
    with Image.open(folder / name) as im:
        return np.asarray(im).copy()


def _landscape(folder: Path) -> np.ndarray:
    return _load(folder, "skimage_coffee.png")  # 600x400 RGB


def _landscape_odd(folder: Path) -> np.ndarray:
    return _load(folder, "skimage_chelsea.png")  # 451x300: truncated and rounded long edges differ


def _portrait(folder: Path) -> np.ndarray:
    return _load(folder, "skimage_motorcycle_left.png").transpose(1, 0, 2).copy()  # 500x741


def _square(folder: Path) -> np.ndarray:
    return _load(folder, "kodim01.png")  # 500x500


def _tiny(folder: Path) -> np.ndarray:
    return _load(folder, "skimage_astronaut.png")[::9, ::12].copy()  # 43x57: upsampled


def _large(folder: Path) -> np.ndarray:
    big = np.repeat(np.repeat(_load(folder, "kodim05.png"), 4, axis=0), 5, axis=1)
    return big[:, :2431].copy()  # 2431x2000


def _grayscale(folder: Path) -> np.ndarray:
    return _load(folder, "skimage_coins.png")  # 384x303, mode L (2-D array)


def _grayscale_square(folder: Path) -> np.ndarray:
    return _load(folder, "skimage_camera.png")  # 512x512, mode L


def _rgba(folder: Path) -> np.ndarray:
    rgb = _load(folder, "kodim23.png")
    h, w = rgb.shape[:2]
    alpha = np.tile(np.linspace(0, 255, w).round().astype(np.uint8), (h, 1))
    alpha[h // 3 : h // 2, :] = 255  # an opaque band
    alpha[: h // 8, : w // 8] = 0  # a fully transparent corner
    return np.dstack([rgb, alpha])  # 500x500 RGBA, composited onto white


#: name -> how the input is made from the dev-images folder (the order of the reference arrays)
PARITY_INPUTS: dict[str, Callable[[Path], np.ndarray]] = {
    "landscape": _landscape,
    "landscape_odd": _landscape_odd,
    "portrait": _portrait,
    "square": _square,
    "tiny": _tiny,
    "large": _large,
    "grayscale": _grayscale,
    "grayscale_square": _grayscale_square,
    "rgba": _rgba,
}


def parity_inputs(folder: Path) -> dict[str, np.ndarray]:
    """Every parity input as a ``uint8`` array (HxW gray, HxWx3 RGB or HxWx4 RGBA)."""
    return {name: make(folder) for name, make in PARITY_INPUTS.items()}


def pixel_digest(array: np.ndarray) -> str:
    """sha256 of shape and bytes: identical pixels, identical digest."""
    digest = hashlib.sha256(repr(array.shape).encode())
    digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()
