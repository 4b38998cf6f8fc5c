"""The finder interface of range search, and the pieces every finder shares.

A *finder* over a column returns a superset of the item pairs whose exact score on
that column can reach a threshold; the caller scores those candidates exactly. It
works over *representatives* added block by block (:meth:`Finder.add`), queries a
block against them (:meth:`Finder.query`) and within itself (:meth:`Finder.within`).
The finders themselves live in :mod:`imageprism._search.range` (vectors, and the
choice of finder per column) and :mod:`imageprism._search.hamming` (packed bits).
"""

from __future__ import annotations

import abc
from collections.abc import Callable

import numpy as np

__all__ = ["AllPairs", "Buffer", "Finder", "scan", "union_pairs"]


def union_pairs(pairs: list[tuple[np.ndarray, np.ndarray]], width: int) -> tuple[np.ndarray, np.ndarray]:
    """The distinct pairs of several ``(i, j)`` lists (``j < width``)."""
    if len(pairs) == 1:
        return pairs[0]
    codes = np.unique(np.concatenate([i.astype(np.int64) * width + j for i, j in pairs]))
    return codes // width, codes % width


class Finder(abc.ABC):
    """Candidate search over the representatives added so far (input indices)."""

    @abc.abstractmethod
    def add(self, ids: np.ndarray) -> None:
        """Make these inputs searchable representatives."""

    @abc.abstractmethod
    def query(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Candidate pairs ``(position in ids, representative input index)``."""

    @abc.abstractmethod
    def within(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Candidate pairs ``(i, j)`` of positions in ``ids`` with ``i < j``."""


class AllPairs(Finder):
    """No index: every representative is a candidate (exact, quadratic)."""

    def __init__(self) -> None:
        self._reps: list[np.ndarray] = []

    def add(self, ids: np.ndarray) -> None:
        self._reps.append(ids)

    def query(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        reps = np.concatenate(self._reps) if self._reps else np.empty(0, np.int64)
        q, r = np.meshgrid(np.arange(len(ids)), reps, indexing="ij")
        return q.ravel(), r.ravel()

    def within(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        i, j = np.triu_indices(len(ids), k=1)
        return i, j


class Buffer:
    """Rows of the representatives, appended block by block (amortised doubling)."""

    def __init__(self, width: int, dtype: type) -> None:
        self.rows: np.ndarray = np.empty((64, width), dtype)
        self.ids: np.ndarray = np.empty(64, np.int64)
        self.size = 0

    def add(self, ids: np.ndarray, rows: np.ndarray) -> None:
        need = self.size + len(ids)
        if need > len(self.ids):
            grow = max(need, 2 * len(self.ids))
            self.rows = np.concatenate([self.rows[: self.size], np.empty((grow - self.size, self.rows.shape[1]), self.rows.dtype)])
            self.ids = np.concatenate([self.ids[: self.size], np.empty(grow - self.size, np.int64)])
        self.rows[self.size : need] = rows
        self.ids[self.size : need] = ids
        self.size = need


def scan(
    queries: np.ndarray,
    rows: np.ndarray,
    hit: Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]],
    *,
    lower: bool = False,
    tile: int = 128,
    col_tile: int = 8192,
) -> tuple[np.ndarray, np.ndarray]:
    """Pairs ``(query, row)`` found by ``hit(query tile, row tile)`` (which returns local indices).

    Tiles of at most ``tile`` x ``col_tile`` keep temporaries small. ``lower``: rows are the
    queries themselves, keep only pairs ``row < query`` (returned as ``(row, query)``).
    """
    found_q, found_r = [], []
    for lo in range(0, len(queries), tile):
        hi = min(lo + tile, len(queries))
        end = hi if lower else len(rows)
        for c in range(0, end, col_tile):
            q, r = hit(queries[lo:hi], rows[c : min(c + col_tile, end)])
            q += lo
            r += c
            if lower:
                keep = r < q
                q, r = r[keep], q[keep]
            found_q.append(q)
            found_r.append(r)
    if not found_q:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    return np.concatenate(found_q).astype(np.int64), np.concatenate(found_r).astype(np.int64)


