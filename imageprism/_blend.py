"""The blend: weights, the missing-score policy and the match threshold as one frozen value.

:func:`blend` is the one place where per-dimension scores become one number;
:class:`Blend` carries the policy around (``ImagePrism``, dedup, the index and its
loader all take one) and applies it to one pair (:meth:`Blend.score`) or to many
pairs at once (:meth:`Blend.scores`, the same float operations element by element).
"""

from __future__ import annotations

import dataclasses
import types
from collections.abc import Mapping

import numpy as np

from imageprism.errors import ConfigError

__all__ = ["MISSING_POLICIES", "Blend", "blend"]

#: how a dimension that could not score a pair is treated by :func:`blend`
MISSING_POLICIES: tuple[str, ...] = ("zero", "renormalize")


def check_missing(missing: str) -> str:
    """``missing`` if it is a known policy, else a :class:`ConfigError` naming the valid ones."""
    if missing not in MISSING_POLICIES:
        raise ConfigError(f"unknown missing-score policy {missing!r}; valid policies are: {', '.join(MISSING_POLICIES)}")
    return missing


def blend(scores: Mapping[str, float | None], weights: Mapping[str, float], missing: str = "zero") -> float:
    """The weighted score: the sum of weight x score over the weighted dimensions.

    ``weights`` come from :func:`~imageprism._profiles.normalize_weights` (they sum
    to 1; any other total is divided out). A dimension whose score is ``None`` or
    absent from ``scores`` could not score the pair: with ``missing="zero"`` it
    contributes 0; with ``"renormalize"`` the weights of the dimensions that did
    score are rescaled to sum to 1. When no weighted dimension scored, the result is
    0.0 under either policy (no evidence of similarity, never a match).

    >>> blend({"hash": 0.9, "face": None}, {"hash": 0.5, "face": 0.5})
    0.45
    >>> blend({"hash": 0.9, "face": None}, {"hash": 0.5, "face": 0.5}, "renormalize")
    0.9
    """
    return float(_combine(scores, weights, check_missing(missing)))


def _combine(
    scores: Mapping[str, float | np.ndarray | None], weights: Mapping[str, float], missing: str
) -> float | np.ndarray:
    """The arithmetic of :func:`blend`, for one pair (floats) or many (arrays, element by element)."""
    weighted: float | np.ndarray = 0.0
    scored_weight = 0.0
    total_weight = 0.0
    for dim, weight in weights.items():
        total_weight += weight
        score = scores.get(dim)
        if score is not None:
            weighted += weight * score
            scored_weight += weight
    denominator = scored_weight if missing == "renormalize" else total_weight
    return weighted / denominator if denominator > 0 else 0.0


@dataclasses.dataclass(frozen=True)
class Blend:
    """How per-dimension scores become one: normalised ``weights``, ``missing`` policy, ``threshold``.

    >>> b = Blend({"hash": 0.5, "face": 0.5}, missing="renormalize", threshold=0.8)
    >>> b.score({"hash": 0.9, "face": None})
    0.9
    >>> b.scores({"hash": np.array([0.9, 0.5]), "face": np.array([np.nan, 0.7])}, 2).tolist()
    [0.9, 0.6]
    """

    weights: Mapping[str, float]
    missing: str = "zero"
    threshold: float | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "weights", types.MappingProxyType(dict(self.weights)))
        check_missing(self.missing)

    @property
    def dimensions(self) -> tuple[str, ...]:
        """Every dimension with a weight (zero weights included: they are computed and reported)."""
        return tuple(self.weights)

    @property
    def weighted(self) -> tuple[str, ...]:
        """The dimensions with a positive weight: the ones that move the blended score."""
        return tuple(name for name, w in self.weights.items() if w > 0)

    def score(self, scores: Mapping[str, float | None]) -> float:
        """The blended score of one pair (:func:`blend`)."""
        return blend(scores, self.weights, self.missing)

    def scores(self, scores: Mapping[str, np.ndarray], n: int) -> np.ndarray:
        """:meth:`score` of many pairs at once, bit for bit as pair by pair.

        ``scores`` maps dimensions to float arrays of length ``n`` (NaN: the dimension
        could not score that pair); a dimension absent from ``scores`` is missing for
        every pair. :func:`blend` is plain arithmetic, so called on arrays it does the
        same float operations element by element; pairs are grouped by which scores
        are missing.
        """
        names = list(scores)
        if not names:
            return np.broadcast_to(np.float64(self.score({})), n).copy()
        arrays = {name: np.asarray(scores[name], np.float64) for name in names}
        present = np.stack([~np.isnan(arrays[name]) for name in names], axis=1)
        if present.all():
            return np.broadcast_to(_combine(arrays, self.weights, self.missing), n).astype(np.float64)
        out = np.empty(n)
        patterns, which = np.unique(present, axis=0, return_inverse=True)
        which = np.asarray(which).ravel()
        for p, pattern in enumerate(patterns):
            rows = np.flatnonzero(which == p)
            out[rows] = _combine({name: arrays[name][rows] for name, ok in zip(names, pattern) if ok}, self.weights, self.missing)
        return out
