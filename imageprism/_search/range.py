"""Range search over columns: every pair within a threshold, exact (for dedup).

A *finder* over a column (:class:`~imageprism._search.finder.Finder`) returns a
superset of the item pairs whose exact score on that column can reach ``threshold``;
the caller scores those candidates exactly with
:meth:`Column.pair_scores <imageprism._search.columns.Column.pair_scores>`.
:func:`range_finder` picks one per column: it is the place to swap in another
strategy (e.g. an approximate graph) for a layout.

* bits (:class:`~imageprism._search.columns.BitsColumn`): the mean fraction of equal
  bits reaches ``t`` exactly when the total Hamming distance over a group's rows is at
  most ``D = floor(rows * bits * (1 - t))``; multi-index hashing finds every code
  within ``D`` (:mod:`imageprism._search.hamming`): an incremental table of the
  representatives for one variant, a static table of every variant of every input,
  sized to it, for the best alignment of variant groups (flips, rotations, crops).
* vectors (cosine): vectors are rotated onto their principal axes (an orthogonal map:
  inner products are unchanged) and cut to the first ``k`` coordinates plus one
  coordinate holding the norm of the rest. The inner product of two such vectors is,
  by Cauchy-Schwarz, an upper bound of the cosine, so a scan keeping bounds
  ``>= t - 1e-4`` loses no pair. ``k`` is chosen on a sample to minimise scan plus
  verification cost. Exact and several times cheaper than a full scan, but still a
  (BLAS) scan over the representatives: quadratic with a small constant.
* vectors, approximate (``exact=False``, or ``"auto"`` from
  :data:`~imageprism._search.ann.EXACT_BELOW` inputs): the nearest representatives in an
  IVF-PQ index (:class:`~imageprism._search.ann.AnnIndex`), kept only when their float32
  inner product reaches the threshold; the caller still scores them exactly, so no
  pair below the threshold is ever grouped, but a representative the index does not
  rank among the nearest is missed (recall in ``benchmarks/ann_recall.py``).
* pairwise (``face``): no index; every representative is a candidate.
"""

from __future__ import annotations

import math

import numpy as np

from imageprism._math import unit_rows
from imageprism._search.ann import AnnIndex, AnnParams, Exact, use_ann
from imageprism._search.columns import BitsColumn, Column, VectorColumn
from imageprism._search.finder import AllPairs, Buffer, Finder, scan, union_pairs
from imageprism._search.hamming import BitsFinder, VariantsFinder

__all__ = ["ANN_BLOCK_SIZE", "BLOCK_SIZE", "AllPairs", "AnnFinder", "Finder", "range_finder", "union_pairs"]

#: items per block of a range search (see :mod:`imageprism._dedup`)
BLOCK_SIZE = 512
#: items per block with an :class:`AnnFinder` (its exact scan within a block costs as much as its search)
ANN_BLOCK_SIZE = 256
#: slack below the threshold for the float32 bound of reduced vectors
_VECTOR_MARGIN = 1e-4
_CHUNK = 65536


def range_finder(column: Column, threshold: float, *, exact: Exact = True) -> Finder:
    """A finder that loses no pair scoring ``>= threshold`` on this column, unless approximate.

    ``exact`` (:func:`~imageprism._search.ann.use_ann`) makes a vector column's finder
    approximate (:class:`AnnFinder`); other layouts are always exact.
    """
    if threshold <= 0 or column.n == 0:
        return AllPairs()
    if isinstance(column, BitsColumn):
        data = column.data
        n, rows, nbytes = data.shape
        group = rows // column.variants  # rows per variant
        radius = math.floor(group * (column.bits_per_row or nbytes * 8) * (1.0 - threshold) + 1e-6)
        if column.variants == 1:
            return BitsFinder(np.ascontiguousarray(data.reshape(n, rows * nbytes)), radius)
        return VariantsFinder(data, column.bits_per_row, radius, column.variants)
    if isinstance(column, VectorColumn):
        data, norms = column.data, column.norms
        if use_ann(exact, column.n) and column.n >= 4 * AnnParams.for_size(column.n, data.shape[1]).nlist:
            already_unit = data.dtype == np.float32 and data.flags.c_contiguous and np.all(np.abs(norms - 1.0) <= 1e-6)
            return AnnFinder(data if already_unit else unit_rows(data, norms), threshold)
        return _VectorFinder(unit_rows(data, norms), threshold)
    return AllPairs()


_COL_TILE = 16384


class _VectorFinder(Finder):
    """Exact cosine range search: a BLAS scan of principal-axis-reduced vectors, bounded by Cauchy-Schwarz."""

    def __init__(self, unit: np.ndarray, threshold: float) -> None:
        axes, self.k = reduced_dims(unit, threshold)
        self.codes = reduce_vectors(unit, axes, self.k)
        self.radius = np.float32(threshold - _VECTOR_MARGIN)
        self.reps = Buffer(self.codes.shape[1], np.float32)

    def __repr__(self) -> str:
        return f"_VectorFinder(k={self.k} of {self.codes.shape[1]}, radius={self.radius})"

    def add(self, ids: np.ndarray) -> None:
        self.reps.add(ids, self.codes[ids])

    def query(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        q, found = scan(self.codes[ids], self.reps.rows[: self.reps.size], self._close, tile=BLOCK_SIZE, col_tile=_COL_TILE)
        return q, self.reps.ids[found]

    def within(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        block = self.codes[ids]
        return scan(block, block, self._close, lower=True, tile=BLOCK_SIZE)

    def _close(self, a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        bounds = a @ b.T
        rows = np.flatnonzero(bounds.max(axis=1) >= self.radius)  # most rows have no candidate at all
        q, r = np.nonzero(bounds[rows] >= self.radius)
        return rows[q], r


class AnnFinder(Finder):
    """Approximate cosine candidates: the ``k`` nearest representatives in an :class:`~imageprism._search.ann.AnnIndex`.

    They are kept when their float32 inner product reaches ``threshold - 1e-4`` (the
    caller scores them exactly); a query whose ``k``-th candidate is kept is searched
    again with ``4 k``, so many matching representatives are all found (a range search
    in effect). Within a block the search is an exact BLAS scan.
    """

    def __init__(self, unit: np.ndarray, threshold: float, *, k: int = 8) -> None:
        self.unit = unit
        self.ann = AnnIndex.trained(unit)
        self.k = k
        self.radius = np.float32(threshold - _VECTOR_MARGIN)

    def __repr__(self) -> str:
        return f"AnnFinder({self.ann!r}, k={self.k})"

    def add(self, ids: np.ndarray) -> None:
        self.ann.add(self.unit[ids], ids)

    def query(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        found_q, found_r = [], []
        rows, k = np.arange(len(ids)), self.k
        while len(rows):
            queries = self.unit[ids[rows]]
            found = self.ann.search(queries, k)
            q, j = np.nonzero(found >= 0)
            r = found[q, j]
            close = np.einsum("ij,ij->i", queries[q], self.unit[r]) >= self.radius
            if k >= len(self.ann):
                found_q.append(rows[q[close]])
                found_r.append(r[close])
                break
            # a query whose k-th candidate reaches the threshold may have more: search it again, wider
            full = np.zeros(len(rows), bool)
            full[q[close & (j == k - 1)]] = True
            done = ~full[q] & close
            found_q.append(rows[q[done]])
            found_r.append(r[done])
            rows, k = rows[full], k * 4
        return np.concatenate(found_q).astype(np.int64), np.concatenate(found_r).astype(np.int64)

    def within(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        block = self.unit[ids]
        return scan(block, block, self._close, lower=True, tile=BLOCK_SIZE)

    def _close(self, a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        q, r = np.nonzero(a @ b.T >= self.radius)
        return q, r


def _principal_axes(unit: np.ndarray, sample: int = 5000) -> np.ndarray:
    rng = np.random.default_rng(0)
    rows = unit if len(unit) <= sample else unit[rng.choice(len(unit), sample, replace=False)]
    rows = rows.astype(np.float64)
    _, vecs = np.linalg.eigh(rows.T @ rows)  # second moment: what the bound depends on
    return vecs[:, ::-1]


def reduced_dims(unit: np.ndarray, threshold: float, sample: int = 2000) -> tuple[np.ndarray, int]:
    """Principal axes and the number ``k`` of leading axes to keep (``k = d``: no reduction).

    ``k`` minimises, on a sample of pairs, the flat-scan cost ``k + 1`` per pair plus
    the cost of exactly verifying the pairs whose bound survives (~``200 d`` each).
    """
    n, d = unit.shape
    if n < 4 * sample or d <= 16:  # small: a full scan is cheap
        return np.eye(d), d
    axes = _principal_axes(unit)
    rng = np.random.default_rng(1)
    rows = unit[rng.choice(n, sample, replace=False)].astype(np.float64)
    rotated = rows @ axes
    sq = np.einsum("ij,ij->i", rows, rows)
    upper = np.triu_indices(sample, k=1)
    best = (float(d + 1), d)
    for k in (16, 32, 64, 128, 256, 384):
        if k >= d:
            break
        head = rotated[:, :k]
        rest = np.sqrt(np.maximum(sq - np.einsum("ij,ij->i", head, head), 0.0))
        bound = head @ head.T + np.outer(rest, rest)
        survive = float(np.mean(bound[upper] >= threshold - _VECTOR_MARGIN))
        cost = k + 1 + survive * 200 * d
        if cost < best[0]:
            best = (cost, k)
    return axes, best[1]


def reduce_vectors(unit: np.ndarray, axes: np.ndarray, k: int) -> np.ndarray:
    """``[x @ axes[:, :k], |rest| + 1e-6]`` as float32: their inner products bound the cosine from above.

    Computed in float64 (in chunks) so that ``|rest|`` does not suffer cancellation.
    """
    if k >= unit.shape[1]:
        return np.ascontiguousarray(unit, dtype=np.float32)
    out = np.empty((len(unit), k + 1), np.float32)
    for s in range(0, len(unit), _CHUNK):
        rows = unit[s : s + _CHUNK].astype(np.float64)
        head = rows @ axes[:, :k]
        rest = np.sqrt(np.maximum(np.einsum("ij,ij->i", rows, rows) - np.einsum("ij,ij->i", head, head), 0.0))
        out[s : s + _CHUNK, :k] = head
        out[s : s + _CHUNK, k] = rest + 1e-6
    return out
