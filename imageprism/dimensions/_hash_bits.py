"""Bits of the hash dimension from small pixel arrays, and the resampling that feeds them.

One home for each algorithm's rule (pHash, dHash, aHash), for the exact flips and
90-degree rotations of pixel arrays and DCT blocks, and for the windows (centre crops,
shifted crops, small rotations) that :mod:`imageprism.dimensions.hash` samples from
one small grayscale grid.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

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


@functools.lru_cache(maxsize=64)
def _rotation_taps(size: int, degrees: float, aspect: float) -> tuple[np.ndarray, np.ndarray]:
    """Bilinear taps of :func:`rotate_grid`: flat source indices and weights, each (4, size * size)."""
    theta = np.deg2rad(degrees)
    centred = np.arange(size) + 0.5 - size / 2.0
    u, v = np.meshgrid(centred * aspect, centred)  # image units: one grid row of height
    src_u = (np.cos(theta) * u - np.sin(theta) * v) / aspect + size / 2.0 - 0.5
    src_v = np.sin(theta) * u + np.cos(theta) * v + size / 2.0 - 0.5
    u0, v0 = np.floor(src_u).astype(np.intp), np.floor(src_v).astype(np.intp)
    fu, fv = src_u - u0, src_v - v0
    indices, weights = [], []
    for du, dv, weight in ((0, 0, (1 - fu) * (1 - fv)), (1, 0, fu * (1 - fv)), (0, 1, (1 - fu) * fv), (1, 1, fu * fv)):
        uu, vv = u0 + du, v0 + dv
        inside = (uu >= 0) & (uu < size) & (vv >= 0) & (vv < size)  # outside: black
        indices.append((np.clip(vv, 0, size - 1) * size + np.clip(uu, 0, size - 1)).ravel())
        weights.append(np.where(inside, weight, 0.0).ravel())
    return np.stack(indices), np.stack(weights)


def rotate_grid(grid: np.ndarray, degrees: float, aspect: float) -> np.ndarray:
    """The square ``grid`` of an image with width / height ``aspect``, rotated counter-clockwise
    about its centre by ``degrees`` on the same canvas, the uncovered corners black.

    What ``Image.rotate(degrees)`` does to the image itself, sampled bilinearly at the
    grid's resolution; the aspect keeps the rotation a rotation of the image, not of the
    squeezed grid (rounded to 4 significant digits, so that the taps of common shapes are reused).
    """
    size = grid.shape[-1]
    indices, weights = _rotation_taps(size, float(degrees), float(f"{aspect:.4g}"))
    return (grid.ravel()[indices] * weights).sum(axis=0).reshape(size, size)


def window_sampler(grids: np.ndarray, windows: Sequence[tuple[int, Window]]) -> Callable[[int, int, int | None], np.ndarray]:
    """``sample(height, width, dct_keep)``: each ``(grid index, window)`` of the stack ``grids``
    (G, S, S) resampled to height x width, shape (len(windows), height, width); with
    ``dct_keep`` the top-left block of its 2-D DCT instead. Windows sorted by grid run fastest."""
    size = grids.shape[-1]
    runs: list[tuple[int, tuple[tuple[float, float], ...], tuple[tuple[float, float], ...]]] = []
    for g, (left, right, top, bottom) in windows:
        if not runs or runs[-1][0] != g:
            runs.append((g, (), ()))
        runs[-1] = (g, (*runs[-1][1], (top, bottom)), (*runs[-1][2], (left, right)))

    def sample(height: int, width: int, dct_keep: int | None = None) -> np.ndarray:
        parts = []
        for g, rows, cols in runs:
            r = window_resamplers(size, rows, height, dct_keep)
            c = window_resamplers(size, cols, width, dct_keep)
            left = (r.reshape(-1, size) @ grids[g]).reshape(r.shape)  # one product for every window of this grid
            parts.append(left @ np.swapaxes(c, 1, 2))
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    return sample


def window_bits(
    sample: Callable[[int, int, int | None], np.ndarray], algorithms: Sequence[str], n: int, transforms: Sequence[str],
) -> np.ndarray:
    """(windows, transforms, algorithms, n * n) bits of every window in every transform."""
    per_algorithm = []
    for algorithm in algorithms:
        if algorithm == "phash":
            # the DCT block of the 4n x 4n resample in one product: (basis R) grid (basis R)^T
            low = sample(4 * n, 4 * n, n)
            bits = phash_from_dct(np.stack([transform_dct(low, t) for t in transforms], axis=1))
        elif algorithm == "dhash":
            wide = sample(n, n + 1, None)
            tall = sample(n + 1, n, None) if any(TRANSFORMS[t][0] for t in transforms) else wide
            bits = dhash_from(np.stack([transform_pixels(tall if TRANSFORMS[t][0] else wide, t) for t in transforms], axis=1))
        else:
            square = sample(n, n, None)
            bits = ahash_from(np.stack([transform_pixels(square, t) for t in transforms], axis=1))
        per_algorithm.append(bits.reshape(len(bits), len(transforms), n * n))
    return np.stack(per_algorithm, axis=2)
