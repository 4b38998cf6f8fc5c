"""Exact Hamming range search over packed bits: the finders of dedup's bit columns.

Both rest on the pigeonhole principle of multi-index hashing (Norouzi et al.): cut a
code into disjoint chunks and give chunk ``i`` a number of *flips* ``f_i``; two codes
within ``D`` bits agree up to ``f_i`` bits on some chunk ``i`` whenever the
``f_i + 1`` add up to more than ``D``. A query probes each chunk's table with its
chunk value XOR every mask of up to ``f_i`` bits; the codes found are candidates,
verified with a popcount.

* :class:`BitsFinder` (one variant, the plain hashes): chunks of equal width, one
  direct-address table per chunk holding the *representatives* only, chained
  (incremental: a cluster of near copies never fills it).
* :class:`VariantsFinder` (best alignment over variant groups, the default robust
  hash): a static :class:`ChunkIndex` over every variant of every input, built once
  and searched once with each input's whole image; its chunks are sized to the table
  by :func:`chunk_plan` (wider chunks and more flips as the table grows, so that
  buckets do not fill in proportion to it).
"""

from __future__ import annotations

import functools
import itertools
import math
from concurrent.futures import ThreadPoolExecutor
from typing import NamedTuple

import numpy as np

from imageprism._math import popcount
from imageprism._search.finder import Buffer, Finder, scan, union_pairs
from imageprism._workers import available_cores

__all__ = ["BitsFinder", "ChunkIndex", "VariantsFinder", "chunk_plan", "multihash_params", "near_rates"]

_CHUNK = 65536


class BitsFinder(Finder):
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
            self.flat = Buffer(self.words.shape[1], np.uint64)
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
        return f"BitsFinder(max_distance={self.max_distance}, multihash={self.params})"

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
            q, found = scan(self.words[ids], self.flat.rows[: self.flat.size], self._close)
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
        return scan(words, words, self._close, lower=True)

    def _close(self, a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return _pairs_within(a, b, self.max_distance)


def _chunk_keys(codes: np.ndarray, chunks: int, bits: int) -> np.ndarray:
    """The integer value of each of ``chunks`` consecutive ``bits``-bit chunks of each code."""
    keys = np.empty((len(codes), chunks), np.int32)
    weights = (1 << np.arange(bits, dtype=np.int64))[::-1]
    for s in range(0, len(codes), _CHUNK):
        unpacked = np.unpackbits(codes[s : s + _CHUNK], axis=1)[:, : chunks * bits]
        keys[s : s + _CHUNK] = unpacked.reshape(len(unpacked), chunks, bits).astype(np.int64) @ weights
    return keys


def _pairs_within(a: np.ndarray, b: np.ndarray, radius: int) -> tuple[np.ndarray, np.ndarray]:
    """Positions ``(i, j)`` of the rows of ``a`` and ``b`` (64-bit words) at most ``radius`` bits apart."""
    dist = np.zeros((len(a), len(b)), np.int32)
    for w in range(a.shape[1]):  # word by word: a reduction over a short last axis costs more
        dist += popcount(a[:, w, None] ^ b[None, :, w])
    q, r = np.nonzero(dist <= radius)
    return q, r


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




# -- a static multi-index table sized to its contents --------------------------------

#: widest chunk of a :class:`ChunkIndex` (its bucket offsets: ``2**bits`` int32, 64 MB)
MAX_CHUNK_BITS = 24
#: most bytes of side words (one 64-bit word per table row and chunk) a :class:`ChunkIndex` keeps
SIDE_BUDGET = 4 << 30
#: most flip masks probed per chunk
_MAX_PROBES = 5000
#: probes or rows a search handles per chunk and pass (temporaries of a few MB at most: in cache, no page faults)
_STEP_ROWS = 1 << 16
#: inputs a :class:`VariantsFinder` searches at a time, ahead of the blocks that need their hits
SEARCH_AHEAD = 8192
#: most queries a thread searches at a time (several per core: the cores share the work evenly)
_PIECE = 1024
# cost model of chunk_plan, in nanoseconds of one core: a probe (one random read of its bucket's bounds, then numpy's
# passes over the probes), a candidate (its side word, read in sequence within the bucket, and a popcount), building one
# chunk (per row: key, sort, side copy; per bucket), and a flat scan (per query, row and 64-bit word). Probe and
# candidate: least squares over one-thread search times of single chunks of the 26-million-row table of 1M robust
# hashes (benchmarks/dedup_scale.py's codes; AMD EPYC, 2 cores, load ~1): (24 bits, 2 flips) 11.1 us per query for 301
# probes and 467 rows, (24, 1) 1.15 us for 25 and 39, (20, 1) 3.5 us for 21 and 521: 28 and 5.6 ns. Build: 12 s of CPU
# for 8 chunks of 26M rows, about 60 ns per row and chunk. The flat scan's 3 ns is the earlier estimate, not re-measured.
_PROBE_NS, _CANDIDATE_NS, _BUILD_ROW_NS, _BUCKET_NS, _FLAT_NS = 30.0, 6.0, 60.0, 2.0, 3.0


def chunk_plan(
    nbits: int, radius: int, table: int, queries: int, near: np.ndarray | None = None,
) -> tuple[tuple[int, int], ...] | None:
    """Consecutive chunks ``(bits, flips)`` for an exact search within ``radius``, or ``None`` for a flat scan.

    Exactness: the chunks are disjoint, and their ``flips + 1`` add up to more than
    ``radius`` (pigeonhole). The plan minimises a cost model of ``queries`` searches of a
    ``table`` of rows: per query, each chunk's probes (``sum over j <= flips of
    comb(bits, j)``) and the rows they find, plus the build of each chunk; against a flat
    popcount scan. A chunk's probes find ``table * near[bits, flips]`` rows: the share of
    row pairs within ``flips`` bits on a chunk of that width, measured on the table
    (:func:`near_rates`), or what random codes give without it. Chunks have
    ``f`` or ``f + 1`` flips, each kind of near-equal width (at most
    :data:`MAX_CHUNK_BITS`; the chunks with a flip more may be wider), so a larger table,
    or one whose rows share chunk values more often (near copies, one scene cropped many
    ways), gets wider chunks with more flips: buckets stay small.
    """
    if radius < 0:
        return ()
    words = -(-nbits // 64)
    best: tuple[float, tuple[tuple[int, int], ...] | None] = (queries * table * words * _FLAT_NS, None)

    def cost(bits: int, flips: int) -> float:
        probes = sum(math.comb(bits, j) for j in range(flips + 1))
        if flips > bits or probes > _MAX_PROBES:
            return math.inf
        found = table * (near if near is not None else _random_rates())[bits, flips]
        return queries * (probes * _PROBE_NS + found * _CANDIDATE_NS) + table * _BUILD_ROW_NS + 2.0**bits * _BUCKET_NS

    for flips in range(4):
        for chunks in range(1, radius + 2):
            extra = max(0, radius + 1 - chunks * (flips + 1))  # chunks that need one flip more
            if extra > chunks:
                continue
            for wide in range(4, MAX_CHUNK_BITS + 1) if 0 < extra < chunks else [0]:  # the extra chunks' width (0: as the rest)
                base, wider = divmod(nbits - wide * extra, chunks - extra if wide else chunks)
                if base < 4:
                    continue
                plan = tuple((wide, flips + 1) for _ in range(extra if wide else 0)) + tuple(
                    (min(MAX_CHUNK_BITS, base + (i < wider)), flips + (not wide and i < extra))
                    for i in range(chunks - extra if wide else chunks)
                )
                total = sum(cost(bits, f) for bits, f in plan)
                if total < best[0]:
                    best = (total, plan)
    return best[1]


#: rows of a table sampled by :func:`near_rates` (their pairs: about half a million)
NEAR_SAMPLE = 1024
#: tables of fewer rows are planned as random codes (a misplan costs little there; the sample would cost more)
NEAR_MIN_TABLE = 100_000
#: most flips :func:`near_rates` measures (``chunk_plan`` tries up to 3, and chunks with one more)
_MAX_FLIPS = 4


@functools.lru_cache(maxsize=1)
def _random_rates() -> np.ndarray:
    """``rates[b, f]`` of random codes: ``sum over j <= f of comb(b, j) / 2**b`` (read-only)."""
    rates = np.array([[min(1.0, sum(math.comb(b, j) for j in range(f + 1)) / 2.0**b) for f in range(_MAX_FLIPS + 1)]
                      for b in range(MAX_CHUNK_BITS + 1)])
    rates.flags.writeable = False
    return rates


def near_rates(columns: list[np.ndarray], nbits: int) -> np.ndarray:
    """``rates[b, f]``: the share of row pairs of the table (word columns) whose ``b``-bit chunks
    differ in at most ``f`` bits, for ``b`` up to :data:`MAX_CHUNK_BITS`: what a probe set of
    ``f`` flips finds, per row of the table.

    Rows that are alike (near copies, one scene cropped many ways) share chunk values far
    more often than random codes, whose rate is ``sum over j <= f of comb(b, j) / 2**b``. The
    rate is measured on the pairs of :data:`NEAR_SAMPLE` rows spread over the table, on
    chunks at three places of the code, and used where the count of such pairs is clearly
    above what random codes would give (three standard deviations and ten pairs more);
    elsewhere, and for tables under :data:`NEAR_MIN_TABLE` rows, the random rate.
    """
    rates = _random_rates()
    size, width = len(columns[0]), min(MAX_CHUNK_BITS, nbits)
    if size < NEAR_MIN_TABLE:
        return rates
    rows = np.linspace(0, size - 1, NEAR_SAMPLE).astype(np.int64)
    sample = [c[rows] for c in columns]
    i, j = np.triu_indices(len(rows), k=1)
    places = sorted({max(0, min(nbits - width, at)) for at in (0, nbits // 3, 2 * nbits // 3)})
    counts = np.zeros((MAX_CHUNK_BITS + 1, _MAX_FLIPS + 1))
    for start in places:
        keys = _bits_at(sample, start, width)
        apart = keys[i] ^ keys[j]  # a chunk of width b: its low b bits
        for b in range(4, width + 1):
            differ = popcount((apart & ((1 << b) - 1)).view(np.uint64))
            counts[b] += np.cumsum(np.bincount(np.minimum(differ, _MAX_FLIPS + 1), minlength=_MAX_FLIPS + 2)[: _MAX_FLIPS + 1])
    pairs = len(i) * len(places)
    expected = rates * pairs
    alike = counts > expected + 3.0 * np.sqrt(expected) + 10.0
    return np.where(alike, counts / pairs, rates)


def packed_words(data: np.ndarray, variants: int, bits_per_row: int | None) -> tuple[np.ndarray, int]:
    """One row of 64-bit words per (input, variant group) of codes ``(n, rows, nbytes)``, and its meaningful bits.

    Row ``i * variants + v`` holds group ``v`` of input ``i``. Whole bytes are a view
    (zero-padded to whole words); rows of ``bits_per_row < 8 * nbytes`` bits are
    packed tight (the same bits in another order: distances are unchanged).
    """
    n, rows, nbytes = data.shape
    group = rows // variants
    flat = data.reshape(n * variants, group * nbytes)
    per_row = bits_per_row or nbytes * 8
    if per_row == nbytes * 8:
        pad = -flat.shape[1] % 8
        if pad:
            flat = np.concatenate([flat, np.zeros((len(flat), pad), np.uint8)], axis=1)
        return np.ascontiguousarray(flat).view(np.uint64), group * nbytes * 8
    nbits = group * per_row
    out = np.zeros((len(flat), -(-nbits // 64) * 8), np.uint8)
    for s in range(0, len(flat), _CHUNK):
        block = flat[s : s + _CHUNK].reshape(-1, group, nbytes)
        bits = np.unpackbits(block, axis=-1)[..., :per_row].reshape(len(block), nbits)
        out[s : s + len(block), : -(-nbits // 8)] = np.packbits(bits, axis=-1, bitorder="little")
    return out.view(np.uint64), nbits


def _bits_at(columns: list[np.ndarray], start: int, bits: int) -> np.ndarray:
    """Bits ``start .. start + bits - 1`` of each row (bit ``p`` is bit ``p % 64`` of word column ``p // 64``)."""
    w, s = divmod(start, 64)
    key = columns[w] >> np.uint64(s)
    if s + bits > 64:
        key |= columns[w + 1] << np.uint64(64 - s)
    key &= np.uint64((1 << bits) - 1)
    return key.view(np.int64)  # under 2**63: the same numbers, no copy


def _bucket_bounds(starts: np.ndarray) -> np.ndarray:
    """Each bucket's range from its first positions ``starts`` (one past the end last): packed ``start | end << 32``
    (uint64: a probe reads one number, not two), or ``starts`` itself from 2**32 rows."""
    if starts[-1] >= 2**32:  # pragma: no cover (over four billion rows)
        return starts
    return starts[:-1].astype(np.uint64) | (starts[1:].astype(np.uint64) << np.uint64(32))


def _flip_masks(bits: int, flips: int) -> np.ndarray:
    return np.array(
        [sum(1 << p for p in combo) for j in range(flips + 1) for combo in itertools.combinations(range(bits), j)],
        dtype=np.int64,
    )


class _Chunk(NamedTuple):
    start: int  # first bit
    bits: int
    masks: np.ndarray  # the flips probed
    order: np.ndarray  # the rows, sorted by their chunk value
    bounds: np.ndarray  # each value's range of order (direct-addressed): see _bucket_bounds
    side_word: int  # the word column copied beside order
    side: np.ndarray | None  # that word of each row of order (None: over the memory budget)


class ChunkIndex:
    """A static multi-index table over rows of packed bits, searched for every row within ``radius``.

    ``words`` ``(T, W)`` uint64 (bits ``nbits`` and above zero), kept as ``W`` word
    columns. Each chunk of :func:`chunk_plan` sorts the rows by their chunk value once
    (``order``), keeps each value's range of ``order`` (``bounds``, direct-addressed) and,
    beside ``order``, a copy of one word of each row that the chunk does not cover
    (``side``, within :data:`SIDE_BUDGET`). A query's probes are ranges of ``order``:
    their ``side`` words are read in sequence, and the rows whose distance on that one
    word is already over ``radius`` (nearly all unrelated codes: 64 random bits differ in
    about 32) are dropped before any random read; the rest are verified on every word.
    All in numpy; queries are split over the available cores (threads: numpy releases the
    GIL in these loops).
    """

    def __init__(self, words: np.ndarray, nbits: int, radius: int, *, queries: int) -> None:
        columns = np.empty((words.shape[1], len(words)), np.uint64)
        for s in range(0, len(words), _CHUNK):  # transposed a block at a time: in cache, several times faster
            columns[:, s : s + _CHUNK] = words[s : s + _CHUNK].T
        self.columns = list(columns)
        self.size = len(words)
        self.radius = radius
        self.plan = chunk_plan(nbits, radius, self.size, queries, near_rates(self.columns, nbits))
        self.flat = np.ascontiguousarray(words) if self.plan is None else None
        self.index_type = np.int32 if self.size < 2**31 else np.int64
        starts = np.cumsum([0, *(bits for bits, _ in self.plan or ())]).tolist()
        self.with_side = self.size * 8 * len(self.plan or ()) <= SIDE_BUDGET
        self.candidates = self.verified = 0  # rows read by the searches so far, and rows checked on every word
        rows = itertools.repeat(np.arange(self.size, dtype=np.int64))  # shared by the chunks' sorts
        with ThreadPoolExecutor(available_cores()) as pool:  # numpy sorts and gathers without the GIL
            self.chunks = list(pool.map(self._chunk, starts, self.plan or (), rows))
        per_query = max((max(len(c.masks), len(c.masks) * self.size >> c.bits) for c in self.chunks), default=1)
        self.step = max(1, _STEP_ROWS // per_query)  # queries per pass of _search

    def _chunk(self, start: int, plan: tuple[int, int], rows: np.ndarray) -> _Chunk:
        bits, flips = plan
        keys = _bits_at(self.columns, start, bits)
        starts = np.zeros((1 << bits) + 1, self.index_type)
        np.cumsum(np.bincount(keys, minlength=1 << bits), out=starts[1:])
        if self.size < 2**32:  # sort (key, row) packed in one integer, in place: several times faster than argsort
            keys <<= 32
            keys |= rows
            keys.sort()
            keys &= 0xFFFFFFFF
            order = keys.astype(self.index_type)
        else:  # pragma: no cover (over four billion rows)
            order = np.argsort(keys, kind="stable").astype(self.index_type)
        del keys
        bounds = _bucket_bounds(starts)
        del starts
        width = len(self.columns)
        side_word = (start // 64 + width // 2 + 1) % width  # a word away from the chunk, where it can
        side = self.columns[side_word][order] if self.with_side else None
        return _Chunk(start, bits, _flip_masks(bits, flips), order, bounds, side_word, side)

    def __repr__(self) -> str:
        return f"ChunkIndex({self.size} rows, radius={self.radius}, chunks={self.plan})"

    def rows(self, ids: np.ndarray) -> list[np.ndarray]:
        """The word columns of these rows (a query's form)."""
        return [c[ids] for c in self.columns]

    def search(self, queries: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """Pairs ``(query position, row)`` within ``radius`` of the query rows (word columns, as :meth:`rows`); a pair can repeat."""
        count = len(queries[0])
        parts = max(1, min(-(-count // _PIECE), count // 128))  # pieces of at most _PIECE queries, shared by the cores
        cuts = np.linspace(0, count, parts + 1).astype(np.int64)
        with ThreadPoolExecutor(min(parts, available_cores())) as pool:
            found = list(pool.map(lambda k: self._search([c[cuts[k] : cuts[k + 1]] for c in queries]), range(parts)))
        self.candidates += sum(f[2] for f in found)
        self.verified += sum(f[3] for f in found)
        return np.concatenate([f[0] + cuts[k] for k, f in enumerate(found)]), np.concatenate([f[1] for f in found])

    def _search(self, queries: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray, int, int]:
        """``search`` on one thread: the pairs, and the counts of rows read and verified."""
        if self.flat is not None:
            q, r = scan(np.stack(queries, axis=1), self.flat, self._close)
            return q, r, len(queries[0]) * len(self.flat), len(queries[0]) * len(self.flat)
        found_q, found_r = [], []
        candidates = verified = 0
        for s in range(0, len(queries[0]), self.step):  # a few queries at a time: the temporaries stay in cache
            part = [c[s : s + self.step] for c in queries]
            for chunk in self.chunks:
                q, rows, read = self._probe(chunk, part)
                candidates += read
                verified += len(rows)
                dist = np.zeros(len(rows), np.int32)
                for w in range(len(self.columns)):
                    dist += popcount(self.columns[w][rows] ^ part[w][q])
                close = dist <= self.radius
                found_q.append(q[close] + s)
                found_r.append(rows[close].astype(np.int64))
        if not found_q:
            return np.empty(0, np.int64), np.empty(0, np.int64), candidates, verified
        return np.concatenate(found_q), np.concatenate(found_r), candidates, verified

    def _probe(self, chunk: _Chunk, queries: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray, int]:
        """The candidates of one chunk: (query position, row) pairs left by the side word, and the count of rows read."""
        probe = (_bits_at(queries, chunk.start, chunk.bits)[:, None] ^ chunk.masks[None, :]).ravel()  # by query, then mask
        if chunk.bounds.dtype == np.uint64:  # one read per probe (take: faster than fancy indexing)
            both = np.take(chunk.bounds, probe)
            lo = (both & np.uint64(0xFFFFFFFF)).astype(self.index_type)
            sizes = (both >> np.uint64(32)).astype(self.index_type)
        else:  # pragma: no cover (over four billion rows)
            lo, sizes = np.take(chunk.bounds, probe), np.take(chunk.bounds, probe + 1)
        sizes -= lo
        hit = np.flatnonzero(sizes)
        owner = hit // len(chunk.masks)  # the query of each probe that hit
        lo, sizes = lo[hit], sizes[hit]
        ends = np.cumsum(sizes, dtype=np.int64)
        total = int(ends[-1]) if len(ends) else 0
        lo -= (ends - sizes).astype(lo.dtype)
        at = np.repeat(lo, sizes)
        at += np.arange(total, dtype=at.dtype)  # each hit's rows: consecutive positions of order
        if chunk.side is not None:  # one word first, read in sequence: most candidates stop here
            side = np.take(chunk.side, at)
            side ^= np.repeat(np.take(queries[chunk.side_word], owner), sizes)
            near = np.flatnonzero(popcount(side) <= self.radius)
            at, q = at[near], owner[np.searchsorted(ends, near, side="right")]
        else:
            q = np.repeat(owner, sizes)
        return q, np.take(chunk.order, at), total

    def _close(self, a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return _pairs_within(a, b, self.radius)


def _positions(ids: np.ndarray, values: np.ndarray) -> np.ndarray:
    """The position in ``ids`` (distinct) of each of ``values`` (each one of ``ids``)."""
    sorter = np.argsort(ids, kind="stable")
    return sorter[np.searchsorted(ids, values, sorter=sorter)]


class VariantsFinder(Finder):
    """Exact candidates for best-alignment scores over variant groups (kind ``bit_variants``).

    ``score >= t`` needs, for some ``v``, group ``v`` of one input within ``D`` bits of
    group 0 (the whole image) of the other. One :class:`ChunkIndex` holds every group
    of *every* input, built once; each input's group 0 is searched in it once (its
    *hits*: the inputs with a group in range), so the two directions of the rule are
    the hits of either side. A hit on an earlier representative is a candidate at
    once; a hit inside the block serves :meth:`within`; a hit on a later input waits
    in ``pending``, if the query becomes a representative, until that input's block
    is queried. Hits on earlier inputs that are not representatives are dropped (a
    cluster of ``m`` near copies still costs ``m`` per member: the price of a static
    table; identical copies are merged before the search, see :mod:`imageprism._dedup`).
    Everything is arrays: no per-input Python.
    """

    def __init__(self, data: np.ndarray, bits_per_row: int | None, max_distance: int, variants: int) -> None:
        words, nbits = packed_words(data, variants, bits_per_row)
        self.variants = variants
        self.n = len(data)
        self.index = ChunkIndex(words, nbits, max_distance, queries=self.n)
        self.is_rep = np.zeros(self.n, bool)
        empty = np.empty(0, np.int64)
        self.pending = (empty, empty)  # (later input, representative that hit it)
        self.done = -1  # the largest input queried so far: hits on it or before are stale
        self.memo = (0, 0, empty, empty)  # inputs lo..hi-1 searched ahead, and their hits as pairs (x, y), sorted

    def __repr__(self) -> str:
        return f"VariantsFinder({self.index!r})"

    def _hits(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Pairs ``(x, y)``, ``x`` in ``ids``: input ``y != x`` has a group within range of ``x``'s whole image.

        The searches run ahead of the blocks (:data:`SEARCH_AHEAD` inputs at a time, in input
        order, as dedup asks): the cores share one large search instead of many small ones.
        """
        lo, hi, xs, ys = self.memo
        first, last = int(ids.min(initial=0)), int(ids.max(initial=-1))
        if len(ids) and not lo <= first <= last < hi:
            start = hi if lo <= first <= hi else first
            end = max(last + 1, min(self.n, start + SEARCH_AHEAD))
            todo = np.arange(start, end, dtype=np.int64)
            q, rows = self.index.search(self.index.rows(todo * self.variants))
            x, y = todo[q], rows // self.variants
            pairs = np.unique(x[x != y] * self.n + y[x != y])
            kept = xs >= first if start == hi else np.zeros(len(xs), bool)
            xs, ys = np.concatenate([xs[kept], pairs // self.n]), np.concatenate([ys[kept], pairs % self.n])
            self.memo = lo, hi, xs, ys = (first if start == hi else start), end, xs, ys
        a, b = np.searchsorted(xs, [first, last + 1])
        mine = a + np.flatnonzero(np.isin(xs[a:b], ids))
        return xs[mine], ys[mine]

    def add(self, ids: np.ndarray) -> None:
        self.is_rep[ids] = True
        x, y = self._hits(ids)
        later = y > self.done
        self.pending = (np.concatenate([self.pending[0], y[later]]), np.concatenate([self.pending[1], x[later]]))

    def query(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        self.done = max(self.done, int(ids.max(initial=-1)))
        x, y = self._hits(ids)
        back = y[self.is_rep[y]]
        back_q = _positions(ids, x[self.is_rep[y]])
        targets, reps = self.pending
        hit = np.isin(targets, ids)
        ahead = (_positions(ids, targets[hit]), reps[hit])
        live = ~hit & (targets > self.done)
        self.pending = (targets[live], reps[live])
        return union_pairs([(back_q, back), ahead], self.n)

    def within(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        x, y = self._hits(ids)
        inside = np.isin(y, ids)
        a, b = _positions(ids, x[inside]), _positions(ids, y[inside])
        pairs = np.unique(np.minimum(a, b) * len(ids) + np.maximum(a, b))
        return pairs // len(ids), pairs % len(ids)
