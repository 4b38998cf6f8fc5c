"""Top-k search over columns: the items most similar to a query (for the index).

A :class:`Searcher` gives every item of one column a *fast* score for a query, and
the best ``m`` of them; fast scores differ from the exact ones
(:meth:`Column.query_scores <imageprism._search.columns.Column.query_scores>`) by at
most :attr:`Searcher.error`, which lets the index verify candidates exactly and
return exactly the top ``k``. :func:`searcher_for` picks the searcher of a column:
it is the place to swap in another strategy (e.g. an approximate graph, which would
keep its own structure in step with the column in :meth:`Searcher.sync`).

* :class:`BitsScan`: a popcount scan over 64-bit words; with variant groups, the
  best alignment from group distances (``V`` groups of the query against every
  item's group 0, and the query's group 0 against every group of every item).
* :class:`VectorScan`: a float32 BLAS matrix-vector product over unit vectors.
* :class:`AnnScan` (``exact=False``, or ``"auto"`` from
  :data:`~imageprism._search.ann.EXACT_BELOW` items): the top-``m`` from an approximate
  index (:class:`~imageprism._search.ann.AnnIndex`, at least :data:`RERANK` candidates)
  ranked by their float32 inner products; the index then scores them exactly, so the
  hits' scores are exact but an item the approximate index does not return is missed.
* :class:`PairwiseScan`: the plugin's ``score`` against every item, in Python.
"""

from __future__ import annotations

import abc

import numpy as np

from imageprism._math import ONE_BLAS_THREAD, popcount
from imageprism._search.ann import AnnIndex, AnnParams, Exact, check_arrays, use_ann
from imageprism._search.columns import BitsColumn, Column, VectorColumn

__all__ = ["RERANK", "AnnScan", "BitsScan", "PairwiseScan", "Searcher", "VectorScan", "searcher_for", "top_positions"]

#: candidates an :class:`AnnScan` takes from the approximate index per query (at least), re-ranked
#: by their float32 inner products: the 4-bit codes rank too coarsely to pick the 10 best of a
#: topic's look-alikes. 1M CLIP-like vectors, a quarter of the cells probed: recall@10 0.945 with
#: 1000, 0.983 with 3000, 0.994 with 10000 (9 ms a query), 0.997 with 30000 (54 ms); see
#: ``benchmarks/README.md``
RERANK = 10_000
#: an :class:`AnnScan` query probes 1 / QUERY_CELLS of the cells (more than dedup: a
#: query's 10 best are farther apart than near-duplicates; with 1/8, recall@10 stops at 0.989)
QUERY_CELLS = 4


def top_positions(scores: np.ndarray, m: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``m`` best positions (ties: lower position first) and their scores, best first."""
    m = min(m, len(scores))
    part = np.argpartition(-scores, m - 1)[:m] if m < len(scores) else np.arange(len(scores))
    part = part[np.lexsort((part, -scores[part]))]
    return part.astype(np.int64), scores[part]


class Searcher(abc.ABC):
    """Fast scores of a query against every item of one column."""

    #: whether :meth:`top` is faster than scoring every item one by one
    searchable: bool = True

    def __init__(self, column: Column) -> None:
        self.column = column

    @property
    def error(self) -> float:
        """Largest difference between a fast score and the exact score."""
        return 0.0

    def sync(self) -> None:
        """Bring any structure of the searcher in step with the column (after append, truncate, keep)."""

    def state(self) -> dict[str, np.ndarray]:
        """The searcher's trained state to save with the index, as plain arrays (none by default)."""
        return {}

    def restore_state(self, arrays: dict[str, np.ndarray]) -> None:
        """Take a :meth:`state` saved earlier (ignored by a searcher that keeps none).

        Raises :class:`~imageprism.errors.InputError` if it does not fit the column.
        """

    @abc.abstractmethod
    def scores(self, query: np.ndarray | None) -> np.ndarray:
        """Fast scores of a checked query (:meth:`Column.check_query`) against every item (NaN: cannot score)."""

    def top(self, query: np.ndarray | None, m: int) -> tuple[np.ndarray, np.ndarray, float]:
        """About the ``m`` items with the best fast scores: ``(positions, fast scores, bound)``.

        Every item not in ``positions`` has a fast score of at most ``bound``
        (``-inf`` when every item is returned).
        """
        positions, best = top_positions(np.nan_to_num(self.scores(query), nan=-np.inf), m)
        bound = float(best[-1]) if m < len(self.column) else -np.inf
        return positions, best, bound


def _words(codes: np.ndarray) -> np.ndarray:
    """The last axis of ``uint8`` codes as 64-bit words when it divides evenly, else as bytes."""
    codes = np.ascontiguousarray(codes)
    return codes.view(np.uint64) if codes.shape[-1] % 8 == 0 else codes


class BitsScan(Searcher):
    """Exact popcount scan of packed-bit codes, plain or with variant groups.

    The searcher keeps the codes word-major (one contiguous ``(n, V)`` plane per
    64-bit word, rebuilt lazily after the column changes): a scan then runs over
    contiguous memory, word by word.
    """

    column: BitsColumn

    def __init__(self, column: BitsColumn) -> None:
        super().__init__(column)
        self._planes: np.ndarray | None = None  # (words, n, V)

    @property
    def error(self) -> float:
        return 1e-9

    def sync(self) -> None:
        self._planes = None

    def _word_planes(self) -> np.ndarray:
        if self._planes is None or self._planes.shape[1] != len(self.column):
            data = self.column.data
            n, rows, nbytes = data.shape
            v = self.column.variants
            words = _words(data.reshape(n, v, rows // v * nbytes))  # (n, V, words)
            self._planes = np.ascontiguousarray(np.moveaxis(words, -1, 0))
        return self._planes

    def scores(self, query: np.ndarray | None) -> np.ndarray:
        column = self.column
        v = column.variants
        rows, nbytes = np.asarray(query).shape
        k = rows // v
        q = _words(np.ascontiguousarray(np.asarray(query)).reshape(v, k * nbytes))  # (V, words)
        planes = self._word_planes()
        # q_v against x_0 for every v, and q_0 against x_v for every v; summed word by word
        # (a reduction over a short last axis costs far more than a few element-wise adds)
        whole = popcount(planes[0][:, :1] ^ q[None, :, 0]).astype(np.int32)
        for w in range(1, planes.shape[0]):
            whole += popcount(planes[w][:, :1] ^ q[None, :, w])
        best = whole.min(axis=1)
        if v > 1:
            groups = popcount(planes[0] ^ q[0, 0]).astype(np.int32)
            for w in range(1, planes.shape[0]):
                groups += popcount(planes[w] ^ q[0, w])
            best = np.minimum(best, groups.min(axis=1))
        return 1.0 - best / (k * (column.bits_per_row or 8 * nbytes))


class VectorScan(Searcher):
    """Inner products of unit vectors (a float32 BLAS scan): the cosine up to rounding."""

    column: VectorColumn

    @property
    def error(self) -> float:
        # float32 dot product vs the float64 cosine, for norms within the unit tolerance of 1
        return (self.column.d or 1) * 2.0**-23 + 2.5e-4

    def scores(self, query: np.ndarray | None) -> np.ndarray:
        return (self.column.data @ np.asarray(query, np.float32)).astype(np.float64)

    def top(self, query: np.ndarray | None, m: int) -> tuple[np.ndarray, np.ndarray, float]:
        sims = self.column.data @ np.asarray(query, np.float32)  # float32, no NaN: rank it as it is
        positions, best = top_positions(sims, m)
        bound = float(best[-1]) if m < len(self.column) else -np.inf
        return positions, best.astype(np.float64), bound


class AnnScan(VectorScan):
    """Approximate top-``m`` of unit vectors (an IVF-PQ index), the exact scan while the column is small.

    The approximate index is trained on the vectors when first needed (a search, or
    :meth:`state` for a save) and kept in step by :meth:`sync`: appended rows are
    added; after a removal the codes are encoded again with the same training. The
    training (:meth:`state`) is saved with the index, so a loaded index does not train
    again: it encodes its vectors on the first search and answers as it did before saving.
    It is trained anew once the column has outgrown it (about 4x the vectors it was trained
    on: twice the cells, see :meth:`AnnParams.for_size <imageprism._search.ann.AnnParams.for_size>`),
    so an index grown by many small adds keeps cells of the measured size.
    """

    def __init__(self, column: VectorColumn, exact: Exact) -> None:
        super().__init__(column)
        self.exact = exact
        self.ann: AnnIndex | None = None
        self._trained: dict[str, np.ndarray] = {}

    def active(self) -> bool:
        """Whether queries go to the approximate index (by ``exact`` and the column's size)."""
        return use_ann(self.exact, len(self.column)) and len(self.column) >= RERANK

    def sync(self) -> None:
        if self.ann is None:
            return
        n, have = len(self.column), len(self.ann)
        if n > have:  # rows appended since the last sync
            self.ann.add(self.column.data[have:], np.arange(have, n, dtype=np.int64))
        elif n < have:  # rows removed: positions moved, encode again (the training stays valid)
            self.ann = None

    def state(self) -> dict[str, np.ndarray]:
        """The trained cells and codebook (trained now if the index is large enough to use them)."""
        return self._training() if self.active() else self._trained

    def restore_state(self, arrays: dict[str, np.ndarray]) -> None:
        check_arrays(arrays, self.column.d or 0)
        self._trained, self.ann = dict(arrays), None

    def _outgrown(self) -> bool:
        """Whether the column would now get at least twice the cells it was trained with."""
        n, d = self.column.data.shape
        return AnnParams.for_size(n, d).nlist >= 2 * len(self._trained["centroids"])

    def _training(self) -> dict[str, np.ndarray]:
        if not self._trained or self._outgrown():
            self._trained, self.ann = AnnIndex.trained(self.column.data).arrays(), None
        return self._trained

    def _index(self) -> AnnIndex:
        if self.ann is None or self._outgrown():
            training = self._training()
            self.ann = AnnIndex.from_arrays(training, self.column.data)
        return self.ann

    def top(self, query: np.ndarray | None, m: int) -> tuple[np.ndarray, np.ndarray, float]:
        if not self.active():
            return super().top(query, m)
        q = np.asarray(query, np.float32)
        ann = self._index()
        found = ann.search(q[None, :], max(m, RERANK), nprobe=max(1, ann.params.nlist // QUERY_CELLS))[0]
        found = found[found >= 0]
        if len(found) < min(m, len(self.column)):  # sparse cells: fewer than asked, scan instead
            return super().top(query, m)
        with ONE_BLAS_THREAD:
            fast = (self.column.data[found] @ q).astype(np.float64)
        order = np.lexsort((found, -fast))
        return found[order], fast[order], -np.inf  # -inf: the index takes these as all the candidates


class PairwiseScan(Searcher):
    """The plugin's score against every item (exact, about a microsecond per item)."""

    searchable = False

    def scores(self, query: np.ndarray | None) -> np.ndarray:
        return self.column.query_scores(query, np.arange(len(self.column)))


def searcher_for(column: Column, *, exact: Exact = True) -> Searcher:
    """The searcher of a column: exact scans, or for vectors with ``exact`` not ``True`` an :class:`AnnScan`."""
    if isinstance(column, BitsColumn):
        return BitsScan(column)
    if isinstance(column, VectorColumn):
        if not column.unit:
            raise ValueError(f"the {column.name!r} column must store unit vectors (unit=True) to be searched")
        return VectorScan(column) if exact is True else AnnScan(column, exact)
    return PairwiseScan(column)
