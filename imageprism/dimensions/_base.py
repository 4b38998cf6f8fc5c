"""The contract every dimension plugin fulfils.

A dimension is one module in this package holding a frozen config dataclass and a
:class:`DimensionPlugin` subclass, plus one line in ``imageprism.dimensions.REGISTRY``.
``ImagePrism`` does everything else: decoding, caching by pixel content, batching
across images, blending scores.
"""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import numpy as np
from PIL import Image

if TYPE_CHECKING:
    from imageprism._runtime import ModelRuntime, ModelSpec

__all__ = ["DimensionPlugin", "ImageRequest", "Layout"]


@dataclasses.dataclass(frozen=True)
class ImageRequest:
    """Which pixels a dimension consumes.

    ``mode`` is ``"RGB"`` or ``"L"`` (grayscale). ``min_side`` allows reduced-size
    decoding (JPEG DCT scaling) as long as both sides stay at least that many
    pixels; ``None`` means full resolution. Dimensions asking for the same request
    share one decode of each image.
    """

    mode: Literal["RGB", "L"] = "RGB"
    min_side: int | None = None


@dataclasses.dataclass(frozen=True)
class Layout:
    """How a dimension's embeddings are laid out and scored, for dedup and search.

    ``kind``:

    * ``"bits"``: packed-bit ``uint8`` arrays ``(rows, nbytes)`` with ``bits_per_row``
      meaningful bits per row (``None``: all ``8 * nbytes``). With ``variants == 1``
      the score is the mean over rows of the fraction of equal bits; with ``V > 1``
      the rows are ``V`` equal groups (group 0 the image itself, the others flips,
      crops...) and the score is their best alignment
      (:func:`imageprism._math.best_alignment`).
    * ``"vector"``: 1-d float vectors scored by their cosine.
    * ``"pairwise"``: only the plugin's :meth:`DimensionPlugin.score` knows; pairs are
      compared one by one.
    """

    kind: Literal["bits", "vector", "pairwise"] = "pairwise"
    bits_per_row: int | None = None
    variants: int = 1

    def __post_init__(self) -> None:
        if self.kind not in ("bits", "vector", "pairwise"):
            raise ValueError(f"layout kind {self.kind!r} is unknown; use 'bits', 'vector' or 'pairwise'")
        if self.variants < 1 or (self.variants > 1 and self.kind != "bits"):
            raise ValueError(f"variants={self.variants} needs kind='bits' and a value of at least 1")


class DimensionPlugin(abc.ABC):
    """Base class of the dimension plugins.

    Subclasses set ``name`` (the :class:`~imageprism.Dimension` value, also the
    module name and the profile key) and ``config_type``, and implement
    :meth:`embed_batch` and :meth:`score`. Construction must be cheap: no download,
    no model session; load models lazily on first :meth:`embed_batch`.
    """

    name: ClassVar[str]
    config_type: ClassVar[type[Any]]
    #: dedup's threshold when this dimension is used alone and neither ``threshold=`` nor
    #: a profile gives one (``None``: the caller must say what a duplicate is)
    default_threshold: ClassVar[float | None] = None
    #: the default model files this dimension may download (``imageprism models list``)
    default_models: ClassVar[tuple[ModelSpec, ...]] = ()

    def __init__(self, config: Any, runtime: ModelRuntime) -> None:
        self.config = config
        self.runtime = runtime

    @property
    def image_request(self) -> ImageRequest:
        """The pixels this dimension needs (default: full-resolution RGB)."""
        return ImageRequest()

    @property
    def layout(self) -> Layout:
        """How the embeddings are laid out and scored (default: pairwise, :meth:`score` only).

        Declared once per plugin; dedup and the index pick their search columns from it.
        """
        return Layout()

    @property
    def embedding_kind(self) -> str:
        """Legacy view of :attr:`layout`: ``"bits"`` (plain hashes), ``"vector"`` or ``"other"``."""
        layout = self.layout
        if layout.kind == "pairwise" or layout.variants > 1:
            return "other"
        return layout.kind

    @property
    def bits_per_row(self) -> int | None:
        """Legacy view of :attr:`layout`: meaningful bits per row of packed-bit embeddings."""
        return self.layout.bits_per_row

    @property
    def bit_variants(self) -> int | None:
        """Legacy view of :attr:`layout`: variant groups of packed-bit embeddings (``None``: not bits)."""
        layout = self.layout
        return layout.variants if layout.kind == "bits" else None

    @property
    def cache_token(self) -> str:
        """Everything that can change this dimension's output for given pixels.

        Part of every cache key, so two configurations never share an entry. The
        default covers the dimension name and its config's ``repr``; model-backed
        dimensions add the model identity (repo, revision, file hash).
        """
        return f"{self.name}:{self.config!r}"

    @abc.abstractmethod
    def embed_batch(self, images: Sequence[Image.Image]) -> list[np.ndarray | None]:
        """Embed decoded images (as described by :attr:`image_request`), in order.

        ``None`` means the dimension cannot describe that image (e.g. no face).
        """

    def to_json(self, embedding: np.ndarray | None) -> object:
        """A JSON-friendly form of an embedding (vectors as lists of floats)."""
        return None if embedding is None else np.asarray(embedding).tolist()

    @abc.abstractmethod
    def score(self, a: np.ndarray | None, b: np.ndarray | None) -> float | None:
        """Similarity of two embeddings from :meth:`embed_batch`; ``None`` if unscorable."""
