"""Connected linkage for dedup: groups are the connected components of the pairs reaching the threshold.

Dedup's greedy grouping (``linkage="representative"``, :func:`imageprism._dedup.greedy_labels`)
compares each input with its group's representative only, so a copy that matches
another member but not the representative (a centre crop of a photo whose rotated
copy came first) starts a group of its own. ``linkage="connected"`` joins an input
to a group when it reaches the threshold with *any* member:

1. every pair scoring ``>= threshold`` (a *link*) is found with the search layer's
   exact range finders (:func:`imageprism._search.range.range_finder`: candidates,
   then exact blended scores), block by block, and merged into a union-find;
2. each component's representative is its first input (inputs arrive in the keep
   order, so it is the preferred copy).

**The chaining safeguard** is a cap on the number of links between a member and its
representative (``max_hops``). Links can chain: the frames of a slow pan are one
component although the first and last share nothing. A score floor cannot tell this
apart from real copies: two copies of one photo can score as low as two unrelated
photos (a 90-degree-rotated copy and a 60% centre crop of one photo score about 0.6
with each other, each 0.97 or more with the original), so any floor that stops drift
would also split the copies this linkage exists to join. A hop cap bounds drift
without that: a component whose members are not all within ``max_hops`` links of its
representative is split by a walk in keep order: its first unassigned input becomes a
representative and claims the unassigned inputs within ``max_hops`` links of it
(through unassigned inputs); the rest wait for the next representative.
``max_hops=1`` therefore gives exactly the greedy labels (only direct links claim),
``None`` plain connected components. The default, 2, joins every copy that matches
the image another copy matched (copies of one original are two links apart, whichever
came first), and no longer chains. The result reports each input's exact score with
its representative (:attr:`DedupResult.scores <imageprism._dedup.DedupResult.scores>`),
so the weakest member of each group is visible.

Cost: every linked pair is scored once and, for the hop count, kept (two int32); a
cluster of ``m`` near-identical inputs has up to ``m**2 / 2`` links, so past
:data:`MAX_LINKS` a :class:`~imageprism.errors.ConfigError` suggests ``max_hops=None``
(merged as found, nothing kept) or the greedy linkage. Identical embeddings are merged
before the search, so exact copies cost nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Literal

import numpy as np

from imageprism._search.columns import BitsColumn, Column, VectorColumn
from imageprism._search.range import BLOCK_SIZE, AllPairs, Finder, range_finder, union_pairs
from imageprism.errors import ConfigError

__all__ = ["DEFAULT_MAX_HOPS", "LINKAGES", "Linkage", "PairScore", "check_linkage", "connected_components", "identical_leaders"]

#: the grouping rules of dedup, the contract's default first
LINKAGES: tuple[str, ...] = ("representative", "connected")
#: links allowed between a member and its representative under connected linkage
DEFAULT_MAX_HOPS = 2
#: most linked pairs kept for the hop count (two int32 each: 80 MB)
MAX_LINKS = 10_000_000

Linkage = Literal["representative", "connected"]
#: exact scores of the input pairs ``(a[i], b[i])`` (dedup's blended score)
PairScore = Callable[[np.ndarray, np.ndarray], np.ndarray]


def check_linkage(linkage: str, max_hops: int | None) -> None:
    """Refuse an unknown linkage or a ``max_hops`` that is not a positive integer or ``None``."""
    if linkage not in LINKAGES:
        raise ConfigError(f"linkage={linkage!r} is invalid; use {' or '.join(map(repr, LINKAGES))}")
    if max_hops is not None and (isinstance(max_hops, bool) or not isinstance(max_hops, (int, np.integer)) or max_hops < 1):
        raise ConfigError(
            f"max_hops={max_hops!r} is invalid; use a whole number of links of at least 1 (1: the greedy groups; default {DEFAULT_MAX_HOPS}) or None for no cap"
        )


def connected_components(
    columns: Sequence[Column],
    score: PairScore,
    threshold: float,
    max_hops: int | None,
    *,
    block_size: int = BLOCK_SIZE,
    on_block: Callable[[int], None] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Connected-linkage labels of the ``n`` inputs of ``columns`` (exact, index-backed).

    ``columns`` are the scored ones; ``score`` gives exact pair scores, and a pair
    reaching ``threshold`` on it reaches it on some column (true of a weighted mean).
    Inputs are in keep order: a group's representative is its first input. Every
    member is within ``max_hops`` links of its representative (``None``: no cap; see
    the module docstring). Returns ``(labels, scores)``: each input's representative,
    and its exact score with it (1.0 for a representative).
    """
    n = columns[0].n if columns else 0
    leader = identical_leaders(columns, score, threshold, n)  # exact copies: searched and linked as their first
    nodes = np.flatnonzero(leader == np.arange(n))
    labels = np.arange(n, dtype=np.int64)
    found: list[tuple[np.ndarray, np.ndarray]] = []
    count = 0

    def visit(i: np.ndarray, j: np.ndarray) -> None:
        nonlocal count
        _union(labels, i, j)
        if max_hops is None:
            return  # no hop count: nothing to keep
        count += len(i)
        if count > MAX_LINKS:
            raise ConfigError(
                f"connected linkage with max_hops={max_hops} found more than {MAX_LINKS:,} linked pairs (a cluster of "
                "thousands of near-identical images); use max_hops=None (no cap, no pair list kept) or linkage='representative'"
            )
        found.append((i.astype(np.int32), j.astype(np.int32)))

    _links(columns, score, threshold, nodes, visit, block_size, on_block, n - len(nodes))
    if max_hops is not None:
        graph = _Graph(np.concatenate([p[0] for p in found] + [np.empty(0, np.int32)]), np.concatenate([p[1] for p in found] + [np.empty(0, np.int32)]))
        far = np.flatnonzero(graph.hops(labels, max_hops) < 0)
        if len(far):
            _walk(graph, labels, np.flatnonzero(np.isin(labels, labels[far])), max_hops)
    # an exact copy has its leader's links (same scores with everything), so it goes where its leader goes
    labels = labels[leader]
    scores = np.ones(n)
    members = np.flatnonzero(labels != np.arange(n))
    scores[members] = score(members, labels[members])
    return labels, scores


def identical_leaders(columns: Sequence[Column], score: PairScore, threshold: float, n: int) -> np.ndarray:
    """Each input's first input with identical embeddings in every column (itself if none).

    Only array columns can be compared: rows are grouped by a 64-bit hash of their bytes,
    then checked equal. Identical inputs are merged only when the first one's score with
    itself reaches ``threshold`` (a zero vector's does not). Merging only saves work:
    an identical input left unmerged is searched like any other. (Dedup's greedy pass
    gives an identical input its leader's label; the connected linkage links it as its
    leader.)
    """
    lone = np.arange(n, dtype=np.int64)
    if n == 0:
        return lone
    arrays = [np.ascontiguousarray(c.data).reshape(n, -1).view(np.uint8) for c in columns if isinstance(c, (BitsColumn, VectorColumn))]
    if len(arrays) < len(columns):
        return lone
    keys = np.zeros(n, np.uint64)
    for a in arrays:  # a multiply-add hash of each row's 64-bit words (wrapping)
        pad = -a.shape[1] % 8
        words = (np.concatenate([a, np.zeros((n, pad), np.uint8)], axis=1) if pad else a).view(np.uint64)
        weights = np.random.default_rng(len(arrays)).integers(1, 2**63, words.shape[1], dtype=np.uint64) | np.uint64(1)
        for s in range(0, n, 65536):
            keys[s : s + 65536] = keys[s : s + 65536] * np.uint64(0x9E3779B97F4A7C15) + (words[s : s + 65536] * weights).sum(axis=1, dtype=np.uint64)
    _, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
    leader = first[inverse.reshape(-1)].astype(np.int64)
    repeated = np.flatnonzero(leader != lone)
    if len(repeated):
        same = np.all([np.all(a[repeated] == a[leader[repeated]], axis=1) for a in arrays], axis=0)
        heads = np.unique(leader[repeated])
        linked = heads[score(heads, heads) >= threshold]
        keep = same & np.isin(leader[repeated], linked)
        leader[repeated[~keep]] = repeated[~keep]
    return leader


def _links(
    columns: Sequence[Column],
    score: PairScore,
    threshold: float,
    ids: np.ndarray,
    visit: Callable[[np.ndarray, np.ndarray], None],
    block_size: int,
    on_block: Callable[[int], None] | None = None,
    skipped: int = 0,
) -> None:
    """Call ``visit(i, j)`` with every pair of ``ids`` (input indices) scoring ``>= threshold``, block by block.

    ``skipped`` inputs not searched are reported to ``on_block`` with the first block.
    """
    finders: list[Finder] = [range_finder(c, threshold) for c in columns]
    if any(isinstance(f, AllPairs) for f in finders):
        block_size = min(block_size, 64)  # every earlier input is a candidate: keep the pair arrays small
    width = int(ids.max(initial=0)) + 1
    if on_block is not None and skipped:
        on_block(skipped)
    for start in range(0, len(ids), block_size):
        block = ids[start : start + block_size]
        q, r = union_pairs([f.query(block) for f in finders], width)
        ok = score(block[q], r) >= threshold
        visit(r[ok], block[q[ok]])
        a, b = union_pairs([f.within(block) for f in finders], len(block))
        ok = score(block[a], block[b]) >= threshold
        visit(block[a[ok]], block[b[ok]])
        for f in finders:
            f.add(block)
        if on_block is not None:
            on_block(len(block))


def _union(roots: np.ndarray, i: np.ndarray, j: np.ndarray) -> None:
    """Merge the sets of the pairs ``(i, j)`` (in place); every root ends as the smallest index of its set."""
    while len(i):
        _compress(roots)
        ri, rj = roots[i], roots[j]
        apart = ri != rj
        i, j, ri, rj = i[apart], j[apart], ri[apart], rj[apart]
        np.minimum.at(roots, np.maximum(ri, rj), np.minimum(ri, rj))  # hook the larger root under the smaller
    _compress(roots)


def _compress(roots: np.ndarray) -> None:
    while True:
        up = roots[roots]
        if np.array_equal(up, roots):
            return
        roots[:] = up


class _Graph:
    """The links as adjacency lists (both directions, sorted by node)."""

    def __init__(self, i: np.ndarray, j: np.ndarray) -> None:
        ends, others = np.concatenate([i, j]), np.concatenate([j, i])
        order = np.argsort(ends, kind="stable")
        self.ends, self.others = ends[order], others[order]

    def neighbours(self, nodes: np.ndarray) -> np.ndarray:
        """Every neighbour of ``nodes`` (with repeats)."""
        lo, hi = np.searchsorted(self.ends, nodes), np.searchsorted(self.ends, nodes, side="right")
        counts = hi - lo
        starts = np.repeat(lo - np.cumsum(counts) + counts, counts)
        return self.others[starts + np.arange(counts.sum())]

    def hops(self, labels: np.ndarray, max_hops: int) -> np.ndarray:
        """Links from each input to its representative, searched up to ``max_hops`` (-1: further)."""
        dist = np.full(len(labels), -1, np.int64)
        frontier = np.flatnonzero(labels == np.arange(len(labels)))
        dist[frontier] = 0
        for hop in range(1, max_hops + 1):
            reach = np.unique(self.neighbours(frontier))
            frontier = reach[dist[reach] < 0]
            if not len(frontier):
                break
            dist[frontier] = hop
        return dist


def _walk(graph: _Graph, labels: np.ndarray, ids: np.ndarray, max_hops: int) -> None:
    """Relabel the components made of ``ids`` (in place): in order, each unassigned input claims
    the unassigned inputs within ``max_hops`` links of it."""
    assigned = np.zeros(len(labels), bool)
    for u in ids.tolist():  # ascending: keep order
        if assigned[u]:
            continue
        assigned[u] = True
        labels[u] = u
        frontier = np.array([u], np.int64)
        for _ in range(max_hops):
            reach = np.unique(graph.neighbours(frontier))
            frontier = reach[~assigned[reach]]
            if not len(frontier):
                break
            assigned[frontier] = True
            labels[frontier] = u
