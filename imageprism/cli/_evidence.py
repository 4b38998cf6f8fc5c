"""The evidence behind a dedup: one group id, and each member's score to its representative.

Text, JSON, CSV and the HTML report all read the same :class:`Member` rows, so a
group has one id everywhere (1, 2, ... by representative in input order, counting
groups without duplicates too) and every output shows the same scores.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

import numpy as np

from imageprism._dedup import DedupResult
from imageprism._prism import ImagePrism

__all__ = ["Member", "members"]


@dataclasses.dataclass(frozen=True)
class Member:
    """One grouped input: its group id, whether it is the kept copy, and its score to that copy.

    ``score`` (blended) and ``scores`` (per dimension) are ``None`` for the
    representative itself.
    """

    index: int
    name: str
    group: int
    representative: int
    score: float | None
    scores: Mapping[str, float | None] | None

    @property
    def is_representative(self) -> bool:
        return self.index == self.representative


def members(
    prism: ImagePrism,
    result: DedupResult,
    names: Sequence[str],
    embeddings: Sequence[Mapping[str, np.ndarray | None] | None],
) -> list[Member]:
    """Every grouped input, group by group (representative first); scores via ``compare_embeddings``."""
    rows = []
    for group, (rep, indices) in enumerate(result.groups.items(), 1):
        for i in indices:
            score = scores = None
            if i != rep:
                compared = prism.compare_embeddings(embeddings[i] or {}, embeddings[rep] or {})
                score, scores = compared.weighted_score, dict(compared.scores)
            rows.append(Member(i, names[i], group, rep, score, scores))
    return rows


def score_text(member: Member) -> str:
    """``0.9712 (hash 0.9712)``, or ``kept`` for the representative."""
    if member.score is None or member.scores is None:
        return "kept"
    detail = ", ".join(f"{k} {'n/a' if v is None else f'{v:.4f}'}" for k, v in member.scores.items())
    return f"{member.score:.4f} ({detail})"
