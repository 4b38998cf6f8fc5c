"""Approximate nearest neighbours for unit float vectors: an IVF index with 4-bit PQ fast-scan codes.

The structure (faiss ``IndexIVFPQFastScan``, inner product): ``nlist`` k-means cells
over the vectors; each vector is kept as its cell and a product-quantized code of
``m`` 4-bit sub-codes (``m / 2`` bytes). A query ranks the vectors of its ``nprobe``
nearest cells by the approximate inner product of the codes (SIMD look-up tables)
and returns the ``k`` best. Nothing here is a score: callers verify every candidate
with the exact score of the column that holds the float vectors, so a false match
is impossible and only recall can drop (measured in ``benchmarks/ann_recall.py``).

It serves the index's top-``k`` search (:class:`~imageprism._search.topk.AnnScan`);
dedup finds its near pairs for all inputs at once instead
(:func:`~imageprism._search.cells.near_pairs`).

Why this structure (measured, ``benchmarks/README.md``): on 2 cores an HNSW graph
over 1M 512-d vectors costs minutes to build, and IVF over float or 8-bit codes
scans 10-30x slower per candidate than fast-scan codes; with fast-scan a query can
afford many cells and the exact re-ranking from the floats restores the order.

The 4-bit codes are far from the scores (errors of 0.05-0.3 in the inner product), so
they rank candidates but never decide a match.

State as plain arrays (:meth:`AnnIndex.arrays`): the trained cell centroids and PQ
codebook, nothing per vector: the codes are encoded again from the float vectors on
load, and without the arrays the index is trained again from the vectors.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from collections.abc import Iterator, Mapping
from typing import Any, Literal

import numpy as np

from imageprism.errors import ConfigError, InputError

__all__ = ["EXACT_BELOW", "AnnIndex", "AnnParams", "Exact", "check_arrays", "check_exact", "use_ann"]

#: ``exact=`` values: ``True`` (always exact), ``False`` (approximate), ``"auto"``
Exact = bool | Literal["auto"]

#: with ``exact="auto"``, collections smaller than this are searched exactly (measured:
#: below it the exact scans are fast enough, see ``benchmarks/README.md``)
EXACT_BELOW = 50_000

#: OpenMP threads of faiss while it searches, or adds a few vectors, for this module. One: on
#: the shared 2-core machine of the benchmarks, two threads made searches 4-40x slower whenever
#: other jobs ran (OpenMP threads wait for each other at every call); see ``benchmarks/README.md``
THREADS = 1
#: from this many vectors, training and adding run on faiss's own thread count (every core unless
#: the process set it): one long call, where the threads wait for each other once (1M vectors
#: added: 1.8x faster on 2 idle cores, the time of the first query after a load)
BULK = 10_000
#: a search scans at least about this many codes (all of them in a smaller index)
MIN_SCAN = 1024
_TRAIN_PER_CELL = 32  # k-means sample: points per cell
_PQ_TRAIN = 32_768


def check_exact(exact: object) -> Exact:
    """Validate an ``exact=`` setting."""
    if exact is True or exact is False or exact == "auto":
        return exact
    raise ConfigError(f"exact={exact!r} is invalid; use True (exact search), False (approximate) or 'auto'")


def use_ann(exact: Exact, n: int) -> bool:
    """Whether ``exact`` asks for the approximate structure over ``n`` vectors."""
    return exact is False or (exact == "auto" and n >= EXACT_BELOW)


@dataclasses.dataclass(frozen=True)
class AnnParams:
    """Shape and effort of an :class:`AnnIndex`: cells, sub-codes, cells probed per query."""

    nlist: int
    m: int
    nprobe: int

    @classmethod
    def for_size(cls, n: int, d: int) -> AnnParams:
        """Parameters for about ``n`` vectors of ``d`` dimensions (the measured defaults).

        ``nlist`` about ``sqrt(n)`` (a power of two, 16 to 1024: beyond that the
        k-means training and the cell assignment cost more than they save),
        ``m`` = one 4-bit sub-code per 8 dimensions, ``nprobe`` = ``nlist / 64``
        (at least 8).
        """
        nlist = 1 << int(min(10, max(4, round(math.log2(max(n, 1) ** 0.5)))))
        m = max(d // 8, 1)
        while d % m:
            m -= 1
        return cls(nlist=nlist, m=m, nprobe=_nprobe(nlist))


def _nprobe(nlist: int) -> int:
    return min(nlist, max(8, nlist // 64))


def _faiss() -> Any:
    import faiss

    return faiss


@contextlib.contextmanager
def _threads(n: int = 0) -> Iterator[None]:
    """faiss limited to :data:`THREADS` OpenMP threads for work on ``n < BULK`` vectors (its process-wide setting, restored after)."""
    faiss = _faiss()
    if n >= BULK:
        yield
        return
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(THREADS)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(before)


class AnnIndex:
    """IVF + 4-bit PQ fast-scan over unit float32 vectors, ids chosen by the caller.

    Build with :meth:`trained` (k-means on a sample) or :meth:`from_arrays`, then
    :meth:`add`; :meth:`search` returns candidate ids, to be verified exactly.
    """

    def __init__(self, d: int, params: AnnParams, centroids: np.ndarray, codebook: np.ndarray) -> None:
        faiss = _faiss()
        self.d, self.params = d, params
        self.index = faiss.index_factory(d, f"IVF{params.nlist},PQ{params.m}x4fs", faiss.METRIC_INNER_PRODUCT)
        self.index.quantizer.add(np.ascontiguousarray(centroids, np.float32))
        faiss.copy_array_to_vector(np.ascontiguousarray(codebook, np.float32).ravel(), self.index.pq.centroids)
        self.index.is_trained = True
        self.index.nprobe = params.nprobe
        self.centroids = np.ascontiguousarray(centroids, np.float32)
        self.codebook = np.ascontiguousarray(codebook, np.float32)

    @classmethod
    def trained(cls, vectors: np.ndarray, params: AnnParams | None = None, *, seed: int = 0) -> AnnIndex:
        """An empty index whose cells and codebook are trained on a sample of ``vectors``."""
        faiss = _faiss()
        n, d = vectors.shape
        params = params or AnnParams.for_size(n, d)
        if n < params.nlist:
            raise InputError(f"an approximate index with {params.nlist} cells needs at least that many vectors, got {n}")
        rng = np.random.default_rng(seed)
        size = min(n, max(params.nlist * _TRAIN_PER_CELL, _PQ_TRAIN))
        sample = np.ascontiguousarray(vectors[np.sort(rng.choice(n, size, replace=False))], np.float32)
        probe = faiss.index_factory(d, f"IVF{params.nlist},PQ{params.m}x4fs", faiss.METRIC_INNER_PRODUCT)
        probe.cp.niter = 10
        probe.cp.seed = seed
        probe.cp.max_points_per_centroid = _TRAIN_PER_CELL
        probe.cp.min_points_per_centroid = _TRAIN_PER_CELL  # faiss warns on stderr below 39 per cell otherwise
        with _threads(len(sample)):
            probe.train(sample)
        centroids = probe.quantizer.reconstruct_n(0, params.nlist)
        codebook = faiss.vector_to_array(probe.pq.centroids).reshape(params.m, 16, d // params.m)
        return cls(d, params, centroids, codebook)

    def __len__(self) -> int:
        return int(self.index.ntotal)

    def __repr__(self) -> str:
        p = self.params
        return f"AnnIndex({len(self)} vectors, d={self.d}, nlist={p.nlist}, m={p.m}, nprobe={p.nprobe})"

    def add(self, vectors: np.ndarray, ids: np.ndarray) -> None:
        """Add unit ``vectors`` under ``ids`` (int64)."""
        if len(ids):
            with _threads(len(ids)):
                self.index.add_with_ids(np.ascontiguousarray(vectors, np.float32), np.ascontiguousarray(ids, np.int64))

    def search(self, queries: np.ndarray, k: int, *, nprobe: int | None = None) -> np.ndarray:
        """The ids of up to ``k`` approximate nearest vectors per query, ``(nq, k)``, ``-1`` where fewer.

        Probes ``nprobe`` cells (default: the params'), or more while the index is small:
        at least about ``MIN_SCAN`` codes (a few microseconds), so a small index is scanned whole.
        """
        if not len(self):
            return np.full((len(queries), k), -1, np.int64)
        nlist = self.params.nlist
        self.index.nprobe = min(nlist, max(nprobe or self.params.nprobe, math.ceil(nlist * MIN_SCAN / len(self))))
        with _threads():
            _, found = self.index.search(np.ascontiguousarray(queries, np.float32), k)
        return found

    def arrays(self) -> dict[str, np.ndarray]:
        """The trained state as plain arrays: ``centroids`` ``(nlist, d)`` and ``codebook`` ``(m, 16, d / m)``."""
        return {"centroids": self.centroids, "codebook": self.codebook}

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray], vectors: np.ndarray, *, nprobe: int | None = None) -> AnnIndex:
        """Rebuild from :meth:`arrays` and the float vectors (encoded again, under ids ``0..n-1``).

        Raises :class:`~imageprism.errors.InputError` if the arrays do not fit the vectors.
        """
        check_arrays(arrays, vectors.shape[1])
        centroids, codebook = np.asarray(arrays["centroids"]), np.asarray(arrays["codebook"])
        nlist = len(centroids)
        params = AnnParams(nlist=nlist, m=len(codebook), nprobe=nprobe or _nprobe(nlist))
        index = cls(vectors.shape[1], params, centroids, codebook)
        index.add(vectors, np.arange(len(vectors), dtype=np.int64))
        return index


def check_arrays(arrays: Mapping[str, np.ndarray], d: int) -> None:
    """Raise :class:`~imageprism.errors.InputError` unless ``arrays`` are an :class:`AnnIndex` state for ``d``-d vectors."""
    centroids, codebook = (np.asarray(arrays.get(key, np.empty(0))) for key in ("centroids", "codebook"))
    ok = (
        centroids.dtype == np.float32 and centroids.ndim == 2 and centroids.shape[1] == d and len(centroids) > 0
        and codebook.dtype == np.float32 and codebook.ndim == 3 and codebook.shape[1] == 16 and len(codebook) > 0
        and codebook.shape[0] * codebook.shape[2] == d and np.isfinite(centroids).all() and np.isfinite(codebook).all()
    )
    if not ok:
        raise InputError(
            f"the saved approximate index does not fit {d}-d vectors (centroids {centroids.dtype} {centroids.shape}, "
            f"codebook {codebook.dtype} {codebook.shape}); delete its files to rebuild it from the vectors"
        )
