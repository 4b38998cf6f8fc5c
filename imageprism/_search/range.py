"""Range search over columns: every pair within a threshold, exact (for dedup).

A *finder* over a column returns a superset of the item pairs whose exact score on
that column can reach ``threshold``; the caller scores those candidates exactly with
:meth:`Column.pair_scores <imageprism._search.columns.Column.pair_scores>`. Finders
work over *representatives* added block by block (:meth:`Finder.add`), query a block
against them (:meth:`Finder.query`) and within itself (:meth:`Finder.within`).
:func:`range_finder` picks one per column: it is the place to swap in another
strategy (e.g. an approximate graph) for a layout.

* bits (:class:`~imageprism._search.columns.BitsColumn`, one variant): the mean
  fraction of equal bits reaches ``t`` exactly when the total Hamming distance over all
  rows is at most ``D = floor(rows * bits * (1 - t))``. Multi-index hashing finds every
  representative within ``D``: the code is cut into ``m`` chunks and, by the pigeonhole
  principle, two codes within ``D`` agree up to ``f`` flipped bits on some chunk when
  ``m * (f + 1) > D``; each chunk has a direct-address table, and a query probes its
  chunk values XOR every mask of up to ``f`` bits. A cost model picks ``m`` and ``f``,
  or a flat popcount scan when the radius is too wide.
* bits with variants (flips, rotations or crops; the score is the best alignment of
  either side's variant groups against the other's whole image): ``score >= t`` needs
  some group of one input within ``D`` bits of group 0 of the other, so two
  multi-index tables (group 0 of the representatives, searched with every group of a
  query; all their groups, searched with the query's group 0).
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

import abc
import copy
import itertools
import math
from collections.abc import Callable

import numpy as np

from imageprism._math import popcount, unit_rows
from imageprism._search.ann import Exact, use_ann
from imageprism._search.cells import MARGIN, TooManyPairsError, near_pairs, reduce_vectors, reduced_dims
from imageprism._search.columns import BitsColumn, Column, VectorColumn

__all__ = ["ANN_BLOCK_SIZE", "ANN_MIN", "BLOCK_SIZE", "AllPairs", "AnnFinder", "Finder", "multihash_params", "range_finder", "union_pairs"]

#: items per block of a range search (see :mod:`imageprism._dedup`)
BLOCK_SIZE = 512
#: items per block with an :class:`AnnFinder` (its candidates are found beforehand: large blocks cost little)
ANN_BLOCK_SIZE = 4096
#: an approximate finder from this many vectors (fewer: the exact scan, cheap at that size)
ANN_MIN = 1000
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
        codes = np.ascontiguousarray(data.reshape(n * column.variants, group * nbytes))
        if column.variants == 1:
            return _BitsFinder(codes, radius)
        return _VariantsFinder(codes, radius, column.variants)
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


class _Buffer:
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


def _scan(
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


class _BitsFinder(Finder):
    """Exact Hamming range search over packed bits: multi-index hashing, or a flat scan.

    Multi-index hashing (Norouzi et al.): the code is cut into ``m`` chunks of ``b``
    bits; two codes within ``D`` bits agree up to ``f`` flipped bits on some chunk
    when ``m * (f + 1) > D``. Each chunk has a direct-address table of ``2**b``
    bucket heads with the representatives chained through ``next``; a query probes
    its chunk value XOR every mask of up to ``f`` bits, walks the chains (all probes
    of a block at once, one chain step per numpy pass), and keeps the
    representatives truly within ``D``. Buckets hold representatives only, so a
    cluster of near-identical inputs never fills them.
    """

    def __init__(self, codes: np.ndarray, max_distance: int, *, expected: int | None = None) -> None:
        pad = -codes.shape[1] % 8  # zero bytes change no distance; 64-bit words popcount fast
        if pad:
            codes = np.concatenate([codes, np.zeros((len(codes), pad), np.uint8)], axis=1)
        self.codes = np.ascontiguousarray(codes)
        self.words = self.codes.view(np.uint64)
        self.max_distance = max_distance
        self.params = multihash_params(codes.shape[1] * 8, max_distance, expected or len(codes))
        if self.params is None:
            self.flat = _Buffer(self.words.shape[1], np.uint64)
            return
        chunks, bits, flips = self.params
        self.keys = _chunk_keys(self.codes, chunks, bits)
        self.masks = np.array(
            [sum(1 << p for p in combo) for j in range(flips + 1) for combo in itertools.combinations(range(bits), j)],
            dtype=np.int32,
        )
        self.heads = np.full((chunks, 1 << bits), -1, np.int32)
        self.next = np.full((len(codes), chunks), -1, np.int32)

    def __repr__(self) -> str:
        return f"_BitsFinder(max_distance={self.max_distance}, multihash={self.params})"

    def empty_like(self) -> _BitsFinder:
        """A finder over the same codes with no representatives (the static arrays are shared)."""
        twin = copy.copy(self)
        if self.params is None:
            twin.flat = _Buffer(self.words.shape[1], np.uint64)
        else:
            twin.heads = np.full_like(self.heads, -1)
            twin.next = np.full_like(self.next, -1)
        return twin

    def add(self, ids: np.ndarray) -> None:
        if not len(ids):
            return
        if self.params is None:
            self.flat.add(ids, self.words[ids])
            return
        for c in range(self.params[0]):
            keys = self.keys[ids, c]
            order = np.argsort(keys, kind="stable")
            k, items = keys[order], ids[order]
            same = np.r_[False, k[1:] == k[:-1]]
            previous = np.where(same, np.r_[-1, items[:-1]], self.heads[c, k])
            self.next[items, c] = previous
            last = np.r_[~same[1:], True]
            self.heads[c, k[last]] = items[last]

    def query(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if self.params is None:
            q, found = _scan(self.words[ids], self.flat.rows[: self.flat.size], self._close)
            return q, self.flat.ids[found]
        chunks, bits, _ = self.params
        nmasks = len(self.masks)
        offsets = (np.arange(chunks, dtype=np.int32) << bits)[None, :, None]
        probe = (self.keys[ids][:, :, None] ^ self.masks[None, None, :]) + offsets  # flat table slots
        cand = self.heads.ravel()[probe.ravel()]
        pos = np.flatnonzero(cand >= 0)
        cand = cand[pos]
        q, c = pos // (chunks * nmasks), (pos // nmasks) % chunks
        found_q, found_r = [], []
        chained = self.next.ravel()
        while len(cand):  # walk the bucket chains, one step for every probe at once
            found_q.append(q)
            found_r.append(cand)
            cand = chained[cand.astype(np.int64) * chunks + c]
            live = cand >= 0
            q, c, cand = q[live], c[live], cand[live]
        if not found_q:
            return np.empty(0, np.int64), np.empty(0, np.int64)
        q, r = np.concatenate(found_q).astype(np.int64), np.concatenate(found_r).astype(np.int64)
        close = _hamming(self.words[ids[q]], self.words[r]) <= self.max_distance
        pairs = np.unique(q[close] * len(self.codes) + r[close])  # a rep can be found through several chunks
        return pairs // len(self.codes), pairs % len(self.codes)

    def within(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        words = self.words[ids]
        return _scan(words, words, self._close, lower=True)

    def _close(self, a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        dist = np.zeros((len(a), len(b)), np.int32)
        for w in range(a.shape[1]):
            dist += popcount(a[:, w, None] ^ b[None, :, w])
        q, r = np.nonzero(dist <= self.max_distance)
        return q, r


class _VariantsFinder(Finder):
    """Exact candidates for best-alignment scores over variant groups (kind ``bit_variants``).

    ``score >= t`` needs, for some ``v``, group ``v`` of one input within ``D`` bits of
    group 0 of the other. ``codes`` has one row per (input, group): row ``i * V + v``.
    One multi-index table holds all groups of *every* input, built once; each input's
    group 0 is searched in it once (cost per input independent of ``V``). A hit on an
    earlier representative is a candidate at once; a hit inside the block serves
    :meth:`within`; a hit on a later input waits in ``pending``, if the query becomes a
    representative, until that input's block is queried. Hits on earlier inputs that
    are not representatives are dropped (a large cluster of near copies still costs
    its size per member: the price of a static table).

    (The earlier design searched group 0 of the representatives with all ``V`` groups
    of each query and scanned each block densely: the superlinear part of dedup.)
    """

    def __init__(self, codes: np.ndarray, max_distance: int, variants: int) -> None:
        self.variants = variants
        self.table = _BitsFinder(codes, max_distance, expected=2 * len(codes))
        self.table.add(np.arange(len(codes), dtype=np.int64))
        self.is_rep = np.zeros(len(codes) // variants, bool)
        self.pending: tuple[np.ndarray, np.ndarray] = (np.empty(0, np.int64), np.empty(0, np.int64))
        self.done = -1  # the largest input queried so far: hits on it or before are stale
        self.found: dict[int, np.ndarray] = {}  # input -> inputs with a variant near its group 0 (last block)

    def _hits(self, ids: np.ndarray) -> dict[int, np.ndarray]:
        """Input -> the other inputs with a variant within range of its whole image (memoised per block)."""
        missing = np.array([i for i in ids.tolist() if i not in self.found], np.int64)
        if len(missing):
            q, r = self.table.query(missing * self.variants)
            y = r // self.variants
            order = np.lexsort((y, q))
            q, y = q[order], y[order]
            keep = np.r_[True, (q[1:] != q[:-1]) | (y[1:] != y[:-1])] & (y != missing[q])
            q, y = q[keep], y[keep]
            cuts = np.searchsorted(q, np.arange(len(missing) + 1))
            for k, x in enumerate(missing.tolist()):
                self.found[x] = y[cuts[k] : cuts[k + 1]]
        return {i: self.found[i] for i in ids.tolist()}

    def add(self, ids: np.ndarray) -> None:
        self.is_rep[ids] = True
        later = [(y[y > self.done], x) for x, y in self._hits(ids).items()]
        targets = np.concatenate([self.pending[0], *(t for t, _ in later)])
        reps = np.concatenate([self.pending[1], *(np.full(len(t), x, np.int64) for t, x in later)])
        self.pending = (targets, reps)

    def query(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        self.done = max(self.done, int(ids.max(initial=-1)))
        self.found = {}
        back_q, back_r = [], []
        for k, ys in enumerate(self._hits(ids).values()):
            ys = ys[self.is_rep[ys]]
            back_q.append(np.full(len(ys), k, np.int64))
            back_r.append(ys)
        targets, reps = self.pending
        position = {x: k for k, x in enumerate(ids.tolist())}
        hit = np.array([t in position for t in targets.tolist()], bool)
        ahead = (np.array([position[t] for t in targets[hit].tolist()], np.int64), reps[hit])
        live = ~hit & (targets > self.done)
        self.pending = (targets[live], reps[live])
        back = (np.concatenate(back_q or [np.empty(0, np.int64)]), np.concatenate(back_r or [np.empty(0, np.int64)]))
        return union_pairs([back, ahead], len(self.is_rep))

    def within(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        position = {x: k for k, x in enumerate(ids.tolist())}
        pairs = set()
        for x, ys in self._hits(ids).items():
            for y in ys.tolist():
                if y in position:
                    a, b = position[x], position[y]
                    pairs.add((a, b) if a < b else (b, a))
        if not pairs:
            return np.empty(0, np.int64), np.empty(0, np.int64)
        i, j = np.array(sorted(pairs), np.int64).T
        return i, j


def _chunk_keys(codes: np.ndarray, chunks: int, bits: int) -> np.ndarray:
    """The integer value of each of ``chunks`` consecutive ``bits``-bit chunks of each code."""
    keys = np.empty((len(codes), chunks), np.int32)
    weights = (1 << np.arange(bits, dtype=np.int64))[::-1]
    for s in range(0, len(codes), _CHUNK):
        unpacked = np.unpackbits(codes[s : s + _CHUNK], axis=1)[:, : chunks * bits]
        keys[s : s + _CHUNK] = unpacked.reshape(len(unpacked), chunks, bits).astype(np.int64) @ weights
    return keys


def _hamming(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Bit differences of rows of 64-bit words."""
    return popcount(a ^ b).sum(axis=-1, dtype=np.int64)


def multihash_params(nbits: int, radius: int, n: int) -> tuple[int, int, int] | None:
    """``(chunks, bits per chunk, flips)`` for an exact range search, or ``None`` for a flat scan.

    Exactness: codes within ``radius`` differ in at most ``flips`` bits on at least one
    of ``chunks`` disjoint chunks when ``chunks * (flips + 1) > radius`` (pigeonhole).
    The cost model counts, per query against ``n / 2`` representatives, probes and
    candidates (~10 ns each) against a flat scan (~1 ns per 64-bit word and code).
    Chunks have at most 20 bits (a 4 MB table each).
    """
    reps = max(n / 2, 1.0)
    best: tuple[float, tuple[int, int, int] | None] = (reps * math.ceil(nbits / 64), None)
    for flips in range(3):
        chunks = -(-(radius + 1) // (flips + 1))
        bits = min(20, nbits // chunks)
        if bits < 8:
            continue
        probes = chunks * sum(math.comb(bits, j) for j in range(flips + 1))
        cost = probes * 10 + probes * reps / 2.0**bits * 10
        if cost < best[0]:
            best = (cost, (chunks, bits, flips))
    return best[1]


_COL_TILE = 16384


class _VectorFinder(Finder):
    """Exact cosine range search: a BLAS scan of principal-axis-reduced vectors, bounded by Cauchy-Schwarz."""

    def __init__(self, unit: np.ndarray, threshold: float) -> None:
        axes, self.k = reduced_dims(unit, threshold)
        self.codes = reduce_vectors(unit, axes, self.k)
        self.radius = np.float32(threshold - MARGIN)
        self.reps = _Buffer(self.codes.shape[1], np.float32)

    def __repr__(self) -> str:
        return f"_VectorFinder(k={self.k} of {self.codes.shape[1]}, radius={self.radius})"

    def add(self, ids: np.ndarray) -> None:
        self.reps.add(ids, self.codes[ids])

    def query(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        q, found = _scan(self.codes[ids], self.reps.rows[: self.reps.size], self._close, tile=BLOCK_SIZE, col_tile=_COL_TILE)
        return q, self.reps.ids[found]

    def within(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        block = self.codes[ids]
        return _scan(block, block, self._close, lower=True, tile=BLOCK_SIZE)

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
