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
  :data:`~imageprism._search.ann.EXACT_BELOW` inputs): the near pairs of all inputs at
  once, through a partition into small cells (:func:`~imageprism._search.cells.near_pairs`),
  kept only when their float32 inner product reaches the threshold; the caller still
  scores them exactly, so no pair below the threshold is ever grouped, but a pair whose
  vectors fall in cells too far apart is missed (recall in ``benchmarks/ann_recall.py``).
* pairwise (``face``): no index; every representative is a candidate.
"""

from __future__ import annotations

import math

import numpy as np

from imageprism._math import unit_rows
from imageprism._search.ann import Exact, use_ann
from imageprism._search.cells import MARGIN, TooManyPairsError, near_pairs, reduce_vectors, reduced_dims
from imageprism._search.columns import BitsColumn, Column, VectorColumn
from imageprism._search.finder import AllPairs, Buffer, Finder, scan, union_pairs
from imageprism._search.hamming import BitsFinder, VariantsFinder

__all__ = ["ANN_BLOCK_SIZE", "ANN_MIN", "BLOCK_SIZE", "AllPairs", "AnnFinder", "Finder", "range_finder", "union_pairs"]

#: items per block of a range search (see :mod:`imageprism._dedup`)
BLOCK_SIZE = 512
#: items per block with an :class:`AnnFinder` (its candidates are found beforehand: large blocks cost little)
ANN_BLOCK_SIZE = 4096
#: an approximate finder from this many vectors (fewer: the exact scan, cheap at that size)
ANN_MIN = 1000


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
        if use_ann(exact, column.n) and column.n >= ANN_MIN:
            already_unit = data.dtype == np.float32 and data.flags.c_contiguous and np.all(np.abs(norms - 1.0) <= 1e-6)
            unit = data if already_unit else unit_rows(data, norms)
            try:
                return AnnFinder(unit, threshold)
            except TooManyPairsError:  # huge clusters of alike vectors: few representatives, the exact scan is cheap
                return _VectorFinder(unit, threshold)
        return _VectorFinder(unit_rows(data, norms), threshold)
    return AllPairs()


_COL_TILE = 16384


class _VectorFinder(Finder):
    """Exact cosine range search: a BLAS scan of principal-axis-reduced vectors, bounded by Cauchy-Schwarz."""

    def __init__(self, unit: np.ndarray, threshold: float) -> None:
        axes, self.k = reduced_dims(unit, threshold)
        self.codes = reduce_vectors(unit, axes, self.k)
        self.radius = np.float32(threshold - MARGIN)
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
    """Approximate cosine candidates: the near pairs of all inputs, found at once (:func:`~imageprism._search.cells.near_pairs`).

    Built once over every input (batched work is far cheaper per input than a search per
    block); a query keeps an input's earlier near inputs that are representatives by
    then, :meth:`within` the near pairs inside a block. The greedy pass then scores them
    exactly, so its semantics are untouched: only a pair the cells miss can change a label.
    """

    def __init__(self, unit: np.ndarray, threshold: float) -> None:
        earlier, later, self.cells = near_pairs(unit, threshold)
        self.earlier = earlier  # sorted by the later input
        self.cuts = np.searchsorted(later, np.arange(len(unit) + 1))
        self.is_rep = np.zeros(len(unit), bool)

    def __repr__(self) -> str:
        return f"AnnFinder({len(self.earlier)} near pairs, {self.cells} cells)"

    def _near(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(position in ids, earlier input)`` of every near pair of the inputs ``ids``."""
        lo, hi = self.cuts[ids], self.cuts[ids + 1]
        counts = hi - lo
        pos = np.repeat(np.arange(len(ids)), counts)
        offsets = np.arange(int(counts.sum())) - np.repeat(np.cumsum(counts) - counts, counts)
        return pos, self.earlier[np.repeat(lo, counts) + offsets]

    def add(self, ids: np.ndarray) -> None:
        self.is_rep[ids] = True

    def query(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        pos, earlier = self._near(ids)
        keep = self.is_rep[earlier]
        return pos[keep], earlier[keep]

    def within(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        pos, earlier = self._near(ids)  # ids ascending, as the greedy pass gives them
        where = np.minimum(np.searchsorted(ids, earlier), max(len(ids) - 1, 0))
        keep = ids[where] == earlier if len(ids) else np.zeros(0, bool)
        return where[keep], pos[keep]
