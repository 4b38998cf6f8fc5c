"""Exact threshold dedup of hash codes as engine operations: bands, group-by, verify, greedy.

The greedy dedup of :meth:`ImagePrism.dedup` is sequential (each item joins the first
earlier representative it matches), but it needs only the *edges*, the pairs whose
exact score reaches the threshold. Edges can be found in parallel by any engine that
can group rows by a key; the greedy pass over the sparse edge list is then cheap.

1. **Band plan** (:func:`plan_bands`): for packed hashes the score reaches ``t`` exactly
   when the Hamming distance over the ``L`` bits of a variant group is at most
   ``D = floor(L * (1 - t))``. Cut the ``L`` bits into ``m`` bands; by the pigeonhole
   principle two codes within ``D`` agree up to ``f`` flipped bits on some band when
   ``m * (f + 1) > D``. Each item emits a *base* key per band (its group-0 band value)
   and *probe* keys (every group's band value XOR every mask of up to ``f`` bits).
   Random codes collide on a ``w``-bit band with probability ``2**-w``, so candidates
   grow like ``n**2 / 2**w``: the plan picks ``(m, f)`` minimising keys plus expected
   candidates per item and refuses past a budget (:class:`~imageprism.errors.DedupBudgetError`).
2. **Group by key, collapse identical codes, verify** (:func:`partition_edges`): an item
   whose code equals an earlier item's always gets that item's label and never becomes a
   representative, and identical codes share every key, so within each partition the
   first of a set of identical codes (:func:`collapse_identical`) keeps its rows and the
   others become *twin* edges. Rows still sharing a key are candidates (base-base and
   probe-base pairs); each candidate is scored with the exact score
   :meth:`ImagePrism.dedup` uses (:func:`~imageprism._math.best_alignment`); those
   reaching ``t`` are edges. Many keys are processed per call (a partition), vectorised.
3. **Greedy labels from edges** (:func:`labels_from_edges`, :func:`greedy_from_edges`),
   in the order of an explicit order column (distributed tables have no order), over the
   items on edges only (an item without one is its own representative), then expanded
   to the twins.

With variant hashes (flips, rotations, crops; best alignment) ``score >= t`` needs some
group of one code within ``D`` bits of group 0 of the other, which the probe keys of
every group against the base keys of group 0 cover. The result equals
``ImagePrism.dedup`` label for label (tested), whatever the engine.
"""

from __future__ import annotations

import dataclasses
import itertools
import math

import numpy as np

from imageprism._math import best_alignment, popcount
from imageprism.errors import ConfigError, DedupBudgetError, InputError

__all__ = [
    "BandPlan",
    "CodeLayout",
    "band_keys",
    "check_distinct",
    "collapse_identical",
    "dedup_codes",
    "greedy_from_edges",
    "labels_from_edges",
    "partition_edges",
    "plan_bands",
]

#: default budget: expected candidate pairs per item (random codes)
DEFAULT_BUDGET = 200.0
#: a job expecting at most this many candidate pairs in total runs whatever the budget
SMALL_JOB_CANDIDATES = 1e6
#: most key rows one item may emit (each carries the code through the shuffle)
MAX_KEYS_PER_ITEM = 1024
#: candidate pairs verified per numpy pass
_VERIFY_CHUNK = 1 << 18
#: rows sharing a key from which identical codes among them are collapsed (below, their pairs are cheap)
_TWIN_RUN = 32


@dataclasses.dataclass(frozen=True)
class CodeLayout:
    """Packed hash codes ``(n, rows, nbytes)``: ``bits_per_row`` meaningful bits per row, ``variants`` row groups."""

    rows: int
    nbytes: int
    bits_per_row: int
    variants: int = 1

    def __post_init__(self) -> None:
        if self.rows < 1 or self.variants < 1 or self.rows % self.variants or not 0 < self.bits_per_row <= 8 * self.nbytes:
            raise InputError(f"invalid code layout {self}: rows must be a multiple of variants, bits_per_row <= 8 * nbytes")

    @property
    def group_bits(self) -> int:
        """Meaningful bits of one variant group (the ``L`` of the radius)."""
        return self.rows // self.variants * self.bits_per_row

    def radius(self, threshold: float) -> int:
        """Largest Hamming distance over a group's bits whose score still reaches ``threshold``.

        The same rule as the single-machine finders (the mean fraction of equal bits over
        ``L`` bits reaches ``t`` exactly when at most ``floor(L * (1 - t))`` differ).
        """
        return math.floor(self.group_bits * (1.0 - threshold) + 1e-6)

    def scores(self, codes: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """Exact scores of the pairs ``(codes[a[i]], codes[b[i]])``: :func:`~imageprism._math.best_alignment`,
        the one home of the hash score (``ImagePrism.dedup``, the index and the hash dimension call it)."""
        shaped = codes.reshape(len(codes), self.rows, self.nbytes)
        return best_alignment(shaped[a], shaped[b], self.variants, self.bits_per_row)


@dataclasses.dataclass(frozen=True)
class BandPlan:
    """How codes are cut into bands (``widths``, over a group's meaningful bits) and probed (``flips``)."""

    layout: CodeLayout
    radius: int
    widths: tuple[int, ...]
    flips: int

    @property
    def bands(self) -> int:
        return len(self.widths)

    @property
    def masks_per_band(self) -> tuple[int, ...]:
        return tuple(sum(math.comb(w, k) for k in range(self.flips + 1)) for w in self.widths)

    @property
    def keys_per_item(self) -> int:
        """Key rows one item emits: a base key per band, then probes of every group."""
        return sum(1 + self.layout.variants * m - 1 for m in self.masks_per_band)

    def candidates_per_item(self, n: int) -> float:
        """Expected candidate pairs per item among ``n`` uniformly random codes (the scaling model).

        Per band of ``w`` bits an item's keys meet another item's base key with probability
        ``(V * M_w - 1) * 2**-w`` (probes) plus ``2**-w / 2`` (base-base, counted once per pair).
        Clustered real codes collide more: the measured count is what the engine shuffles.
        """
        v = self.layout.variants
        per_pair = sum((v * m - 1 + 0.5) * 2.0 ** -w for w, m in zip(self.widths, self.masks_per_band))
        return max(n - 1, 0) * per_pair

    def cost_per_item(self, n: int) -> float:
        return self.keys_per_item + self.candidates_per_item(n)

    def describe(self, n: int) -> str:
        return (f"{self.bands} bands of {min(self.widths)}-{max(self.widths)} bits, up to {self.flips} flipped bits, "
                f"radius {self.radius}: {self.keys_per_item} keys and ~{self.candidates_per_item(n):.3g} "
                f"candidates per item at n={n:,}")


def plan_bands(layout: CodeLayout, threshold: float, n: int, *, budget: float = DEFAULT_BUDGET) -> BandPlan:
    """The cheapest exact band plan for ``n`` codes at ``threshold``; raises past ``budget``.

    ``budget``: expected candidate pairs per item (:meth:`BandPlan.candidates_per_item`,
    the part that grows with ``n``). Among the plans within it, the one with the fewest
    key rows plus candidates per item (:meth:`BandPlan.cost_per_item`, at most
    :data:`MAX_KEYS_PER_ITEM` keys). Jobs of at most :data:`SMALL_JOB_CANDIDATES`
    candidates in total always fit. When none fits,
    :class:`~imageprism.errors.DedupBudgetError` names the best plan and the fixes.
    """
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0 < threshold <= 1:
        raise ConfigError(f"threshold={threshold!r} is invalid for a band plan; use a number in (0, 1], e.g. 0.9")
    radius = layout.radius(threshold)
    bits = layout.group_bits
    best: BandPlan | None = None
    for flips in range(4):
        bands = min(radius // (flips + 1) + 1, bits)
        if bands * (flips + 1) <= radius:
            continue  # more flips than bits per band: not a valid pigeonhole split
        widths = tuple(bits // bands + (1 if i < bits % bands else 0) for i in range(bands))
        plan = BandPlan(layout, radius, widths, flips)
        if plan.keys_per_item > MAX_KEYS_PER_ITEM:
            continue
        if best is None or (_fits(plan, n, budget), -plan.cost_per_item(n)) > (_fits(best, n, budget), -best.cost_per_item(n)):
            best = plan
    if best is None or not _fits(best, n, budget):
        found = best.describe(n) if best is not None else f"none within {MAX_KEYS_PER_ITEM} keys per item"
        raise DedupBudgetError(
            f"exact dedup of {n:,} codes at threshold {threshold:g} (radius {radius} of {bits} bits) is past the "
            f"budget of {budget:g} candidates per item; the best plan is {found}. Raise the threshold, "
            "raise budget=, or group exact hashes first and use vector search beyond that"
        )
    return best


def _fits(plan: BandPlan, n: int, budget: float) -> bool:
    """Within budget, or small in total (a million candidates verify in about a second)."""
    per_item = plan.candidates_per_item(n)
    return per_item <= budget or per_item * n <= SMALL_JOB_CANDIDATES


# -- keys -------------------------------------------------------------------------------


def _group_bits(codes: np.ndarray, layout: CodeLayout) -> np.ndarray:
    """Meaningful bits of every variant group: ``(n, variants, L)`` uint8."""
    n = len(codes)
    bits = np.unpackbits(codes.reshape(n, layout.rows, layout.nbytes), axis=-1)[..., : layout.bits_per_row]
    return bits.reshape(n, layout.variants, layout.group_bits)


def _mix(h: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser (uint64 in, uint64 out; wrapping arithmetic)."""
    h = h ^ (h >> np.uint64(30))
    h = h * np.uint64(0xBF58476D1CE4E5B9)
    h = h ^ (h >> np.uint64(27))
    h = h * np.uint64(0x94D049BB133111EB)
    return h ^ (h >> np.uint64(31))


def _band_words(bits: np.ndarray) -> np.ndarray:
    """Bits ``(..., w)`` packed into uint64 words ``(..., ceil(w / 64))``."""
    pad = -bits.shape[-1] % 64
    if pad:
        bits = np.concatenate([bits, np.zeros((*bits.shape[:-1], pad), np.uint8)], axis=-1)
    packed = np.packbits(bits, axis=-1)
    return np.ascontiguousarray(packed).view(">u8").astype(np.uint64)


def _masks(width: int, flips: int) -> np.ndarray:
    """Every mask of up to ``flips`` bits over ``width`` bits, as bit arrays ``(M, width)``; row 0 is empty."""
    rows = [np.zeros(width, np.uint8)]
    for k in range(1, flips + 1):
        for combo in itertools.combinations(range(width), k):
            row = np.zeros(width, np.uint8)
            row[list(combo)] = 1
            rows.append(row)
    return np.stack(rows)


def _hash_keys(band: int, words: np.ndarray) -> np.ndarray:
    """An int64 key per band value (words ``(..., W)``); a collision only adds a verified candidate."""
    h = np.full(words.shape[:-1], np.uint64(((band + 1) * 0x9E3779B97F4A7C15) % 2**64), np.uint64)
    for k in range(words.shape[-1]):
        h = _mix(h ^ words[..., k])
    return h.view(np.int64)


def band_keys(codes: np.ndarray, plan: BandPlan) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(keys, item, is_base)``: every key row of these codes (``item`` indexes ``codes``).

    Per band: one base key (group 0's band value) per item, and probe keys (each
    group's band value XOR each mask, except group 0 unmasked, which is the base).
    """
    n = len(codes)
    layout = plan.layout
    bits = _group_bits(codes, layout)
    keys, items, bases = [], [], []
    start = 0
    item_ids = np.arange(n, dtype=np.int64)
    for band, width in enumerate(plan.widths):
        values = bits[:, :, start : start + width]  # (n, V, w)
        start += width
        masks = _band_words(_masks(width, plan.flips))  # (M, W)
        probed = _band_words(values)[:, :, None, :] ^ masks[None, None, :, :]  # (n, V, M, W)
        k = _hash_keys(band, probed).reshape(n, -1)  # (n, V * M); column 0 = group 0 unmasked
        keys.append(k.reshape(-1))
        items.append(np.repeat(item_ids, k.shape[1]))
        base = np.zeros(k.shape, bool)
        base[:, 0] = True
        bases.append(base.reshape(-1))
    if not keys:
        return np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0, bool)
    return np.concatenate(keys), np.concatenate(items), np.concatenate(bases)


# -- candidates and edges -------------------------------------------------------------------


def candidate_pairs(keys: np.ndarray, is_base: np.ndarray, *, max_pairs: float = 5e7) -> tuple[np.ndarray, np.ndarray]:
    """Row pairs ``(r, s)`` sharing a key where ``s`` is a base row (base-base pairs once).

    Raises :class:`~imageprism.errors.DedupBudgetError` when one call would make more than
    ``max_pairs`` pairs (a key shared by very many codes, e.g. flat images).
    """
    order, r, s = _sorted_pairs(keys, is_base, max_pairs)
    return order[r], order[s]


def _sorted_pairs(keys: np.ndarray, is_base: np.ndarray, max_pairs: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`candidate_pairs` as ``(order, r, s)``: positions in the key order ``order``
    (the rows of a pair are neighbours there, which keeps verification in cache)."""
    # one sort: the key (its top bit dropped: a collision only adds a verified candidate) with bases first
    order = np.argsort((keys << 1) | (~is_base).astype(np.int64))
    k = keys[order] << 1
    base = is_base[order]
    starts = np.flatnonzero(np.r_[True, k[1:] != k[:-1]])
    sizes = np.diff(np.r_[starts, len(k)])
    n_base = np.add.reduceat(base.astype(np.int64), starts) if len(k) else np.empty(0, np.int64)
    useful = (sizes > 1) & (n_base > 0)  # most keys meet no other: drop them before making pairs
    if not useful.all():
        keep = np.repeat(useful, sizes)
        order, k = order[keep], k[keep]
        starts = np.r_[0, np.cumsum(sizes[useful])[:-1]].astype(np.int64) if useful.any() else np.empty(0, np.int64)
        sizes, n_base = sizes[useful], n_base[useful]
    run = np.repeat(np.arange(len(starts)), sizes)
    pos = np.arange(len(k)) - starts[run]
    count = np.minimum(pos, n_base[run])
    total = int(count.sum())
    if total > max_pairs:
        raise DedupBudgetError(
            f"{total:,} candidate pairs in one partition (largest key shared by {int(sizes.max()):,} codes); "
            "raise the threshold or the number of partitions, or collapse near-constant images first"
        )
    r = np.repeat(np.arange(len(k)), count)
    s = starts[run[r]] + (np.arange(total) - np.repeat(np.cumsum(count) - count, count))
    return order, r, s


def partition_edges(
    keys: np.ndarray, orders: np.ndarray, is_base: np.ndarray, codes: np.ndarray, layout: CodeLayout, threshold: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Edges ``(a, b, twin)`` (order values, ``a < b``, each once) among key rows of one partition.

    Each row carries its item's order value and whole code. Identical codes sharing a
    crowded key are collapsed first (twins share every key, so the smallest order of the
    set is always among them): it keeps its rows and each other twin becomes an edge
    ``(smallest, twin)`` with ``twin`` set, so a key shared by many copies of one image
    costs one row, not their square. The candidates left are verified with the exact
    score (:meth:`CodeLayout.scores`) after a popcount pre-filter.
    """
    flat = codes.reshape(len(codes), -1)
    keep, twin_a, twin_b = _collapse_twins(keys, orders, flat)
    if not keep.all():
        keys, orders, is_base, flat = keys[keep], orders[keep], is_base[keep], flat[keep]
    order, r, s = _sorted_pairs(keys, is_base, 5e7)
    orders, flat = orders[order], np.take(flat, order, axis=0)  # rows in key order: a pair's rows are neighbours
    differ = orders[r] != orders[s]
    r, s = r[differ], s[differ]
    hit = np.zeros(len(r), bool)  # a pair met in several bands is verified each time (cheaper than sorting pairs)
    for lo in range(0, len(r), _VERIFY_CHUNK):
        cr, cs = r[lo : lo + _VERIFY_CHUNK], s[lo : lo + _VERIFY_CHUNK]
        near = _maybe_near(flat, cr, cs, layout, threshold)
        score = layout.scores(flat, cr[near], cs[near])
        hit[lo : lo + _VERIFY_CHUNK][np.flatnonzero(near)[score >= threshold]] = True
    a, b = orders[r[hit]], orders[s[hit]]
    pairs = np.concatenate([
        np.stack([np.minimum(a, b), np.maximum(a, b), np.zeros(len(a), np.int64)], axis=1),
        np.stack([twin_a, twin_b, np.ones(len(twin_a), np.int64)], axis=1),
    ])
    edges = np.unique(pairs, axis=0)  # the (few) edges, once each
    return edges[:, 0], edges[:, 1], edges[:, 2].astype(bool)


def _collapse_twins(keys: np.ndarray, orders: np.ndarray, flat: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(keep, a, b)``: rows to keep, and twin edges (smallest order ``a`` with the identical code of ``b``).

    Only rows whose key is shared by at least :data:`_TWIN_RUN` rows (counted per hash
    bucket of the key, no sort) are collapsed: that is where identical codes would cost
    their square. Identical codes in smaller runs stay and meet as ordinary edges (score
    1), which the greedy pass handles alike.
    """
    keep = np.ones(len(keys), bool)
    none = np.empty(0, np.int64)
    if len(keys) < _TWIN_RUN:
        return keep, none, none
    buckets = 1 << min(22, max(10, int(len(keys) - 1).bit_length()))
    bucket = (keys.view(np.uint64) & np.uint64(buckets - 1)).astype(np.intp)
    crowded = np.flatnonzero(np.bincount(bucket, minlength=buckets)[bucket] >= _TWIN_RUN)
    if not len(crowded):
        return keep, none, none
    canon = collapse_identical(flat[crowded], orders[crowded])
    twin = canon != orders[crowded]
    keep[crowded[twin]] = False
    return keep, canon[twin].astype(np.int64), orders[crowded][twin].astype(np.int64)


def _maybe_near(flat: np.ndarray, r: np.ndarray, s: np.ndarray, layout: CodeLayout, threshold: float) -> np.ndarray:
    """Pairs whose plain Hamming distance may be within the radius (all pairs for variant codes).

    A necessary condition, one bit loose so float rounding never drops an edge; the exact
    score decides. Padding bits are zero in every code, so they never count.
    """
    if layout.variants != 1:
        return np.ones(len(r), bool)
    words = flat.view(np.uint64) if flat.shape[1] % 8 == 0 and flat.flags.c_contiguous else flat
    differ = popcount(np.take(words, r, axis=0) ^ np.take(words, s, axis=0))
    return differ.sum(axis=1, dtype=np.int64) <= layout.radius(threshold) + 1


# -- identical codes, greedy labels ---------------------------------------------------------


def code_hash(codes: np.ndarray) -> np.ndarray:
    """An int64 hash of each whole code (for partitioning identical codes together)."""
    flat = codes.reshape(len(codes), -1)
    pad = -flat.shape[1] % 8
    if pad:
        flat = np.concatenate([flat, np.zeros((len(flat), pad), np.uint8)], axis=1)
    return _hash_keys(-1, np.ascontiguousarray(flat).view(np.uint64))


def collapse_identical(codes: np.ndarray, orders: np.ndarray) -> np.ndarray:
    """For each item, the smallest order value among the items with an identical code."""
    if not len(codes):
        return np.empty(0, np.int64)
    flat = np.ascontiguousarray(codes.reshape(len(codes), -1))
    _, first_of, inverse = np.unique(code_hash(flat), return_index=True, return_inverse=True)
    inverse = inverse.ravel()
    if not np.array_equal(flat, flat[first_of][inverse]):  # a 64-bit hash collision: compare the bytes
        _, inverse = np.unique(flat, axis=0, return_inverse=True)
        inverse = inverse.ravel()
    first = np.full(inverse.max() + 1, np.iinfo(np.int64).max, np.int64)
    np.minimum.at(first, inverse, orders.astype(np.int64))
    return first[inverse]


def greedy_from_edges(n: int, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """Greedy labels of items ``0..n-1`` (in order) from edges ``i < j`` (duplicates allowed).

    Item ``j`` joins the smallest representative ``i < j`` it has an edge with, else is a
    representative: :meth:`ImagePrism.dedup`'s pass, given every pair reaching the threshold.
    """
    labels = np.arange(n, dtype=np.int64)
    if not len(i):
        return labels
    if np.any(i >= j):
        raise InputError("edges must be given as (i, j) with i < j")
    order = np.lexsort((i, j))
    is_rep = np.ones(n, bool)
    decided = np.zeros(n, bool)
    for a, b in zip(i[order].tolist(), j[order].tolist()):  # by j, then ascending i: first representative wins
        if not decided[b] and is_rep[a]:
            decided[b] = True
            is_rep[b] = False
            labels[b] = a
    return labels


def labels_from_edges(a: np.ndarray, b: np.ndarray, twin: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(items, reps)``: the items that are not their own representative (sorted) and theirs.

    From the edges of :func:`partition_edges` (order values ``a < b``; duplicates
    allowed): the greedy pass over the similarity edges in order-value order, then each
    twin takes its identical code's label. An item with no edge is its own representative,
    so only the items on edges are visited: the driver never needs the whole order column.
    """
    a, b, twin = np.asarray(a, np.int64), np.asarray(b, np.int64), np.asarray(twin, bool)
    if np.any(a >= b):
        raise InputError("edges must be given as (a, b) with a < b")
    by_twin = np.lexsort((a[twin], b[twin]))  # per twin, its smallest identical item first
    tb, ta = b[twin][by_twin], a[twin][by_twin]
    first = np.r_[True, tb[1:] != tb[:-1]][: len(tb)]
    tb, ta = tb[first], ta[first]
    sim = ~twin
    sim[sim] = ~(np.isin(a[sim], tb) | np.isin(b[sim], tb))  # a twin's edges are its canonical item's
    nodes = np.unique(np.concatenate([a[sim], b[sim], ta]))
    labels = nodes[greedy_from_edges(len(nodes), np.searchsorted(nodes, a[sim]), np.searchsorted(nodes, b[sim]))]
    moved = labels != nodes
    items = np.concatenate([nodes[moved], tb])
    reps = np.concatenate([labels[moved], labels[np.searchsorted(nodes, ta)]])
    by_item = np.argsort(items)
    return items[by_item], reps[by_item]


def check_distinct(orders: np.ndarray) -> None:
    """Raise :class:`~imageprism.errors.InputError` naming a repeated order value."""
    values, counts = np.unique(orders, return_counts=True)
    if np.any(counts > 1):
        raise InputError(f"the order column repeats the value {int(values[counts > 1][0])}; "
                         "give each row a distinct order (e.g. its position)")


def dedup_codes(
    codes: np.ndarray, orders: np.ndarray, layout: CodeLayout, threshold: float, *, budget: float = DEFAULT_BUDGET,
) -> np.ndarray:
    """All steps in one process (the reference for engines): each item's representative order value."""
    orders = np.asarray(orders, np.int64)
    check_distinct(orders)
    plan = plan_bands(layout, threshold, len(codes), budget=budget)
    keys, item, base = band_keys(codes, plan)
    rows = np.take(codes.reshape(len(codes), -1), item, axis=0)
    items, reps = labels_from_edges(*partition_edges(keys, orders[item], base, rows, layout, threshold))
    out = orders.copy()
    sorter = np.argsort(orders)
    out[sorter[np.searchsorted(orders, items, sorter=sorter)]] = reps
    return out
