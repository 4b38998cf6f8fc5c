"""The per-image computation of the variant hashes, as it was before the batched path.

Kept verbatim (from ``imageprism/dimensions/_hash_bits.py`` and ``hash.py`` at commit
dc2f494) as the reference that :mod:`imageprism.dimensions._hash_batch` must equal bit for
bit: users' stored hashes and the robustness tuning were made with it.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

import numpy as np
from PIL import Image

from imageprism.dimensions._hash_bits import (
    TRANSFORMS,
    Window,
    ahash_from,
    dhash_from,
    phash_from_dct,
    transform_dct,
    transform_pixels,
    window_resamplers,
)
from imageprism.dimensions.hash import HashConfig


def reference_hashes(gray: Image.Image, config: HashConfig) -> np.ndarray:
    """The embedding of a grayscale image under a variant configuration, one image at a time."""
    n = config.hash_size
    size = 8 * n  # grid side: the smallest allowed crop (0.25) still spans 2n samples
    # a box (area-average) filter is enough here: every hash resamples the grid again with Lanczos
    grid = np.asarray(gray.resize((size, size), Image.Resampling.BOX), dtype=np.float64)
    aspect = gray.width / gray.height
    grids = np.stack([grid, *(rotate_grid(grid, degrees, aspect) for degrees in config.rotations)])
    windows, picked, transform_of = _variant_plan(config)
    every = window_bits(window_sampler(grids, windows), config.algorithms, n, config.transforms)
    return np.packbits(every[picked, transform_of].reshape(-1, n * n), axis=-1)


@functools.lru_cache(maxsize=32)
def _variant_plan(config: HashConfig) -> tuple[tuple[tuple[int, Window], ...], list[int], list[int]]:
    """The distinct (grid, window) pairs to sample, sorted by grid (0: the unrotated grid,
    ``k``: rotation ``k - 1``), and for each variant its window's and its transform's position."""
    keys = [
        (config.rotations.index(v.degrees) + 1 if v.degrees else 0, (
            0.5 + v.shift[0] - v.scale / 2.0, 0.5 + v.shift[0] + v.scale / 2.0,
            0.5 + v.shift[1] - v.scale / 2.0, 0.5 + v.shift[1] + v.scale / 2.0,
        ))
        for v in config.variants
    ]
    windows = tuple(sorted(dict.fromkeys(keys), key=lambda key: key[0]))  # distinct; stable within a grid
    return windows, [windows.index(k) for k in keys], [config.transforms.index(v.transform) for v in config.variants]


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
