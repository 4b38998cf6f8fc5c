"""The variant hashes of many images at once: a few matrix products per batch, not per image.

Every variant's pre-threshold values are linear in the image's small grayscale grid
(the rotations gather it bilinearly; centre, shifted and rotated windows resample it
with Lanczos weights, composed with the DCT for pHash), so a batch of ``B`` grids goes
through one product per distinct row resampler (``R @ [G_1 ... G_B]``) and one per
window and algorithm (``(R G_b) @ C^T`` for every ``b`` at once), then the thresholds.

The hashes are bit for bit those of the per-image computation this replaced (kept in
``tests/hash_reference.py``; ``tests/test_hash_batch.py`` compares them on random images
and photos): every value goes through the same floating-point operations in the same
order. The resamplers are the same arrays; BLAS accumulates each dot product over the
grid's side alike whatever the other dimensions of the product; the rotation's
coordinates, weights and sums and the thresholds are elementwise or per block. Only the
Python around them runs once per batch. A change of rounding would change hashes:
in flat areas (a white background) neighbouring values are equal up to rounding, and
the thresholds read the rounding.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import threading
from collections.abc import Sequence

import numpy as np
from PIL import Image

from imageprism._math import ONE_BLAS_THREAD
from imageprism.dimensions import _hash_bits as hb

__all__ = ["VariantPlan", "rotate_grids", "variant_bits", "variant_grid", "variant_hashes"]

#: row products are cut at multiples of this many rows: BLAS kernels compute blocks of 4, 8 or 16
#: rows alike wherever the block sits, and the last rows of a product (beyond a whole block) in
#: another order, so each row must stay as far from the end of its product as it was
_ALIGN = 16


@dataclasses.dataclass(frozen=True)
class _Sample:
    """Where a window's block for one shape comes from: rows ``offset : offset + height`` of
    first product ``product`` (``R G``), then times ``columns`` (``C^T``, ``(size, width)``)."""

    product: int
    offset: int
    height: int
    columns: np.ndarray


@dataclasses.dataclass(frozen=True)
class VariantPlan:
    """What to compute for a configuration, fixed once: the windows of each grid, their
    resamplers, and for each variant its window and transform.

    ``windows``: distinct ``(grid, window)`` pairs (grid 0: the unrotated grid, ``k``:
    rotation ``k - 1``), sorted by grid; ``variants``: ``(window index, transform)`` per
    variant, in embedding order.
    """

    size: int
    n: int
    algorithms: tuple[str, ...]
    rotations: tuple[float, ...]
    windows: tuple[tuple[int, hb.Window], ...]
    variants: tuple[tuple[int, str], ...]

    @classmethod
    def build(
        cls, n: int, algorithms: tuple[str, ...], rotations: tuple[float, ...],
        variants: Sequence[tuple[float, str, float, tuple[float, float]]],
    ) -> VariantPlan:
        """The plan for hashes of ``n * n`` bits and variants ``(scale, transform, degrees, shift)``
        (see :class:`~imageprism.dimensions.hash.HashVariant`); rotation ``k`` samples grid ``k + 1``."""
        keys = [
            (rotations.index(degrees) + 1 if degrees else 0, (
                0.5 + shift[0] - scale / 2.0, 0.5 + shift[0] + scale / 2.0,
                0.5 + shift[1] - scale / 2.0, 0.5 + shift[1] + scale / 2.0,
            ))
            for scale, _, degrees, shift in variants
        ]
        windows = tuple(sorted(dict.fromkeys(keys), key=lambda key: key[0]))  # distinct; stable within a grid
        return cls(
            size=8 * n, n=n, algorithms=algorithms, rotations=rotations, windows=windows,
            variants=tuple((windows.index(k), v[1]) for k, v in zip(keys, variants)),
        )

    def shape(self, algorithm: str, transform: str) -> str:
        """The block an algorithm reads for a transform: ``phash`` (DCT), ``wide`` or ``tall``
        (dHash, n x (n + 1) or its transpose), ``square`` (aHash)."""
        if algorithm == "dhash":
            return "tall" if hb.TRANSFORMS[transform][0] else "wide"
        return "phash" if algorithm == "phash" else "square"

    @functools.cached_property
    def _products(self) -> tuple[list[tuple[int, np.ndarray]], dict[tuple[int, str], _Sample]]:
        """The first products, ``(grid, R)``: segments of the row resamplers of every window of a
        grid stacked as the per-image computation stacked them; and each ``(window, shape)``'s
        :class:`_Sample`. The resamplers are the very arrays the per-image computation used."""
        size, n = self.size, self.n
        needed: dict[int, set[str]] = {}
        for w, t in self.variants:
            needed.setdefault(w, set()).update(self.shape(a, t) for a in self.algorithms)
        spans: dict[int, tuple[list[tuple[float, float]], list[tuple[float, float]]]] = {}
        first: dict[int, int] = {}
        for w, (g, (left, right, top, bottom)) in enumerate(self.windows):
            rows, cols = spans.setdefault(g, ([], []))
            rows.append((top, bottom))
            cols.append((left, right))
            first.setdefault(g, w)
        out = {"phash": (4 * n, 4 * n, n), "wide": (n, n + 1, None), "tall": (n + 1, n, None), "square": (n, n, None)}
        products: list[tuple[int, np.ndarray]] = []
        samples: dict[tuple[int, str], _Sample] = {}
        for g, (row_spans, col_spans) in spans.items():
            for shapes in (("phash",), ("wide", "square"), ("tall",)):  # dHash's and aHash's rows are equal
                resampled, _, keep = out[shapes[0]]
                height = keep or resampled  # rows per window: the DCT block's, else the resampled ones
                local = [i for i in range(len(row_spans)) if needed.get(first[g] + i, set()) & set(shapes)]
                if not local:
                    continue
                stacked = hb.window_resamplers(size, tuple(row_spans), resampled, keep).reshape(-1, size)
                for start, stop in _segments([(i * height, (i + 1) * height) for i in local], len(stacked)):
                    products.append((g, np.ascontiguousarray(stacked[start:stop])))
                    for i in local:
                        for shape in set(shapes) & needed[first[g] + i]:
                            if start <= i * height < stop:
                                columns = hb.window_resamplers(size, tuple(col_spans), out[shape][1], out[shape][2])[i]
                                samples[first[g] + i, shape] = _Sample(len(products) - 1, i * height - start, height, np.ascontiguousarray(columns.T))
        return products, samples


def _segments(ranges: list[tuple[int, int]], total: int) -> list[tuple[int, int]]:
    """Row ranges of a product of ``total`` rows widened to start at a multiple of :data:`_ALIGN`
    and stop at one (or at ``total``), merged: each row keeps its place in its block."""
    merged: list[tuple[int, int]] = []
    for start, stop in sorted(ranges):
        start, stop = start - start % _ALIGN, min(total, -(-stop // _ALIGN) * _ALIGN)
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], stop))
        else:
            merged.append((start, stop))
    return merged


@functools.lru_cache(maxsize=None)
def _rows_stack(height: int, width: int) -> bool:
    """Whether ``(B * height, size) @ (size, width)`` gives each image's rows the bits of its own
    ``(height, size) @ (size, width)`` here: true when BLAS's row block divides ``height``.
    Checked once on random numbers (a different order of accumulation shows in the last bits)."""
    rng = np.random.default_rng(0)
    left, right = rng.random((16, height, 64)), rng.random((64, width))
    return bool(np.array_equal((left.reshape(-1, 64) @ right).reshape(left.shape[0], height, width), left @ right))


#: images whose variant hashes are computed together: enough to amortise the per-batch Python,
#: few enough that the per-thread scratch arrays stay a few megabytes
_BATCH = 32


def variant_hashes(grays: Sequence[Image.Image], plan: VariantPlan) -> np.ndarray:
    """The embeddings ``(len(grays), rows, nbytes)`` of grayscale (mode ``L``) images."""
    parts = []
    with ONE_BLAS_THREAD:
        for start in range(0, len(grays), _BATCH):
            chunk = grays[start : start + _BATCH]
            grids = np.stack([variant_grid(gray, plan.size) for gray in chunk])
            parts.append(variant_bits(plan, grids, [gray.width / gray.height for gray in chunk]))
    return parts[0] if len(parts) == 1 else np.concatenate(parts)




def variant_grid(gray: Image.Image, size: int) -> np.ndarray:
    """The small grid ``(size, size)`` (float64) every variant of an image is sampled from.

    ``size`` is ``8 n``, so that the smallest allowed crop (0.25) still spans ``2n`` samples; a
    box (area-average) filter is enough here: every hash resamples the grid again with Lanczos.
    """
    return np.asarray(gray.resize((size, size), Image.Resampling.BOX), dtype=np.float64)


def variant_bits(plan: VariantPlan, grids: np.ndarray, aspects: Sequence[float]) -> np.ndarray:
    """Packed bits ``(B, variants * algorithms, nbytes)`` of ``B`` grids ``(B, size, size)``
    (float64) of images with width / height ``aspects``, rows in embedding order."""
    batch, size, n = len(grids), plan.size, plan.n
    scratch = _SCRATCH
    # each grid stack side by side, (size, B * size): row i holds row i of every image
    stacks = [scratch.array("grid", (size, batch, size))]
    stacks[0][...] = grids.transpose(1, 0, 2)
    stacks += [rotate_grids(stacks[0], degrees, aspects, slot=k) for k, degrees in enumerate(plan.rotations)]
    products, samples = plan._products
    lefts = [
        np.matmul(rows, stacks[g].reshape(size, batch * size), out=scratch.array(f"left{i}", (len(rows), batch * size)))
        for i, (g, rows) in enumerate(products)
    ]
    sampled: dict[tuple[int, str], np.ndarray] = {}

    def sample(w: int, shape: str) -> np.ndarray:
        """Window ``w`` resampled for ``shape``, ``(B, rows, columns)``."""
        if (w, shape) not in sampled:
            s = samples[w, shape]
            block = lefts[s.product][s.offset : s.offset + s.height]  # (height, B * size)
            if _rows_stack(s.height, s.columns.shape[1]):  # every image's rows in one product
                values = block.reshape(s.height * batch, size) @ s.columns
                # C order, as the per-image blocks: aHash's mean sums each block in memory order
                sampled[w, shape] = np.ascontiguousarray(values.reshape(s.height, batch, -1).transpose(1, 0, 2))
            else:  # one product per image, as the per-image computation made
                sampled[w, shape] = block.reshape(s.height, batch, size).transpose(1, 0, 2) @ s.columns
        return sampled[w, shape]

    per_algorithm = []
    for algorithm in plan.algorithms:
        if algorithm == "phash":
            low = np.stack([hb.transform_dct(sample(w, "phash"), t) for w, t in plan.variants], axis=1)
            bits = hb.phash_from_dct(low)
        elif algorithm == "dhash":
            blocks = [hb.transform_pixels(sample(w, plan.shape("dhash", t)), t) for w, t in plan.variants]
            bits = hb.dhash_from(np.stack(blocks, axis=1))
        else:
            bits = hb.ahash_from(np.stack([hb.transform_pixels(sample(w, "square"), t) for w, t in plan.variants], axis=1))
        per_algorithm.append(bits.reshape(batch, len(plan.variants), n * n))
    return np.packbits(np.stack(per_algorithm, axis=2).reshape(batch, -1, n * n), axis=-1)


class _Scratch(threading.local):
    """Per-thread arrays reused from call to call: a fresh array of a few megabytes costs more
    (the kernel maps and zeroes its pages) than the arithmetic done in it."""

    def __init__(self) -> None:
        self.buffers: dict[tuple[str, str], np.ndarray] = {}

    def array(self, name: str, shape: tuple[int, ...], dtype: type = np.float64) -> np.ndarray:
        """An uninitialised array of ``shape`` under ``name``, valid until the next request of that name."""
        count = math.prod(shape)
        buffer = self.buffers.get((name, np.dtype(dtype).str))
        if buffer is None or len(buffer) < count:
            buffer = self.buffers[name, np.dtype(dtype).str] = np.empty(count, dtype)
        return buffer[:count].reshape(shape)


_SCRATCH = _Scratch()


# -- small rotations: bilinear taps, for many aspect ratios at once ----------------------


def rotate_grids(grids: np.ndarray, degrees: float, aspects: Sequence[float], *, slot: int = 0) -> np.ndarray:
    """The grids of images with width / height ``aspects``, side by side ``(size, B, size)``,
    rotated counter-clockwise by ``degrees`` about their centres on the same canvas, the
    uncovered corners black: what ``Image.rotate(degrees)`` does to each image, sampled
    bilinearly at the grid's resolution. The aspect (rounded to 4 significant digits) keeps
    the rotation a rotation of the image, not of its squeezed grid.

    The result is a per-thread scratch array, valid until the next call with the same ``slot``.
    Bit for bit the per-image computation (``rotate_grid`` in ``tests/hash_reference.py``):
    the same source coordinates and bilinear weights, element by element, summed in the same order.

    The grids are padded with two black pixels on each side and every source coordinate
    is clipped into the padding, so a tap outside the image adds a black pixel times its
    weight, 0, where the per-image version adds a pixel times a weight of 0.
    """
    size, batch = grids.shape[0], grids.shape[1]
    scratch = _SCRATCH
    # 2-d, (size, B * size): every broadcast below runs along contiguous rows
    aspect = np.repeat([float(f"{a:.4g}") for a in aspects], size)[None, :]
    theta = np.deg2rad(degrees)
    centred = np.arange(size) + 0.5 - size / 2.0
    u = np.tile(centred, batch)[None, :] * aspect  # (1, B * size): varies along columns
    v = centred[:, None]  # (size, 1): varies along rows
    # in place: src_u = (cos u - sin v) / aspect + size / 2 - 0.5 and src_v = sin u + cos v + size / 2 - 0.5
    fu, fv, u0, v0, gu, gv, weight, tap = scratch.array("rotate", (8, size, batch * size))
    np.subtract(np.cos(theta) * u, np.sin(theta) * v, out=fu)
    fu /= aspect
    fu += size / 2.0
    fu -= 0.5
    np.add(np.sin(theta) * u, np.cos(theta) * v, out=fv)
    fv += size / 2.0
    fv -= 0.5
    np.floor(fu, out=u0)
    np.floor(fv, out=v0)
    fu -= u0
    fv -= v0
    np.subtract(1.0, fu, out=gu)
    np.subtract(1.0, fv, out=gv)
    # the top-left tap in the grids padded by two black pixels per side, (size + 4, B, size + 4)
    side, row = size + 4, batch * (size + 4)
    for coordinate in (u0, v0):
        np.clip(coordinate, -2.0, float(size), out=coordinate)  # one pass: np.maximum + np.minimum cost 5x more
    v0 *= row
    v0 += u0
    v0 += (np.repeat(np.arange(batch) * float(side), size) + 2.0 * row + 2.0)[None, :]
    corner = scratch.array("corner", (size, batch * size), np.intp)
    np.copyto(corner, v0, casting="unsafe")
    padded = scratch.array("padded", (side, batch, side))
    padded.fill(0.0)
    padded[2:-2, :, 2:-2] = grids
    flat = padded.ravel()
    out = scratch.array(f"rotated{slot}", (size, batch * size))
    for shift, a, b in ((0, gu, gv), (1, fu, gv), (row, gu, fv), (row + 1, fu, fv)):
        np.multiply(a, b, out=weight)
        flat[shift:].take(corner, out=tap, mode="clip")  # in range: "clip" only skips a buffered copy
        if shift:
            tap *= weight
            out += tap
        else:
            np.multiply(tap, weight, out=out)
    return out.reshape(size, batch, size)
