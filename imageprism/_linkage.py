"""Connected linkage for dedup: groups are the connected components of the pairs reaching the threshold.

Greedy grouping (``linkage="representative"``, :func:`imageprism._dedup.greedy_labels`)
compares each input with its group's representative only, so a copy that matches
another member but not the representative (a centre crop of a photo whose rotated
copy came first) starts a group of its own. ``linkage="connected"`` joins an input
to a group when it reaches the threshold with *any* member:

1. every pair scoring ``>= threshold`` is found with the search layer's exact range
   finders (:func:`imageprism._search.range.range_finder`: candidates, then exact
   blended scores), block by block, and merged into a union-find; no pair list is
   kept, so memory stays bounded by one block's candidates;
2. each component's representative is its first input (inputs arrive in the keep
   order, so it is the preferred copy), and every member is scored against it.

**The chaining safeguard** is a floor on that score. Links of ``>= threshold`` can
chain: a slow pan of a hundred frames is one component although its first and last
frames share nothing. A member must score at least ``floor`` with its
representative; a component with a member below the floor is split by a walk in
keep order: its first unassigned input becomes a representative and claims the
unassigned inputs it reaches through links of ``>= threshold`` that score at least
``floor`` with it; the rest wait for the next representative. ``floor >= threshold``
therefore gives exactly the greedy labels (only direct links qualify) and
``floor=0`` plain connected components (for scores in [0, 1]). The default,
``2 * threshold - 1`` (0.8 at 0.9), is the lowest score two links can give when
``1 - score`` is a distance (Hamming distance of plain hashes obeys the triangle
inequality): every copy two links from the representative is kept, longer chains
only while they stay as close as two links would. The result reports each input's
score with its representative (:attr:`DedupResult.scores`), so the weakest member of
each group is visible.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Literal

import numpy as np

from imageprism._dedup import _check_columns, _policy, _Scorer, check_threshold
from imageprism._search.columns import Column
from imageprism._search.range import BLOCK_SIZE, AllPairs, Finder, range_finder, union_pairs
from imageprism.errors import ConfigError

__all__ = ["LINKAGES", "Linkage", "check_linkage", "connected_labels", "default_floor"]

#: the grouping rules of dedup, the contract's default first
LINKAGES: tuple[str, ...] = ("representative", "connected")

Linkage = Literal["representative", "connected"]


def check_linkage(linkage: str, floor: float | None) -> None:
    """Refuse an unknown linkage, or a floor without connected linkage or outside [0, 1]."""
    if linkage not in LINKAGES:
        raise ConfigError(f"linkage={linkage!r} is invalid; use {' or '.join(map(repr, LINKAGES))}")
    if floor is None:
        return
    if linkage != "connected":
        raise ConfigError(f"floor={floor!r} applies to linkage='connected' only; add linkage='connected' or drop floor")
    if isinstance(floor, bool) or not isinstance(floor, (int, float, np.floating)) or not 0 <= floor <= 1:
        raise ConfigError(f"floor={floor!r} is invalid; use a score from 0 to 1 (e.g. 0.8; at or above the threshold it gives the greedy groups)")


def default_floor(threshold: float) -> float:
    """``2 * threshold - 1`` (at least 0): the score two links of ``threshold`` guarantee for a distance."""
    return max(0.0, 2.0 * threshold - 1.0)


def connected_labels(
    columns: Sequence[Column],
    threshold: float,
    *,
    weights: Mapping[str, float] | None = None,
    missing: str = "zero",
    floor: float | None = None,
    block_size: int = BLOCK_SIZE,
    on_block: Callable[[int], None] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Connected-linkage dedup labels of ``n`` inputs given as columns (exact, index-backed).

    Inputs are in keep order: a group's representative is its first input.
    ``floor`` (default :func:`default_floor`) is the least score a member may have
    with its representative (see the module docstring). Returns ``(labels, scores)``:
    each input's representative, and its exact score with it (1.0 for a representative).
    """
    threshold = check_threshold(threshold)
    floor = default_floor(threshold) if floor is None else float(floor)
    check_linkage("connected", floor)
    blend = _policy(columns, weights, missing)
    n = _check_columns(columns, blend)
    scorer = _Scorer(columns, blend)
    roots = np.arange(n, dtype=np.int64)

    def merge(i: np.ndarray, j: np.ndarray) -> None:
        _union(roots, i, j)

    _links(columns, scorer, threshold, np.arange(n, dtype=np.int64), merge, block_size, on_block)
    labels = roots
    scores = _scores_to(scorer, labels)
    bad = np.unique(labels[scores < floor])
    if len(bad):
        _split(columns, scorer, threshold, floor, labels, np.flatnonzero(np.isin(labels, bad)), block_size)
        scores = _scores_to(scorer, labels)
    return labels, scores


def _links(
    columns: Sequence[Column],
    scorer: _Scorer,
    threshold: float,
    ids: np.ndarray,
    visit: Callable[[np.ndarray, np.ndarray], None],
    block_size: int,
    on_block: Callable[[int], None] | None = None,
) -> None:
    """Call ``visit(i, j)`` with every pair of ``ids`` (input indices) scoring ``>= threshold``, block by block."""
    finders: list[Finder] = [range_finder(c, threshold) for c in scorer.columns]
    if any(isinstance(f, AllPairs) for f in finders):
        block_size = min(block_size, 64)  # every earlier input is a candidate: keep the pair arrays small
    width = int(ids.max(initial=0)) + 1
    for start in range(0, len(ids), block_size):
        block = ids[start : start + block_size]
        q, r = union_pairs([f.query(block) for f in finders], width)
        ok = scorer(block[q], r) >= threshold
        visit(r[ok], block[q[ok]])
        i, j = union_pairs([f.within(block) for f in finders], len(block))
        ok = scorer(block[i], block[j]) >= threshold
        visit(block[i[ok]], block[j[ok]])
        for f in finders:
            f.add(block)
        if on_block is not None:
            on_block(len(block))


def _union(roots: np.ndarray, i: np.ndarray, j: np.ndarray) -> None:
    """Merge the sets of the pairs ``(i, j)``; every root stays the smallest index of its set."""
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


def _scores_to(scorer: _Scorer, labels: np.ndarray) -> np.ndarray:
    scores = np.ones(len(labels))
    members = np.flatnonzero(labels != np.arange(len(labels)))
    scores[members] = scorer(members, labels[members])
    return scores


def _split(
    columns: Sequence[Column],
    scorer: _Scorer,
    threshold: float,
    floor: float,
    labels: np.ndarray,
    ids: np.ndarray,
    block_size: int,
) -> None:
    """Relabel the components made of ``ids`` by the floor walk (in place): links are found again, within them."""
    found: list[tuple[np.ndarray, np.ndarray]] = []
    _links(columns, scorer, threshold, ids, lambda i, j: found.append((i, j)), block_size)
    i = np.concatenate([p[0] for p in found] + [np.empty(0, np.int64)])
    j = np.concatenate([p[1] for p in found] + [np.empty(0, np.int64)])
    ends = np.concatenate([i, j])
    others = np.concatenate([j, i])
    order = np.argsort(ends, kind="stable")
    ends, others = ends[order], others[order]
    assigned = np.zeros(len(labels), bool)
    for u in ids.tolist():  # ascending: keep order
        if assigned[u]:
            continue
        assigned[u] = True
        labels[u] = u
        checked = {u}
        frontier = np.array([u], np.int64)
        while len(frontier):
            lo, hi = np.searchsorted(ends, frontier), np.searchsorted(ends, frontier, side="right")
            reach = np.unique(np.concatenate([others[a:b] for a, b in zip(lo.tolist(), hi.tolist())]))
            reach = np.array([v for v in reach.tolist() if not assigned[v] and v not in checked], np.int64)
            checked.update(reach.tolist())
            if not len(reach):
                break
            frontier = reach[scorer(reach, np.full(len(reach), u)) >= floor]
            assigned[frontier] = True
            labels[frontier] = u
