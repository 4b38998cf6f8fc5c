"""Cosine geometry of vector columns: principal-axis reduction, and near pairs through a cell partition.

* :func:`reduce_vectors`: vectors rotated onto their principal axes (an orthogonal map:
  inner products are unchanged) and cut to the first ``k`` coordinates plus one holding
  the norm of the rest; by Cauchy-Schwarz the inner product of two reduced vectors is an
  upper bound of their cosine. :func:`reduced_dims` picks ``k``.
* :func:`near_pairs`: the approximate range search of dedup (``exact=False``). All
  pairs at cosine ``>= threshold`` whose two vectors fall in nearby cells of a
  partition, for every vector at once. The cells: a two-level k-means over the
  leading 64 reduced axes (``T`` coarse cells each split into ``S`` fine ones, ``T = S``;
  assigning a vector costs ``T + 8 S`` inner products instead of ``T S``). Each vector lives in its
  nearest cell and probes its :data:`PROBES` nearest; a pair is found when one vector
  lives in a cell the other probes. Within a cell the scan is a BLAS product of the
  reduced vectors, kept where the bound reaches the threshold, then checked with the
  float32 cosine. Nothing is missed inside the probed cells; a pair is missed only when
  neither vector probes the other's cell (near copies sit close together, so rarely:
  recall in ``benchmarks/ann_recall.py``). Cost: about ``n * PROBES * n / cells`` bound
  products, with cells of :data:`CELL_SIZE` vectors.
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from imageprism._math import ONE_BLAS_THREAD

__all__ = ["CELL_SIZE", "MARGIN", "PROBES", "TooManyPairsError", "near_pairs", "reduce_vectors", "reduced_dims"]

#: slack below the threshold for the float32 bound of reduced vectors
MARGIN = 1e-4
#: vectors per cell of :func:`near_pairs` (about)
CELL_SIZE = 64
#: cells each vector probes in :func:`near_pairs`
PROBES = 16
#: threads scanning the cells (each with single-threaded BLAS)
WORKERS = 2
_CHUNK = 65536
_COARSE_PROBES = 8  # coarse cells whose fine cells a vector is compared with
_KMEANS_PER_CELL = 16  # k-means sample: points per cell
_TILE = 2048  # probing rows per bound product within a cell
_MEMBER_TILE = 8192  # members per bound product (a huge cell stays bounded in memory)
_CELL_DIMS = 64  # leading axes the cells are computed on


def _principal_axes(unit: np.ndarray, sample: int = 5000) -> np.ndarray:
    rng = np.random.default_rng(0)
    rows = unit if len(unit) <= sample else unit[rng.choice(len(unit), sample, replace=False)]
    rows = rows.astype(np.float64)
    _, vecs = np.linalg.eigh(rows.T @ rows)  # second moment: what the bound depends on
    return vecs[:, ::-1]


def reduced_dims(unit: np.ndarray, threshold: float, sample: int = 2000, *, near: bool = False) -> tuple[np.ndarray, int]:
    """Principal axes and the number ``k`` of leading axes to keep (``k = d``: no reduction).

    ``k`` minimises, on a sample of pairs, the flat-scan cost ``k + 1`` per pair plus
    the cost of exactly verifying the pairs whose bound survives (~``200 d`` each).
    The pairs: random ones (a scan over everything), or with ``near`` each sampled row
    and its 1% nearest in the sample (the pairs of a cell scan, which are alike: the
    bound must be tighter there).
    """
    n, d = unit.shape
    if n < 4 * sample or d <= 16:  # small: a full scan is cheap
        return np.eye(d), d
    axes = _principal_axes(unit)
    rng = np.random.default_rng(1)
    rows = unit[rng.choice(n, sample, replace=False)].astype(np.float64)
    rotated = rows @ axes
    sq = np.einsum("ij,ij->i", rows, rows)
    if near:
        cosines = rows @ rows.T
        np.fill_diagonal(cosines, -np.inf)
        nearest = np.argpartition(-cosines, sample // 100, axis=1)[:, : sample // 100]
        pairs = (np.repeat(np.arange(sample), nearest.shape[1]), nearest.ravel())
    else:
        pairs = np.triu_indices(sample, k=1)
    best = (float(d + 1), d)
    for k in (16, 32, 64, 96, 128, 192, 256, 384):
        if k >= d:
            break
        head = rotated[:, :k]
        rest = np.sqrt(np.maximum(sq - np.einsum("ij,ij->i", head, head), 0.0))
        bound = np.einsum("ij,ij->i", head[pairs[0]], head[pairs[1]]) + rest[pairs[0]] * rest[pairs[1]]
        survive = float(np.mean(bound >= threshold - MARGIN))
        cost = k + 1 + survive * 200 * d
        if cost < best[0]:
            best = (cost, k)
    return axes, best[1]


def reduce_vectors(unit: np.ndarray, axes: np.ndarray, k: int) -> np.ndarray:
    """``[x @ axes[:, :k], |rest| + 1e-3]`` as float32: their inner products bound the cosine from above.

    The head is a float32 product; ``|rest|^2 = |x|^2 - |head|^2`` is taken in float64,
    and the ``1e-3`` covers the rounding of the head (``|head|^2`` within ``1e-6``, so
    the true ``|rest|`` is within ``1e-3`` of the computed one).
    """
    if k >= unit.shape[1]:
        return np.ascontiguousarray(unit, dtype=np.float32)
    out = np.empty((len(unit), k + 1), np.float32)
    basis = np.ascontiguousarray(axes[:, :k], np.float32)
    for s in range(0, len(unit), _CHUNK):
        rows = np.asarray(unit[s : s + _CHUNK], np.float32)
        head = rows @ basis
        sq = np.einsum("ij,ij->i", rows, rows, dtype=np.float64) - np.einsum("ij,ij->i", head, head, dtype=np.float64)
        out[s : s + _CHUNK, :k] = head
        out[s : s + _CHUNK, k] = np.sqrt(np.maximum(sq, 0.0)) + 1e-3
    return out


def _kmeans(rows: np.ndarray, cells: int, seed: int, iterations: int = 10) -> np.ndarray:
    """Spherical k-means centroids ``(cells, d)`` of ``rows`` (Lloyd; empty cells re-seeded)."""
    rng = np.random.default_rng(seed)
    centroids = rows[rng.choice(len(rows), cells, replace=False)].copy()
    for _ in range(iterations):
        nearest = np.argmax(rows @ centroids.T, axis=1)
        order = np.argsort(nearest, kind="stable")
        cuts = np.searchsorted(nearest[order], np.arange(cells))
        sums = np.add.reduceat(rows[order], np.minimum(cuts, len(rows) - 1), axis=0)
        counts = np.diff(np.r_[cuts, len(rows)])
        empty = counts == 0
        sums[empty] = rows[rng.choice(len(rows), int(empty.sum()), replace=False)]
        centroids = (sums / np.linalg.norm(sums, axis=1, keepdims=True)).astype(np.float32)
    return centroids


def _fine_cells(coarse: np.ndarray, fine: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Home cell of each row, and ``(row, cell)`` probe pairs: its ``PROBES`` best fine cells (ties: all)."""
    side, wide = fine.shape[1], min(_COARSE_PROBES, len(coarse))
    near = np.argpartition(-(rows @ coarse.T), wide - 1, axis=1)[:, :wide]
    scores = np.empty((len(rows), wide, side), np.float32)
    for slot in range(wide):  # rows grouped by their coarse cell in this slot
        order = np.argsort(near[:, slot], kind="stable")
        cuts = np.searchsorted(near[order, slot], np.arange(len(coarse) + 1))
        for c in np.flatnonzero(np.diff(cuts)).tolist():
            picked = order[cuts[c] : cuts[c + 1]]
            scores[picked, slot] = rows[picked] @ fine[c].T
    flat = scores.reshape(len(rows), -1)
    last = flat.shape[1] - min(PROBES, flat.shape[1])
    kth = np.partition(flat, last, axis=1)[:, last]
    row, col = np.nonzero(flat >= kth[:, None])
    cell = near[row, col // side] * side + col % side
    best = np.argmax(flat, axis=1)
    home = near[np.arange(len(rows)), best // side] * side + best % side
    return home, row, cell


def _cells(codes: np.ndarray, seed: int, pool: ThreadPoolExecutor) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Home cell ``(n,)`` of every vector and its probes as pairs ``(vector, cell)`` (a two-level k-means)."""
    n = len(codes)
    side = 1 << max(1, math.ceil(math.log2(math.sqrt(max(n / CELL_SIZE, 4)))))  # T = S, a power of two
    rng = np.random.default_rng(seed)
    sample = codes[np.sort(rng.choice(n, min(n, side * side * _KMEANS_PER_CELL), replace=False))]
    coarse = _kmeans(sample, min(side, len(sample)), seed)
    near = np.argmax(sample @ coarse.T, axis=1)
    fine = np.zeros((len(coarse), side, codes.shape[1]), np.float32)
    for c in range(len(coarse)):  # each coarse cell split by its own sample (fewer cells if it has few)
        members = sample[near == c]
        cells = min(side, len(members))
        fine[c, :cells] = _kmeans(members, cells, seed + 1 + c) if cells else 0.0
        fine[c, cells:] = -10.0 * coarse[c]  # padding cells: never nearest
    starts = range(0, n, _CHUNK // 4)
    parts = list(pool.map(lambda s: _fine_cells(coarse, fine, codes[s : s + _CHUNK // 4]), starts))
    home = np.concatenate([p[0] for p in parts])
    vector = np.concatenate([p[1] + s for p, s in zip(parts, starts)])
    cell = np.concatenate([p[2] for p in parts])
    return home, vector, cell


class TooManyPairsError(Exception):
    """More near pairs than :func:`near_pairs` allows: huge clusters of alike vectors (use an exact scan)."""


def _cell_pairs(codes: np.ndarray, inside: np.ndarray, askers: np.ndarray, radius: np.float32) -> tuple[np.ndarray, np.ndarray]:
    """Pairs ``(asker, member)`` of one cell whose bound reaches ``radius``."""
    found_a, found_b = [], []
    for start in range(0, len(inside), _MEMBER_TILE):
        members = inside[start : start + _MEMBER_TILE]
        block = np.ascontiguousarray(codes[members].T)
        for lo in range(0, len(askers), _TILE):
            q = askers[lo : lo + _TILE]
            bounds = codes[q] @ block
            rows = np.flatnonzero(bounds.max(axis=1) >= radius)
            if len(rows):
                a, b = np.nonzero(bounds[rows] >= radius)
                found_a.append(q[rows[a]])
                found_b.append(members[b])
    if not found_a:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    return np.concatenate(found_a), np.concatenate(found_b)


def near_pairs(
    unit: np.ndarray, threshold: float, *, seed: int = 0, workers: int = WORKERS, max_pairs: int | None = None
) -> tuple[np.ndarray, np.ndarray, int]:
    """Pairs ``(i, j)``, ``i < j``, of unit float32 rows at float32 cosine ``>= threshold - 1e-4`` (approximate range search), and the number of cells.

    Sorted by ``j`` then ``i``. Pairs are only missed, never invented (the caller still
    scores them exactly). BLAS runs on one thread per worker (``workers`` threads share
    the cells): on a shared machine multithreaded BLAS on small products waits for
    busy cores. Raises :class:`TooManyPairsError` beyond ``max_pairs`` candidate pairs
    (default ``64 n + 10**6``): a cluster of ``m`` alike vectors has ``m^2 / 2`` pairs,
    while the greedy pass needs only those with its representatives.
    """
    n = len(unit)
    with ONE_BLAS_THREAD, ThreadPoolExecutor(max(1, workers)) as pool:
        axes, k = reduced_dims(unit, threshold, near=True)
        codes = np.concatenate(list(pool.map(lambda s: reduce_vectors(unit[s : s + _CHUNK], axes, k), range(0, n, _CHUNK))))
        home, vector, cell = _cells(np.ascontiguousarray(codes[:, : min(k, _CELL_DIMS)]), seed, pool)
        radius = np.float32(threshold - MARGIN)
        cells = int(cell.max()) + 1
        members = np.argsort(home, kind="stable")
        member_cuts = np.searchsorted(home[members], np.arange(cells + 1))
        by_cell = np.argsort(cell, kind="stable")
        askers = vector[by_cell]  # the vectors probing each cell, cell by cell
        asker_cuts = np.searchsorted(cell[by_cell], np.arange(cells + 1))
        del vector, cell, by_cell

        budget, counted = max_pairs if max_pairs is not None else 64 * n + 10**6, [0]

        def scan(part: range) -> list[tuple[np.ndarray, np.ndarray]]:
            out = []
            for c in part:
                if member_cuts[c + 1] > member_cuts[c]:
                    out.append(_cell_pairs(codes, members[member_cuts[c] : member_cuts[c + 1]], askers[asker_cuts[c] : asker_cuts[c + 1]], radius))
                    counted[0] += len(out[-1][0])
                    if counted[0] > budget:
                        raise TooManyPairsError(f"more than {budget} candidate pairs")
            return out

        found = [pair for chunk in pool.map(scan, [range(c, min(cells, c + 64)) for c in range(0, cells, 64)]) for pair in chunk]
        a = np.concatenate([f[0] for f in found] or [np.empty(0, np.int64)]).astype(np.int64)
        b = np.concatenate([f[1] for f in found] or [np.empty(0, np.int64)]).astype(np.int64)
        keep = a != b
        pairs = np.unique(np.minimum(a[keep], b[keep]) * n + np.maximum(a[keep], b[keep]))
        i, j = pairs // n, pairs % n
        close = np.einsum("ij,ij->i", unit[i], unit[j]) >= radius
    i, j = i[close], j[close]
    order = np.lexsort((i, j))
    return i[order], j[order], cells
