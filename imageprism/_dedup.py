"""Deduplication: the greedy grouping of the contract, exact, with candidates from an index.

The semantics (``api.md``): inputs are visited in input order; each one joins the
*first* representative (in input order) whose score with it reaches ``threshold``,
otherwise it becomes a representative itself. With several weighted dimensions the
score is the blended score of :func:`imageprism._profiles.blend`.

Comparing every input with every representative is quadratic. Here each weighted
dimension has a *candidate finder* that returns a superset of the representatives
whose score on that dimension can reach the threshold; only candidates are scored
exactly. This loses no match because a blended score (a weighted mean, missing
scores counting 0 or renormalised away) never exceeds the largest per-dimension
score, so a pair reaching ``threshold > 0`` reaches it on at least one dimension.
The result is therefore identical to the brute-force greedy pass.

Finders, by :attr:`~imageprism.dimensions.DimensionPlugin.embedding_kind`:

* ``"bits"`` (packed-bit hashes): the mean fraction of equal bits reaches ``t``
  exactly when the total Hamming distance over all rows is at most
  ``D = floor(rows * bits * (1 - t))``. Multi-index hashing finds every
  representative within ``D``: the code is cut into ``m`` chunks and, by the
  pigeonhole principle, two codes within ``D`` agree up to ``f`` flipped bits on
  some chunk when ``m * (f + 1) > D``; each chunk has a direct-address table, and
  a query probes its chunk values XOR every mask of up to ``f`` bits. A cost model
  picks ``m`` and ``f``, or a flat popcount scan when the radius is too wide.
* ``"vector"`` (cosine): vectors are rotated onto their principal axes (an
  orthogonal map: inner products are unchanged) and cut to the first ``k``
  coordinates plus one coordinate holding the norm of the rest. The inner product
  of two such vectors is, by Cauchy-Schwarz, an upper bound of the cosine, so a
  scan keeping bounds ``>= t - 1e-4`` loses no pair. ``k`` is chosen on a sample
  to minimise scan plus verification cost. Exact and several times cheaper than a
  full scan, but still a (BLAS) scan over the representatives: quadratic with a
  small constant (see ``benchmarks/README.md``).
* ``"bit_variants"`` (hashes with flips, rotations or crops; the score is the best
  alignment of either image's variant groups against the other's whole image):
  ``score >= t`` needs some group of one input within ``D`` bits of group 0 of the
  other, so two multi-index tables (group 0 of the representatives, searched with
  every group of a query; all their groups, searched with the query's group 0).
* ``"other"`` (``face``): no index; every representative is a candidate and pairs
  are scored with the plugin's ``score`` one by one. Exact, but quadratic and slow
  in Python: thousands of images, not millions.

Inputs are processed in blocks: a block is searched against the representatives
so far, then the block's unmatched inputs are resolved among themselves (a flat
search within the block, so a huge cluster of identical images costs at most one
block squared, never the cluster squared), and its new representatives are added
to the indexes.
"""

from __future__ import annotations

import abc
import copy
import dataclasses
import functools
import itertools
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Literal

import numpy as np

from imageprism._math import hamming_similarity
from imageprism._profiles import MISSING_POLICIES, blend
from imageprism._results import Failure
from imageprism.dimensions._base import DimensionPlugin
from imageprism.errors import ConfigError, InputError

__all__ = [
    "DedupColumn",
    "DedupResult",
    "blend_scores",
    "columns_from_embeddings",
    "dedup_embeddings",
    "default_threshold",
    "greedy_labels",
    "labels_brute_force",
]

Kind = Literal["bits", "bit_variants", "vector", "other"]
KINDS: tuple[str, ...] = ("bits", "bit_variants", "vector", "other")

#: inputs per block (see the module docstring)
BLOCK_SIZE = 512
#: slack below the threshold for the float32 bound of reduced vectors
_VECTOR_MARGIN = 1e-4


# -- result -------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, repr=False, eq=False)
class DedupResult:
    """The outcome of a deduplication.

    Attributes:
        unique: indices of the representatives (one per group), in input order.
        labels: for each input, the index of the representative it was grouped
            under (a representative's label is its own index); ``-1`` for an input
            that failed to load (``on_error="skip"``), which is then in ``failures``.
        failures: the inputs that could not be loaded, with their errors.
        threshold: the score at which two inputs were grouped.

    Every input is accounted for: it is a representative, a member of exactly one
    group, or a failure. Arrays are read-only.

    >>> r = DedupResult.from_labels([0, 0, 2, -1], threshold=0.9)
    >>> r.unique.tolist(), r.groups
    ([0, 2], {0: (0, 1), 2: (2,)})
    """

    unique: np.ndarray
    labels: np.ndarray
    failures: tuple[Failure, ...] = ()
    threshold: float = 0.0

    @classmethod
    def from_labels(
        cls, labels: Sequence[int] | np.ndarray, *, threshold: float, failures: Sequence[Failure] = ()
    ) -> DedupResult:
        """Build a result from per-input labels (``-1`` for failed inputs)."""
        labels = np.array(labels, dtype=np.int64).reshape(-1)
        unique = np.flatnonzero(labels == np.arange(len(labels)))
        for array in (labels, unique):
            array.setflags(write=False)
        return cls(unique=unique, labels=labels, failures=tuple(failures), threshold=float(threshold))

    @functools.cached_property
    def groups(self) -> dict[int, tuple[int, ...]]:
        """Representative -> all members of its group: itself first, then the others in input order."""
        order = np.argsort(self.labels, kind="stable")
        sorted_labels = self.labels[order]
        starts = np.flatnonzero(np.r_[True, sorted_labels[1:] != sorted_labels[:-1]]) if len(order) else np.empty(0, int)
        bounds = [*starts.tolist(), len(order)]
        groups = {}
        for lo, hi in itertools.pairwise(bounds):
            rep = int(sorted_labels[lo])
            if rep >= 0:  # the representative first (with keep= it need not be the earliest input)
                groups[rep] = (rep, *(i for i in order[lo:hi].tolist() if i != rep))
        return dict(sorted(groups.items()))

    @property
    def duplicate_groups(self) -> dict[int, tuple[int, ...]]:
        """The groups with more than one member."""
        return {rep: members for rep, members in self.groups.items() if len(members) > 1}

    def to_dict(self) -> dict[str, object]:
        """A JSON-ready dictionary (groups keyed by representative)."""
        return {
            "threshold": self.threshold,
            "unique": self.unique.tolist(),
            "labels": self.labels.tolist(),
            "groups": [{"representative": rep, "members": list(m)} for rep, m in self.groups.items()],
            "failures": [{"index": f.index, "input": f.input, "error": str(f.error)} for f in self.failures],
        }

    def __len__(self) -> int:
        return len(self.labels)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, DedupResult):
            return NotImplemented
        return (
            np.array_equal(self.labels, other.labels)
            and self.threshold == other.threshold
            and [(f.index, str(f.error)) for f in self.failures] == [(f.index, str(f.error)) for f in other.failures]
        )

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        dup = self.duplicate_groups
        return (
            f"DedupResult({len(self.labels)} inputs, {len(self.unique)} unique, "
            f"{len(dup)} groups with duplicates, {len(self.failures)} failures, threshold={self.threshold:g})"
        )


# -- columns: one weighted dimension over all inputs ---------------------------


@dataclasses.dataclass(frozen=True, eq=False)
class DedupColumn:
    """One dimension's embeddings of every input, and how to score them.

    ``kind`` and ``data``:

    * ``"bits"``: ``data`` is a ``uint8`` array ``(n, rows, nbytes)``; the score is the
      mean over rows of :func:`~imageprism._math.hamming_similarity` with ``bits_per_row``.
    * ``"bit_variants"``: the same array, its rows ``variants`` equal groups (flips,
      crops...; group 0 the image itself); the score is the best alignment
      ``max over v of max(m(v, 0), m(0, v))``, ``m`` the mean fraction of equal bits
      between two groups (:attr:`~imageprism.dimensions.DimensionPlugin.bit_variants`).
    * ``"vector"``: ``data`` is a float array ``(n, d)``; the score is the cosine.
    * ``"other"``: ``data`` is a sequence of embeddings (``None`` allowed) and
      ``score`` scores one pair (``None`` when it cannot).
    """

    name: str
    kind: str
    data: object
    bits_per_row: int | None = None
    variants: int = 1
    score: Callable[[np.ndarray | None, np.ndarray | None], float | None] | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ConfigError(f"embedding kind {self.kind!r} of {self.name!r} is unknown; use one of {KINDS}")
        if self.kind == "other" and self.score is None:
            raise ConfigError(f"dimension {self.name!r} of kind 'other' needs a score function")
        if self.kind in ("bits", "bit_variants"):
            data = np.asarray(self.data)
            if data.dtype != np.uint8 or data.ndim != 3 or data.shape[1] % max(self.variants, 1):
                raise InputError(
                    f"{self.name!r} embeddings must stack to a uint8 array (n, rows, nbytes) with rows a multiple "
                    f"of {self.variants} variants, got {data.dtype} {data.shape}"
                )
            object.__setattr__(self, "data", data)
        elif self.kind == "vector":
            data = np.asarray(self.data)
            if data.dtype.kind != "f" or data.ndim != 2:
                raise InputError(f"{self.name!r} embeddings must stack to a float array (n, d), got {data.dtype} {data.shape}")
            object.__setattr__(self, "data", data)

    @property
    def n(self) -> int:
        return len(self.data)  # type: ignore[arg-type]

    @functools.cached_property
    def _norms(self) -> np.ndarray:
        return _row_norms(self.data)  # type: ignore[arg-type]

    def pair_scores(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """Exact scores of the pairs ``(a[i], b[i])`` (input indices), float64; NaN = no score.

        ``bits``: :func:`~imageprism._math.hamming_similarity` averaged over rows, the
        hash dimension's score. ``vector``: ``dot / (|a| |b|)`` in float64, clipped, the
        formula of :func:`~imageprism._math.cosine` (summed in a different order, so
        it can differ from it in the last bit).
        """
        if len(a) == 0:
            return np.empty(0)
        if self.kind == "bits":
            data = self.data
            return hamming_similarity(data[a], data[b], self.bits_per_row).mean(axis=-1)  # type: ignore[index]
        if self.kind == "bit_variants":
            nbytes = self.data.shape[2]  # type: ignore[attr-defined]
            x = self.data[a].reshape(len(a), self.variants, -1, nbytes)  # type: ignore[index]
            y = self.data[b].reshape(len(b), self.variants, -1, nbytes)  # type: ignore[index]
            x_vs_whole_y = hamming_similarity(x, np.broadcast_to(y[:, :1], x.shape), self.bits_per_row).mean(axis=2)
            whole_x_vs_y = hamming_similarity(np.broadcast_to(x[:, :1], y.shape), y, self.bits_per_row).mean(axis=2)
            return np.maximum(x_vs_whole_y.max(axis=1), whole_x_vs_y.max(axis=1))
        if self.kind == "vector":
            data = self.data
            dots = np.einsum("ij,ij->i", data[a].astype(np.float64), data[b].astype(np.float64))  # type: ignore[index]
            denom = self._norms[a] * self._norms[b]
            with np.errstate(invalid="ignore", divide="ignore"):
                return np.where(denom < 1e-12, 0.0, np.clip(dots / denom, -1.0, 1.0))
        assert self.score is not None
        out = np.empty(len(a))
        for i, (x, y) in enumerate(zip(a.tolist(), b.tolist())):
            s = self.score(self.data[x], self.data[y])  # type: ignore[index]
            out[i] = np.nan if s is None else s
        return out

    def finder(self, threshold: float) -> _Finder:
        """A candidate finder that loses no pair scoring ``>= threshold`` on this column."""
        if threshold <= 0 or self.kind == "other" or self.n == 0:
            return _AllPairs()
        if self.kind in ("bits", "bit_variants"):
            n, rows, nbytes = self.data.shape  # type: ignore[attr-defined]
            group = rows // self.variants  # rows per variant
            radius = math.floor(group * (self.bits_per_row or nbytes * 8) * (1.0 - threshold) + 1e-6)
            codes = np.ascontiguousarray(self.data.reshape(n * self.variants, group * nbytes))  # type: ignore[attr-defined]
            if self.kind == "bits":
                return _BitsFinder(codes, radius)
            return _VariantsFinder(codes, radius, self.variants)
        return _VectorFinder(_unit_rows(self.data, self._norms), threshold)  # type: ignore[arg-type]


_CHUNK = 65536


def _row_norms(x: np.ndarray) -> np.ndarray:
    """Float64 L2 norm of each row (in chunks: no float64 copy of a large array)."""
    out = np.empty(len(x))
    for s in range(0, len(x), _CHUNK):
        rows = x[s : s + _CHUNK].astype(np.float64)
        out[s : s + _CHUNK] = np.sqrt(np.einsum("ij,ij->i", rows, rows))
    return out


def _unit_rows(x: np.ndarray, norms: np.ndarray) -> np.ndarray:
    """Rows scaled to unit norm (float32; zero rows stay zero)."""
    safe = np.where(norms > 1e-12, norms, np.inf)
    out = np.empty(x.shape, np.float32)
    for s in range(0, len(x), _CHUNK):
        out[s : s + _CHUNK] = x[s : s + _CHUNK].astype(np.float64) / safe[s : s + _CHUNK, None]
    return out


# -- candidate finders ----------------------------------------------------------


class _Finder(abc.ABC):
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


class _AllPairs(_Finder):
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


def _faiss():  # type: ignore[no-untyped-def]
    """faiss, imported on first use (it is heavy); used by the search index."""
    import faiss

    return faiss


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


class _BitsFinder(_Finder):
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
            dist += _popcount64(a[:, w, None] ^ b[None, :, w])
        q, r = np.nonzero(dist <= self.max_distance)
        return q, r


class _VariantsFinder(_Finder):
    """Exact candidates for best-alignment scores over variant groups (kind ``bit_variants``).

    ``score >= t`` needs, for some ``v``, group ``v`` of one input within ``D`` bits of
    group 0 of the other. Two multi-index tables over the representatives' groups:
    ``whole`` holds group 0 and is searched with every group of the queries; ``every``
    holds all groups and is searched with the queries' group 0. ``codes`` has one
    row per (input, group): row ``i * V + v``.
    """

    def __init__(self, codes: np.ndarray, max_distance: int, variants: int) -> None:
        self.variants = variants
        self.every = _BitsFinder(codes, max_distance, expected=len(codes))
        self.whole = self.every.empty_like()

    def add(self, ids: np.ndarray) -> None:
        self.whole.add(ids * self.variants)
        self.every.add((ids[:, None] * self.variants + np.arange(self.variants)).ravel())

    def query(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        v = self.variants
        q1, r1 = self.every.query(ids * v)
        q2, r2 = self.whole.query((ids[:, None] * v + np.arange(v)).ravel())
        return _union_pairs([(q1, r1 // v), (q2 // v, r2 // v)], int(ids.max(initial=0)) + 1)

    def within(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        v = self.variants
        whole = self.every.words[ids * v]  # (B, words)
        groups = self.every.words[(ids[:, None] * v + np.arange(v)).ravel()]  # (B * V, words)
        x, e = _scan(whole, groups, self.every._close)  # group 0 of x against any group of y
        y = e // v
        close = np.zeros((len(ids), len(ids)), bool)
        close[x, y] = True
        close |= close.T
        i, j = np.nonzero(np.triu(close, k=1))
        return i.astype(np.int64), j.astype(np.int64)


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
    return _popcount64(a ^ b).sum(axis=-1, dtype=np.int64)


def _popcount64(x: np.ndarray) -> np.ndarray:
    if hasattr(np, "bitwise_count"):  # numpy >= 2
        return np.bitwise_count(x)
    return _POPCOUNT[x[..., None].view(np.uint8)].sum(axis=-1, dtype=np.int32)  # pragma: no cover


_POPCOUNT = np.array([(i).bit_count() for i in range(256)], dtype=np.uint8)


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


class _VectorFinder(_Finder):
    """Exact cosine range search: a BLAS scan of principal-axis-reduced vectors, bounded by Cauchy-Schwarz."""

    def __init__(self, unit: np.ndarray, threshold: float) -> None:
        axes, self.k = reduced_dims(unit, threshold)
        self.codes = reduce_vectors(unit, axes, self.k)
        self.radius = np.float32(threshold - _VECTOR_MARGIN)
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


# -- the greedy pass --------------------------------------------------------------


def check_threshold(threshold: float) -> float:
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float, np.floating)) or not 0 <= threshold <= 1:
        raise ConfigError(f"dedup threshold={threshold!r} is invalid; use a number from 0 to 1 (e.g. 0.9)")
    return float(threshold)


def _check_columns(columns: Sequence[DedupColumn], weights: Mapping[str, float], missing: str) -> int:
    if not columns:
        raise ConfigError("dedup needs at least one dimension")
    sizes = {c.name: c.n for c in columns}
    if len(set(sizes.values())) > 1:
        raise InputError(f"every dimension needs one embedding per input; got counts {sizes}")
    weighted = {name for name, w in weights.items() if w > 0}
    if not weighted:
        raise ConfigError(f"dedup needs a positive weight on at least one dimension; got weights {dict(weights)}")
    unknown = weighted - set(sizes)
    if unknown:
        raise ConfigError(f"weights name dimensions without embeddings: {sorted(unknown)}; have {sorted(sizes)}")
    if missing not in MISSING_POLICIES:
        raise ConfigError(f"unknown missing-score policy {missing!r}; valid policies are: {', '.join(MISSING_POLICIES)}")
    return next(iter(sizes.values()))


def blend_scores(
    scores: Mapping[str, np.ndarray], weights: Mapping[str, float], missing: str, n: int
) -> np.ndarray:
    """:func:`~imageprism._profiles.blend` of many pairs at once, bit for bit as pair by pair.

    ``scores`` maps dimensions to float arrays of length ``n`` (NaN: the dimension
    could not score that pair); a dimension absent from ``scores`` is missing for
    every pair. ``blend`` is plain arithmetic, so called on arrays it does the same
    float operations element by element; pairs are grouped by which scores are missing.
    """
    names = list(scores)
    if not names:
        return np.broadcast_to(np.float64(blend({}, weights, missing)), n).copy()
    present = np.stack([~np.isnan(np.asarray(scores[name], np.float64)) for name in names], axis=1)
    # blend() is typed for one pair; on arrays it computes element-wise (see above)
    if present.all():
        return np.broadcast_to(blend(scores, weights, missing), n).astype(np.float64)  # type: ignore[arg-type]
    out = np.empty(n)
    patterns, which = np.unique(present, axis=0, return_inverse=True)
    which = np.asarray(which).ravel()
    for p, pattern in enumerate(patterns):
        rows = np.flatnonzero(which == p)
        subset = {name: np.asarray(scores[name])[rows] for name, ok in zip(names, pattern) if ok}
        out[rows] = blend(subset, weights, missing)  # type: ignore[arg-type]
    return out


class _Scorer:
    """Blended exact scores of input pairs."""

    def __init__(self, columns: Sequence[DedupColumn], weights: Mapping[str, float], missing: str) -> None:
        self.columns = [c for c in columns if weights.get(c.name, 0) > 0]
        self.weights = dict(weights)
        self.missing = missing

    def __call__(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return blend_scores({c.name: c.pair_scores(a, b) for c in self.columns}, self.weights, self.missing, len(a))


def _union_pairs(pairs: list[tuple[np.ndarray, np.ndarray]], width: int) -> tuple[np.ndarray, np.ndarray]:
    if len(pairs) == 1:
        return pairs[0]
    codes = np.unique(np.concatenate([i.astype(np.int64) * width + j for i, j in pairs]))
    return codes // width, codes % width


def greedy_labels(
    columns: Sequence[DedupColumn],
    threshold: float,
    *,
    weights: Mapping[str, float] | None = None,
    missing: str = "zero",
    block_size: int = BLOCK_SIZE,
    on_block: Callable[[int], None] | None = None,
) -> np.ndarray:
    """Greedy dedup labels of ``n`` inputs given as columns of embeddings (exact, index-backed).

    ``weights`` (default: equal) and ``missing`` blend the columns as
    :func:`~imageprism._profiles.blend` does. ``on_block(k)`` is called after each
    block of ``k`` inputs (for progress bars). Returns ``labels`` (int64): the index
    of each input's representative.
    """
    threshold = check_threshold(threshold)
    if weights is None:
        weights = {c.name: 1.0 / len(columns) for c in columns}
    n = _check_columns(columns, weights, missing)
    scorer = _Scorer(columns, weights, missing)
    finders = [c.finder(threshold) for c in scorer.columns]
    if any(isinstance(f, _AllPairs) for f in finders):
        block_size = min(block_size, 64)  # every representative is a candidate: keep the pair arrays small
    labels = np.empty(n, np.int64)
    for start in range(0, n, block_size):
        ids = np.arange(start, min(n, start + block_size), dtype=np.int64)
        labels[ids] = _resolve_block(ids, finders, scorer, threshold, n)
        new_reps = ids[labels[ids] == ids]
        for f in finders:
            f.add(new_reps)
        if on_block is not None:
            on_block(len(ids))
    return labels


def _resolve_block(ids: np.ndarray, finders: Sequence[_Finder], scorer: _Scorer, threshold: float, n: int) -> np.ndarray:
    # 1. the first earlier representative that matches
    q, r = _union_pairs([f.query(ids) for f in finders], n)
    ok = scorer(ids[q], r) >= threshold
    first = np.full(len(ids), n, np.int64)
    np.minimum.at(first, q[ok], r[ok])
    out = np.where(first < n, first, -1)
    # 2. the unmatched resolve among themselves, in order
    free = np.flatnonzero(first == n)
    i, j = _union_pairs([f.within(ids[free]) for f in finders], len(free))
    ok = scorer(ids[free[i]], ids[free[j]]) >= threshold
    i, j = i[ok], j[ok]
    out[free] = ids[free]  # representatives unless an earlier one in the block takes them
    if len(i):
        order = np.lexsort((i, j))
        i, j = i[order], j[order]
        is_rep = np.ones(len(free), bool)
        bounds = np.flatnonzero(np.r_[True, j[1:] != j[:-1], True])
        for lo, hi in zip(bounds[:-1].tolist(), bounds[1:].tolist()):
            later = int(j[lo])
            for earlier in i[lo:hi].tolist():  # ascending: the first representative wins
                if is_rep[earlier]:
                    is_rep[later] = False
                    out[free[later]] = ids[free[earlier]]
                    break
    return out


def labels_brute_force(
    columns: Sequence[DedupColumn],
    threshold: float,
    *,
    weights: Mapping[str, float] | None = None,
    missing: str = "zero",
) -> np.ndarray:
    """The reference greedy pass: each input scored against every representative so far.

    Quadratic; for tests and benchmarks. Same scores and blend as :func:`greedy_labels`.
    """
    threshold = check_threshold(threshold)
    if weights is None:
        weights = {c.name: 1.0 / len(columns) for c in columns}
    n = _check_columns(columns, weights, missing)
    scorer = _Scorer(columns, weights, missing)
    labels = np.empty(n, np.int64)
    reps = np.empty(0, np.int64)
    for x in range(n):
        hits = np.flatnonzero(scorer(np.full(len(reps), x), reps) >= threshold)
        if len(hits):
            labels[x] = reps[hits[0]]
        else:
            labels[x] = x
            reps = np.append(reps, x)
    return labels


# -- from plugins and per-input embeddings -------------------------------------------


#: the default threshold when neither ``threshold=`` nor the profile gives one, by the
#: only dimension in use; other selections must say what they mean by a duplicate
DEFAULT_THRESHOLDS: Mapping[str, float] = {"hash": 0.9}


def default_threshold(profile_threshold: float | None, weights: Mapping[str, float]) -> float:
    """``threshold=`` when omitted: the profile's threshold, else 0.9 for hash alone."""
    if profile_threshold is not None:
        return profile_threshold
    weighted = [name for name, w in weights.items() if w > 0]
    if len(weighted) == 1 and weighted[0] in DEFAULT_THRESHOLDS:
        return DEFAULT_THRESHOLDS[weighted[0]]
    raise ConfigError(
        f"dedup with dimensions {', '.join(weighted)} needs threshold= (no profile threshold applies; "
        "only hash alone has a default, 0.9); e.g. prism.dedup(images, threshold=0.9)"
    )


def columns_from_embeddings(
    embeddings: Sequence[Mapping[str, np.ndarray | None]] | Mapping[str, Sequence[np.ndarray | None] | np.ndarray],
    plugins: Mapping[str, DimensionPlugin],
    weights: Mapping[str, float],
) -> list[DedupColumn]:
    """One :class:`DedupColumn` per weighted dimension, from per-input mappings or per-dimension sequences.

    ``embeddings`` is either a sequence with one ``{dimension: array}`` per input (as
    :meth:`ImagePrism.embed` returns) or a mapping ``{dimension: sequence or stacked
    array}`` (e.g. read back from your own store).
    """
    names = [name for name, w in weights.items() if w > 0]
    by_dim: dict[str, Sequence[np.ndarray | None] | np.ndarray] = {}
    if isinstance(embeddings, Mapping):
        for name in names:
            if name not in embeddings:
                raise InputError(f"embeddings have no {name!r} entry (they have: {', '.join(map(str, embeddings))})")
            by_dim[name] = embeddings[name]
    else:
        rows = list(embeddings)
        for i, row in enumerate(rows):
            if not isinstance(row, Mapping):
                raise InputError(
                    f"embedding {i} is a {type(row).__name__}, not a mapping of dimension to array; "
                    "pass what ImagePrism.embed returns"
                )
            missing = [name for name in names if name not in row]
            if missing:
                raise InputError(f"embedding {i} has no {missing[0]!r} entry (it has: {', '.join(row)}); embed it with this ImagePrism")
        by_dim = {name: [row[name] for row in rows] for name in names}
    return [_column(name, plugins[name], by_dim[name]) for name in names]


def _column(name: str, plugin: DimensionPlugin, values: Sequence[np.ndarray | None] | np.ndarray) -> DedupColumn:
    variants = plugin.bit_variants or 1
    kind = "bit_variants" if variants > 1 else plugin.embedding_kind
    if kind == "other":
        return DedupColumn(name, "other", list(values), score=plugin.score)
    if not isinstance(values, np.ndarray):
        values = list(values)
        bad = next((i for i, v in enumerate(values) if v is None), None)
        if bad is not None:
            raise InputError(f"embedding {bad} has no {name!r} value (None); every input needs one for dedup")
        try:
            values = np.stack([np.asarray(v) for v in values]) if values else _empty(kind)
        except ValueError as exc:
            raise InputError(f"the {name!r} embeddings differ in shape: {exc}") from None
    if kind in ("bits", "bit_variants"):
        return DedupColumn(name, kind, values, bits_per_row=plugin.bits_per_row, variants=variants)
    return DedupColumn(name, "vector", values)


def _empty(kind: str) -> np.ndarray:
    return np.zeros((0, 1, 1), np.uint8) if kind != "vector" else np.zeros((0, 1), np.float32)


def dedup_embeddings(
    embeddings: Sequence[Mapping[str, np.ndarray | None] | None] | Mapping[str, Sequence[np.ndarray | None] | np.ndarray],
    *,
    plugins: Mapping[str, DimensionPlugin],
    weights: Mapping[str, float],
    missing: str,
    threshold: float,
    failures: Sequence[Failure] = (),
    progress: bool | None = None,
) -> DedupResult:
    """Greedy dedup of embedded inputs; entries of failed inputs (``None``, listed in ``failures``) get label -1."""
    from imageprism._runtime import progress_bar

    threshold = check_threshold(threshold)
    if isinstance(embeddings, Mapping):
        ok = None
        n = len(next(iter(embeddings.values()))) if embeddings else 0
    else:
        embeddings = list(embeddings)
        n = len(embeddings)
        failed = {f.index for f in failures}
        ok = np.array([i for i, e in enumerate(embeddings) if i not in failed], dtype=np.int64)
        unexplained = [i for i in ok.tolist() if embeddings[i] is None]
        if unexplained:
            raise InputError(f"embedding {unexplained[0]} is None; every input needs its embeddings for dedup")
        embeddings = [embeddings[i] for i in ok.tolist()]  # type: ignore[misc]
    if n == 0 or (ok is not None and ok.size == 0):  # nothing embedded: no column to build
        return DedupResult.from_labels(np.full(n, -1, np.int64), threshold=threshold, failures=failures)
    columns = columns_from_embeddings(embeddings, plugins, weights)  # type: ignore[arg-type]
    total = columns[0].n if columns else 0
    with progress_bar(total, progress=progress, description="dedup") as bar:
        found = greedy_labels(columns, threshold, weights=weights, missing=missing, on_block=bar.update) if total else np.empty(0, np.int64)
    if ok is None:
        labels = found
    else:
        labels = np.full(n, -1, np.int64)
        labels[ok] = ok[found]
    return DedupResult.from_labels(labels, threshold=threshold, failures=failures)
