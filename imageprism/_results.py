"""Immutable result objects returned by :class:`~imageprism.ImagePrism`."""

from __future__ import annotations

import dataclasses
import types
from collections.abc import Mapping
from typing import Optional

from imageprism._types import Embeddings
from imageprism.errors import ImagePrismError

__all__ = ["BatchEmbedding", "CompareResult", "EmbeddedImage", "Failure", "SearchHit"]



def _frozen(mapping: Mapping[str, object]) -> Mapping[str, object]:
    return types.MappingProxyType(dict(mapping))


@dataclasses.dataclass(frozen=True)
class CompareResult:
    """How similar two images are, per dimension and blended.

    ``scores`` maps each dimension to its score (``None`` when the dimension cannot
    score the pair, e.g. no face). ``weighted_score`` blends them with ``weights``
    (which sum to 1). ``threshold`` comes from the profile, if it sets one, and
    makes :attr:`is_match` meaningful.
    """

    scores: Mapping[str, float | None]
    weighted_score: float
    weights: Mapping[str, float]
    threshold: float | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "scores", _frozen(self.scores))
        object.__setattr__(self, "weights", _frozen(self.weights))

    @property
    def is_match(self) -> bool | None:
        """``weighted_score >= threshold``; ``None`` when no threshold is set."""
        return None if self.threshold is None else self.weighted_score >= self.threshold

    def to_dict(self) -> dict[str, object]:
        """A JSON-ready dictionary."""
        return {
            "scores": dict(self.scores),
            "weighted_score": self.weighted_score,
            "weights": dict(self.weights),
            "threshold": self.threshold,
            "is_match": self.is_match,
        }

    def __repr__(self) -> str:
        scores = ", ".join(f"{k}={'None' if v is None else f'{v:.4f}'}" for k, v in self.scores.items())
        extra = "" if self.threshold is None else f", is_match={self.is_match}"
        return f"CompareResult(weighted_score={self.weighted_score:.4f}, {scores}{extra})"


@dataclasses.dataclass(frozen=True)
class Failure:
    """An input that could not be processed: its position, a readable name and the error."""

    index: int
    input: str
    error: ImagePrismError

    def __repr__(self) -> str:
        return f"Failure(index={self.index}, input={self.input}, error={type(self.error).__name__}: {self.error})"


@dataclasses.dataclass(frozen=True)
class EmbeddedImage:
    """One input embedded by :meth:`ImagePrism.embed_chunk <imageprism.ImagePrism.embed_chunk>`.

    ``index``: its position; ``embeddings``: dimension -> array (as :meth:`embed` returns);
    ``pixel_keys``: dimension -> key of the decoded pixels that dimension embedded (equal
    pixels, equal key); ``width``, ``height``: of the decoded image, EXIF orientation applied.
    """

    index: int
    embeddings: Embeddings
    pixel_keys: Mapping[str, str]
    width: int
    height: int


@dataclasses.dataclass(frozen=True)
class BatchEmbedding:
    """Embeddings of many inputs, aligned with them.

    ``embeddings[i]`` is the mapping dimension -> array for input ``i``, or ``None``
    when input ``i`` failed; every failed input is in ``failures`` with its error.
    """

    embeddings: tuple[Optional[Embeddings], ...]
    failures: tuple[Failure, ...]

    def __len__(self) -> int:
        return len(self.embeddings)

    def __repr__(self) -> str:
        return f"BatchEmbedding({len(self.embeddings)} inputs, {len(self.failures)} failures)"


@dataclasses.dataclass(frozen=True)
class SearchHit:
    """One match of a query.

    Attributes:
        id: the item's id (its path unless another id was given when adding it).
        score: the score the hits are ranked by (blended, or the one dimension's).
        scores: every indexed dimension's score of the pair (``None``: cannot score).
        position: the item's insertion position in the index.
    """

    id: str
    score: float
    scores: Mapping[str, float | None]
    position: int

    def __post_init__(self) -> None:
        object.__setattr__(self, "scores", types.MappingProxyType(dict(self.scores)))

    def to_dict(self) -> dict[str, object]:
        """A JSON-ready dictionary."""
        return {"id": self.id, "score": self.score, "scores": dict(self.scores), "position": self.position}

    def __repr__(self) -> str:
        scores = ", ".join(f"{k}={'None' if v is None else f'{v:.4f}'}" for k, v in self.scores.items())
        return f"SearchHit(id={self.id!r}, score={self.score:.4f}, {scores}, position={self.position})"
