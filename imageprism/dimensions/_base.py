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

__all__ = ["DimensionPlugin", "ImageRequest"]


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


class DimensionPlugin(abc.ABC):
    """Base class of the dimension plugins.

    Subclasses set ``name`` (the :class:`~imageprism.Dimension` value, also the
    module name and the profile key) and ``config_type``, and implement
    :meth:`embed_batch` and :meth:`score`. Construction must be cheap: no download,
    no model session; load models lazily on first :meth:`embed_batch`.
    """

    name: ClassVar[str]
    config_type: ClassVar[type[Any]]
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
    def embedding_kind(self) -> str:
        """How the embeddings are scored, for indexes (dedup, search).

        ``"bits"``: packed-bit ``uint8`` arrays ``(rows, nbytes)``, scored by the mean
        over rows of the fraction of equal bits (:attr:`bits_per_row` meaningful
        bits per row). ``"vector"``: 1-d float vectors, scored by their cosine.
        ``"other"`` (the default): only :meth:`score` knows; compared pair by pair.
        """
        return "other"

    @property
    def bits_per_row(self) -> int | None:
        """Meaningful bits per row of a ``"bits"`` embedding (``None``: all ``8 * nbytes``)."""
        return None

    @property
    def bit_variants(self) -> int | None:
        """For packed-bit embeddings made of variant groups (flips, crops...): their number ``V``.

        The rows are ``V`` equal groups, group 0 the image itself; with ``m(v, w)`` the
        mean fraction of equal bits between group ``v`` of one embedding and group ``w``
        of the other, the score is ``max over v of max(m(v, 0), m(0, v))``. ``1`` is a
        plain ``"bits"`` embedding; ``None`` (the default): not packed bits.
        """
        return None

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
