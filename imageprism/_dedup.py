"""Deduplication: the greedy grouping of the contract, exact, with candidates from range search.

The semantics (``api.md``): inputs are visited in input order; each one joins the
*first* representative (in input order) whose score with it reaches ``threshold``,
otherwise it becomes a representative itself. With several weighted dimensions the
score is the blended score of :func:`imageprism._profiles.blend`.

Comparing every input with every representative is quadratic. Here each weighted
dimension is a search column (:mod:`imageprism._search.columns`) with a *finder*
(:func:`imageprism._search.range.range_finder`) that returns a superset of the
representatives whose score on that dimension can reach the threshold; only
candidates are scored exactly. This loses no match because a blended score (a
weighted mean, missing scores counting 0 or renormalised away) never exceeds the
largest per-dimension score, so a pair reaching ``threshold > 0`` reaches it on at
least one dimension. The result is therefore identical to the brute-force greedy pass.

Inputs identical to an earlier one in every scored dimension (scoring the threshold with
themselves) score exactly like it against everything: they take its label, unsearched. The
rest run in blocks: a block is searched against the representatives so far, then resolved
among itself, and its new representatives join the finders.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
from collections.abc import Callable, Mapping, Sequence

import numpy as np

from imageprism._blend import Blend
from imageprism._results import Failure
from imageprism._search.ann import Exact, check_exact
from imageprism._search.columns import Column, ScoreFn, make_column, plugin_column
from imageprism._search.components import DEFAULT_MAX_HOPS, check_linkage, connected_components, identical_leaders
from imageprism._search.range import ANN_BLOCK_SIZE, BLOCK_SIZE, AllPairs, AnnFinder, Finder, range_finder, union_pairs
from imageprism.dimensions._base import DimensionPlugin, Layout
from imageprism.errors import ConfigError, InputError

__all__ = [
    "DedupColumn",
    "DedupResult",
    "blend_scores",
    "columns_from_embeddings",
    "connected_labels",
    "dedup_embeddings",
    "default_threshold",
    "greedy_labels",
    "labels_brute_force",
]

KINDS: tuple[str, ...] = ("bits", "bit_variants", "vector", "other")

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
        scores: with ``linkage="connected"``, each input's exact score with its
            representative (1.0 for a representative, NaN for a failure): a member
            linked through others can score below ``threshold``. ``None`` with the
            greedy linkage, where every member reaches ``threshold`` with its
            representative.

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
    scores: np.ndarray | None = None

    @classmethod
    def from_labels(
        cls,
        labels: Sequence[int] | np.ndarray,
        *,
        threshold: float,
        failures: Sequence[Failure] = (),
        scores: Sequence[float] | np.ndarray | None = None,
    ) -> DedupResult:
        """Build a result from per-input labels (``-1`` for failed inputs) and optional scores to them."""
        labels = np.array(labels, dtype=np.int64).reshape(-1)
        unique = np.flatnonzero(labels == np.arange(len(labels)))
        arrays: list[np.ndarray] = [labels, unique]
        if scores is not None:
            scores = np.array(scores, dtype=np.float64).reshape(-1)
            arrays.append(scores)
        for array in arrays:
            array.setflags(write=False)
        return cls(unique=unique, labels=labels, failures=tuple(failures), threshold=float(threshold), scores=scores)

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
            **({} if self.scores is None else {"scores": [None if np.isnan(s) else s for s in self.scores.tolist()]}),
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

    def __repr__(self) -> str:
        dup = self.duplicate_groups
        return (
            f"DedupResult({len(self.labels)} inputs, {len(self.unique)} unique, "
            f"{len(dup)} groups with duplicates, {len(self.failures)} failures, threshold={self.threshold:g})"
        )


# -- columns: one weighted dimension over all inputs ---------------------------


def DedupColumn(  # noqa: N802 (a constructor in all but name, kept for callers of the old class)
    name: str,
    kind: str,
    data: Sequence[np.ndarray | None] | np.ndarray,
    bits_per_row: int | None = None,
    variants: int = 1,
    score: ScoreFn | None = None,
) -> Column:
    """A search column holding ``data``, by kind name (``bits``, ``bit_variants``, ``vector``, ``other``).

    ``bits``/``bit_variants``: a ``uint8`` array ``(n, rows, nbytes)`` (rows made of
    ``variants`` groups); ``vector``: a float array ``(n, d)``; ``other``: a sequence of
    embeddings scored pair by pair with ``score``.
    """
    if kind not in KINDS:
        raise ConfigError(f"embedding kind {kind!r} of {name!r} is unknown; use one of {KINDS}")
    if kind == "other" and score is None:
        raise ConfigError(f"dimension {name!r} of kind 'other' needs a score function")
    if kind in ("bits", "bit_variants"):
        layout = Layout("bits", bits_per_row=bits_per_row, variants=max(variants, 1))
    else:
        layout = Layout("vector" if kind == "vector" else "pairwise")
    column = make_column(name, layout, score or _no_score)
    column.append(data)
    return column


def _no_score(a: np.ndarray | None, b: np.ndarray | None) -> float | None:
    raise AssertionError("unreachable: bit and vector columns score their pairs themselves")


# -- the greedy pass --------------------------------------------------------------


def check_threshold(threshold: float) -> float:
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float, np.floating)) or not 0 <= threshold <= 1:
        raise ConfigError(f"dedup threshold={threshold!r} is invalid; use a number from 0 to 1 (e.g. 0.9)")
    return float(threshold)


def _check_columns(columns: Sequence[Column], blend: Blend) -> int:
    if not columns:
        raise ConfigError("dedup needs at least one dimension")
    sizes = {c.name: c.n for c in columns}
    if len(set(sizes.values())) > 1:
        raise InputError(f"every dimension needs one embedding per input; got counts {sizes}")
    if not blend.weighted:
        raise ConfigError(f"dedup needs a positive weight on at least one dimension; got weights {dict(blend.weights)}")
    unknown = set(blend.weighted) - set(sizes)
    if unknown:
        raise ConfigError(f"weights name dimensions without embeddings: {sorted(unknown)}; have {sorted(sizes)}")
    return next(iter(sizes.values()))


def blend_scores(scores: Mapping[str, np.ndarray], weights: Mapping[str, float], missing: str, n: int) -> np.ndarray:
    """:meth:`Blend.scores <imageprism._blend.Blend.scores>` for loose weights and policy."""
    return Blend(weights, missing).scores(scores, n)


class _Scorer:
    """Blended exact scores of input pairs."""

    def __init__(self, columns: Sequence[Column], blend: Blend) -> None:
        self.columns = [c for c in columns if blend.weights.get(c.name, 0) > 0]
        self.blend = blend

    def __call__(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return self.blend.scores({c.name: c.pair_scores(a, b) for c in self.columns}, len(a))


def _scorer(columns: Sequence[Column], weights: Mapping[str, float] | None, missing: str) -> tuple[int, _Scorer]:
    """The number of inputs and the scorer of the columns' blend (``weights`` default: equal), checked."""
    blend = Blend(weights if weights is not None else {c.name: 1.0 / len(columns) for c in columns}, missing)
    return _check_columns(columns, blend), _Scorer(columns, blend)


def greedy_labels(
    columns: Sequence[Column],
    threshold: float,
    *,
    weights: Mapping[str, float] | None = None,
    missing: str = "zero",
    block_size: int = BLOCK_SIZE,
    on_block: Callable[[int], None] | None = None,
    exact: Exact = True,
) -> np.ndarray:
    """Greedy dedup labels of ``n`` inputs given as columns of embeddings (exact, index-backed).

    ``weights`` (default: equal) and ``missing`` blend the columns as
    :func:`~imageprism._profiles.blend` does. ``on_block(k)`` is called after each
    block of ``k`` inputs (for progress bars). Returns ``labels`` (int64): the index
    of each input's representative.

    ``exact``: ``True`` (default) finds every candidate; ``False`` finds those of
    vector columns in an approximate index (:class:`~imageprism._search.range.AnnFinder`),
    ``"auto"`` does so from :data:`~imageprism._search.ann.EXACT_BELOW` inputs. Candidates
    are always scored exactly: no input is grouped below the threshold, but an
    approximate search may miss a representative (the input then joins a later
    matching one, or becomes one itself).
    """
    threshold = check_threshold(threshold)
    n, scorer = _scorer(columns, weights, missing)
    leader = identical_leaders(scorer.columns, scorer, threshold, n)
    heads = np.flatnonzero(leader == np.arange(n))
    if len(heads) < n:  # an identical copy scores like its first: it takes that one's label, unsearched
        if on_block is not None:
            on_block(n - len(heads))
        kept = [_subset(c, heads) for c in scorer.columns]
        found = greedy_labels(kept, threshold, weights=scorer.blend.weights, missing=scorer.blend.missing, block_size=block_size, on_block=on_block, exact=exact)
        return heads[found][np.searchsorted(heads, leader)]
    finders = [range_finder(c, threshold, exact=check_exact(exact)) for c in scorer.columns]
    if any(isinstance(f, AllPairs) for f in finders):
        block_size = min(block_size, 64)  # every representative is a candidate: keep the pair arrays small
    elif any(isinstance(f, AnnFinder) for f in finders):
        block_size = max(block_size, ANN_BLOCK_SIZE)  # candidates found beforehand: fewer, larger blocks
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


def _subset(column: Column, positions: np.ndarray) -> Column:
    """A column holding these items of ``column`` (in order)."""
    kept = make_column(column.name, column.layout, column.score, unit_vectors=getattr(column, "unit", False))
    kept.append(column.take(positions))
    return kept


def connected_labels(
    columns: Sequence[Column],
    threshold: float,
    *,
    weights: Mapping[str, float] | None = None,
    missing: str = "zero",
    max_hops: int | None = DEFAULT_MAX_HOPS,
    block_size: int = BLOCK_SIZE,
    on_block: Callable[[int], None] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Connected-linkage dedup labels and each input's score with its representative (exact, index-backed).

    Groups are the connected components of the pairs reaching ``threshold``, split
    so that every member is within ``max_hops`` links of its representative, the
    first input of its group (``None``: no cap); see :mod:`imageprism._search.components`.
    ``weights``, ``missing`` and ``on_block`` as in :func:`greedy_labels`.
    """
    threshold = check_threshold(threshold)
    check_linkage("connected", max_hops)
    _, scorer = _scorer(columns, weights, missing)
    return connected_components(scorer.columns, scorer, threshold, max_hops, block_size=block_size, on_block=on_block)


def _resolve_block(ids: np.ndarray, finders: Sequence[Finder], scorer: _Scorer, threshold: float, n: int) -> np.ndarray:
    # 1. the first earlier representative that matches
    q, r = union_pairs([f.query(ids) for f in finders], n)
    ok = scorer(ids[q], r) >= threshold
    first = np.full(len(ids), n, np.int64)
    np.minimum.at(first, q[ok], r[ok])
    out = np.where(first < n, first, -1)
    # 2. the unmatched resolve among themselves, in order
    free = np.flatnonzero(first == n)
    i, j = union_pairs([f.within(ids[free]) for f in finders], len(free))
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
    columns: Sequence[Column],
    threshold: float,
    *,
    weights: Mapping[str, float] | None = None,
    missing: str = "zero",
) -> np.ndarray:
    """The reference greedy pass: each input scored against every representative so far.

    Quadratic; for tests and benchmarks. Same scores and blend as :func:`greedy_labels`.
    """
    threshold = check_threshold(threshold)
    n, scorer = _scorer(columns, weights, missing)
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


def default_threshold(blend: Blend, plugins: Mapping[str, DimensionPlugin]) -> float:
    """``threshold=`` when omitted: the profile's threshold, else the one weighted dimension's default."""
    if blend.threshold is not None:
        return blend.threshold
    weighted = blend.weighted
    only = plugins.get(weighted[0]) if len(weighted) == 1 else None
    if only is not None and only.default_threshold is not None:
        return only.default_threshold
    defaults = ", ".join(f"{name} alone, {p.default_threshold:g}" for name, p in plugins.items() if p.default_threshold is not None)
    raise ConfigError(
        f"dedup with dimensions {', '.join(weighted)} needs threshold= (no profile threshold applies; "
        f"defaults exist only for one dimension alone: {defaults or 'none in use'}); "
        "e.g. prism.dedup(images, threshold=0.9)"
    )


def columns_from_embeddings(
    embeddings: Sequence[Mapping[str, np.ndarray | None]] | Mapping[str, Sequence[np.ndarray | None] | np.ndarray],
    plugins: Mapping[str, DimensionPlugin],
    weights: Mapping[str, float],
) -> list[Column]:
    """One search column per weighted dimension, from per-input mappings or per-dimension sequences.

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
    return [plugin_column(plugins[name], by_dim[name], name=name) for name in names]


def dedup_embeddings(
    embeddings: Sequence[Mapping[str, np.ndarray | None] | None] | Mapping[str, Sequence[np.ndarray | None] | np.ndarray],
    *,
    plugins: Mapping[str, DimensionPlugin],
    blend: Blend,
    threshold: float,
    failures: Sequence[Failure] = (),
    progress: bool | None = None,
    linkage: str = "representative",
    max_hops: int | None = DEFAULT_MAX_HOPS,
    exact: Exact = True,
) -> DedupResult:
    """Dedup of embedded inputs; entries of failed inputs (``None``, listed in ``failures``) get label -1.

    ``linkage``: ``"representative"`` (the greedy pass) or ``"connected"`` (connected
    components, each member within ``max_hops`` links of its representative; see
    :mod:`imageprism._search.components`). ``exact``: see :func:`greedy_labels`; the
    connected linkage always searches exactly (``exact=False`` with it is an error).
    """
    from imageprism._runtime import progress_bar

    threshold = check_threshold(threshold)
    check_linkage(linkage, max_hops)
    exact = check_exact(exact)
    if linkage == "connected" and exact is False:
        raise ConfigError(
            "exact=False is for linkage='representative'; linkage='connected' searches exactly "
            "(drop exact=False, or use the representative linkage for approximate vector search)"
        )
    source: Sequence[Mapping[str, np.ndarray | None]] | Mapping[str, Sequence[np.ndarray | None] | np.ndarray]
    if isinstance(embeddings, Mapping):
        ok = None
        n = len(next(iter(embeddings.values()))) if embeddings else 0
        source = embeddings
    else:
        rows = list(embeddings)
        n = len(rows)
        failed = {f.index for f in failures}
        ok = np.array([i for i, e in enumerate(rows) if i not in failed], dtype=np.int64)
        unexplained = [i for i in ok.tolist() if rows[i] is None]
        if unexplained:
            raise InputError(f"embedding {unexplained[0]} is None; every input needs its embeddings for dedup")
        source = [e for e in (rows[i] for i in ok.tolist()) if e is not None]
    connected = linkage == "connected"
    if n == 0 or (ok is not None and ok.size == 0):  # nothing embedded: no column to build
        return DedupResult.from_labels(
            np.full(n, -1, np.int64), threshold=threshold, failures=failures, scores=np.full(n, np.nan) if connected else None
        )
    columns = columns_from_embeddings(source, plugins, blend.weights)
    total = columns[0].n if columns else 0
    found, found_scores = np.empty(0, np.int64), np.empty(0)
    with progress_bar(total, progress=progress, description="dedup") as bar:
        if total and connected:
            found, found_scores = connected_labels(
                columns, threshold, weights=blend.weights, missing=blend.missing, max_hops=max_hops, on_block=bar.update
            )
        elif total:
            found = greedy_labels(
                columns, threshold, weights=blend.weights, missing=blend.missing, on_block=bar.update, exact=exact
            )
    scores = np.full(n, np.nan) if connected else None
    if ok is None:
        labels = found
        scores = found_scores if connected else None
    else:
        labels = np.full(n, -1, np.int64)
        labels[ok] = ok[found]
        if scores is not None:
            scores[ok] = found_scores
    return DedupResult.from_labels(labels, threshold=threshold, failures=failures, scores=scores)
