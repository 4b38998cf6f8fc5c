"""Bits of the hash dimension from small pixel arrays, and the resampling that feeds them.

One home for each algorithm's rule (pHash, dHash, aHash), for the exact flips and
90-degree rotations of pixel arrays and DCT blocks, and for the resamplers of the windows
(centre crops, shifted crops, small rotations) that :mod:`imageprism.dimensions._hash_batch`
samples from one small grayscale grid.
"""

from __future__ import annotations

import functools

import numpy as np

#: geometric transform name -> (transpose, then flip top-bottom, then flip left-right)
TRANSFORMS: dict[str, tuple[bool, bool, bool]] = {
    "identity": (False, False, False),
    "mirror": (False, False, True),
    "flip": (False, True, False),
    "rot180": (False, True, True),
    "transpose": (True, False, False),
    "rot90": (True, True, False),  # counter-clockwise, like np.rot90
    "rot270": (True, False, True),
    "transverse": (True, True, True),
}

#: a window of the grid: (left, right, top, bottom) as fractions of its width and height
Window = tuple[float, float, float, float]


def transform_pixels(x: np.ndarray, name: str) -> np.ndarray:
    """A flip or rotation of pixel arrays (the last two axes)."""
    transpose, flip_rows, flip_cols = TRANSFORMS[name]
    x = np.swapaxes(x, -1, -2) if transpose else x
    return x[..., ::-1 if flip_rows else 1, ::-1 if flip_cols else 1]


def transform_dct(low: np.ndarray, name: str) -> np.ndarray:
    """The same flip or rotation on blocks of 2-D DCT-II coefficients (exact, no new DCT).

    Reversing an axis negates that axis's odd frequencies; transposing the pixels
    transposes the coefficients.
    """
    transpose, flip_rows, flip_cols = TRANSFORMS[name]
    low = np.swapaxes(low, -1, -2) if transpose else low
    signs = 1.0 - 2.0 * (np.arange(low.shape[-1]) % 2)
    return low * (signs[:, None] if flip_rows else 1.0) * (signs[None, :] if flip_cols else 1.0)


@functools.lru_cache(maxsize=16)
def dct_rows(size: int, keep: int) -> np.ndarray:
    """First ``keep`` rows of the unnormalised type-II DCT matrix (scipy's convention)."""
    k = np.arange(keep)[:, None]
    n = np.arange(size)[None, :]
    return 2.0 * np.cos(np.pi * k * (2 * n + 1) / (2 * size))


def phash_from(pixels: np.ndarray, n: int) -> np.ndarray:
    """Bits above the median of the top-left n x n block of the 2-D DCT of a 4n x 4n array."""
    basis = dct_rows(pixels.shape[0], n)
    return phash_from_dct(basis @ pixels @ basis.T)


def phash_from_dct(low: np.ndarray) -> np.ndarray:
    """Bits above the median of each n x n block of DCT coefficients (the last two axes)."""
    low = np.where(np.abs(low) < 1e-6, 0.0, low)  # scipy yields exact zeros on flat input; the matrix form leaves ~1e-13
    flat = low.reshape(*low.shape[:-2], -1)
    half = flat.shape[-1] // 2
    if flat.shape[-1] % 2:
        median = np.partition(flat, half, axis=-1)[..., half]
    else:  # the mean of the two middle values, as np.median
        middle = np.partition(flat, (half - 1, half), axis=-1)
        median = (middle[..., half - 1] + middle[..., half]) / 2.0
    return low > median[..., None, None]


def dhash_from(pixels: np.ndarray) -> np.ndarray:
    """Right neighbour brighter than left, on n x (n + 1) arrays."""
    return pixels[..., :, 1:] > pixels[..., :, :-1]


def ahash_from(pixels: np.ndarray) -> np.ndarray:
    """Pixels above the mean, on n x n arrays."""
    return pixels > pixels.mean(axis=(-2, -1), keepdims=True)


# -- resampling windows of a small grid ------------------------------------------------


@functools.lru_cache(maxsize=256)
def resampler(size: int, lo: float, hi: float, out: int) -> np.ndarray:
    """Lanczos-3 weights (out x size) resampling the window [lo, hi) of ``size`` pixels to ``out``.

    Antialiased like Pillow (the kernel widens by the reduction factor), clipped to the
    image and normalised per output; symmetric windows give mirror-symmetric weights.
    """
    step = (hi - lo) / out
    support = max(step, 1.0)
    centres = lo + (np.arange(out) + 0.5) * step
    x = (np.arange(size) + 0.5)[None, :] - centres[:, None]
    weights = np.sinc(x / support) * np.sinc(x / support / 3.0)
    weights[np.abs(x / support) >= 3.0] = 0.0
    return weights / weights.sum(axis=1, keepdims=True)


@functools.lru_cache(maxsize=128)
def window_resamplers(size: int, spans: tuple[tuple[float, float], ...], out: int, dct_keep: int | None) -> np.ndarray:
    """(windows, out or dct_keep, size): each span's resampler (fractions of the side),
    optionally composed with the DCT."""
    stack = np.stack([resampler(size, size * lo, size * hi, out) for lo, hi in spans])
    return stack if dct_keep is None else dct_rows(out, dct_keep) @ stack
