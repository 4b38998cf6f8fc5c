"""What the semantic, instance and style dimensions share: one image in, one ONNX vector out.

A subclass names its default :class:`~imageprism._runtime.ModelSpec`, its
:class:`~imageprism.dimensions._preprocess.Preprocess` recipe and the output it reads, and may
override :meth:`OnnxImageEmbedding.pool` (how the output tensor becomes one vector per
image) and :meth:`OnnxImageEmbedding.open_model` (e.g. a one-time graph edit).
Embeddings are L2-normalised float32 vectors; the score is their cosine.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from typing import ClassVar

import numpy as np
from PIL import Image

from imageprism._math import cosine, l2_normalize
from imageprism._runtime import ModelRuntime, OnnxModel, prefetch, resolve_spec, run_batched
from imageprism._runtime.batching import DEFAULT_BATCH_SIZE
from imageprism.dimensions._base import DimensionPlugin, Layout
from imageprism.dimensions._preprocess import Preprocess, to_batch
from imageprism.errors import ConfigError, InputError

__all__ = ["ModelConfig", "OnnxImageEmbedding"]


@dataclasses.dataclass(frozen=True, kw_only=True)
class ModelConfig:
    """Which model file a model-backed dimension loads (all ``None``: the pinned default).

    - ``model_path``: a local ``.onnx`` file to use instead of the default download.
    - ``model_repo`` / ``model_file`` / ``model_revision``: another Hugging Face Hub file
      (missing parts are taken from the default; give a 40-hex commit to pin it).

    The model must take and give the same tensors as the default (names are checked when
    it loads). ``batch_size``: images per inference call when the model's batch axis is
    dynamic (it does not change the results).
    """

    model_path: str | os.PathLike[str] | None = None
    model_repo: str | None = None
    model_file: str | None = None
    model_revision: str | None = None
    batch_size: int = DEFAULT_BATCH_SIZE

    def __post_init__(self) -> None:
        if not isinstance(self.batch_size, int) or isinstance(self.batch_size, bool) or self.batch_size < 1:
            raise ConfigError(f"batch_size must be a positive integer, got {self.batch_size!r}")


class OnnxImageEmbedding(DimensionPlugin):
    """Base of the dimensions that embed a whole image with one ONNX model."""

    #: the recipe that turns RGB pixels into the model's input
    preprocess: ClassVar[Preprocess]
    #: the model output this dimension reads
    output_name: ClassVar[str]

    def __init__(self, config: ModelConfig, runtime: ModelRuntime) -> None:
        super().__init__(config, runtime)
        self.spec = resolve_spec(
            self.default_models[0],
            path=config.model_path,
            repo=config.model_repo,
            filename=config.model_file,
            revision=config.model_revision,
        )

    @property
    def layout(self) -> Layout:
        """Unit vectors scored by cosine."""
        return Layout("vector")

    @property
    def cache_token(self) -> str:
        """Model identity, recipe and output: what determines the vector of given pixels."""
        return f"{self.name}:{self.spec.identity}:{self.preprocess!r}:{self.output_name}"

    def open_model(self) -> OnnxModel:
        """The opened model (downloaded and cached on first use)."""
        return self.runtime.model(self.spec)

    def pool(self, output: np.ndarray) -> np.ndarray:
        """One vector per image from the model output (default: flatten all but the batch axis)."""
        return output.reshape(output.shape[0], -1)

    def embed_raw(self, images: Sequence[Image.Image]) -> np.ndarray:
        """``(N, D)`` float32 vectors before normalisation (what the reference model gives).

        Images go through the model ``config.batch_size`` at a time; when there are more,
        the next batch is preprocessed in a background thread while the current one runs.
        """
        if not images:
            raise ValueError("embed_raw needs at least one image")
        model = self.open_model()
        step = self.config.batch_size
        chunks = (to_batch(images[i : i + step], self.preprocess) for i in range(0, len(images), step))
        vectors = []
        for batch in prefetch(chunks) if len(images) > step else chunks:
            (output,) = run_batched(model, batch, output_names=[self.output_name], batch_size=step, progress=False)
            vectors.append(self.pool(output))
        return np.concatenate(vectors).astype(np.float32, copy=False)

    def embed_batch(self, images: Sequence[Image.Image]) -> list[np.ndarray | None]:
        """L2-normalised float32 vectors, one per image."""
        if not images:
            return []
        return list(l2_normalize(self.embed_raw(images)))

    def score(self, a: np.ndarray | None, b: np.ndarray | None) -> float | None:
        """Cosine similarity of two embeddings (``None`` if either is missing)."""
        if a is None or b is None:
            return None
        a, b = self._vector(a, "first"), self._vector(b, "second")
        if a.shape != b.shape:
            raise InputError(
                f"{self.name} embeddings differ in length ({a.shape[0]} vs {b.shape[0]}); "
                "embed both with the same configuration"
            )
        return cosine(a, b)

    def _vector(self, value: object, which: str) -> np.ndarray:
        """A stored embedding checked to be a finite 1-D float vector (e.g. from the user's own store)."""
        try:
            vector = np.asarray(value, dtype=np.float32)
        except (TypeError, ValueError):
            vector = None
        if vector is None or vector.ndim != 1 or vector.size == 0 or not np.isfinite(vector).all():
            raise InputError(
                f"the {which} {self.name} embedding must be a finite 1-D float vector as ImagePrism.embed "
                f"returns it, got {type(value).__name__} {getattr(value, 'shape', '')}".rstrip()
            )
        return vector
