"""The ``instance`` dimension: DINOv2-small embeddings ("the same object?").

Default model: ``Xenova/dinov2-small`` ``onnx/model.onnx`` (fp32, ~88.5 MB), pinned to
one commit. Input ``pixel_values`` (N, 3, 224, 224); output ``last_hidden_state``
(N, 257, 384). The vector is the CLS token, row 0 of ``last_hidden_state`` (already
after the final layer norm, so it equals transformers' ``pooler_output``), 384-d,
L2-normalised here.

Preprocessing is transformers' image processor for DINOv2 (``BitImageProcessor``,
PIL backend) pixel for pixel: shortest edge to 256 (long edge truncated), bicubic,
centre crop 224, rescale 1/255, ImageNet mean/std. The score is the cosine
similarity: the same object re-photographed scores 0.7 and up, unrelated photos
near 0.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import numpy as np

from imageprism._runtime import ModelSpec
from imageprism.dimensions._onnx import ModelConfig, OnnxImageEmbedding
from imageprism.dimensions._preprocess import IMAGENET_MEAN, IMAGENET_STD, Preprocess
from imageprism.errors import ModelLoadError

__all__ = ["DINOV2_PREPROCESS", "DINOV2_SMALL", "InstanceConfig", "InstanceDimension"]

DINOV2_SMALL = ModelSpec(
    repo="Xenova/dinov2-small",
    filename="onnx/model.onnx",
    revision="bd222e886723524568931e43031f6d9327896fac",
    license="Apache-2.0 (upstream facebook/dinov2-small); none declared on the Xenova repo",
    inputs=("pixel_values",),
    outputs=("last_hidden_state",),
    dimension="instance",
    description="DINOv2 ViT-S/14, fp32; CLS token of last_hidden_state (384-d)",
)

DINOV2_PREPROCESS = Preprocess(
    shortest_edge=256,
    crop=224,
    resample="bicubic",
    size_rule="truncate",
    mean=IMAGENET_MEAN,
    std=IMAGENET_STD,
)


@dataclasses.dataclass(frozen=True, kw_only=True)
class InstanceConfig(ModelConfig):
    """Configuration of the ``instance`` dimension (see :class:`ModelConfig` for the fields).

    A replacement model must take ``pixel_values`` (N, 3, 224, 224) and give
    ``last_hidden_state`` (N, tokens, hidden) with the CLS token first, e.g. another
    DINOv2 size exported by transformers.js/optimum.
    """


class InstanceDimension(OnnxImageEmbedding):
    """DINOv2 CLS-token embeddings; score = cosine similarity."""

    name: ClassVar[str] = "instance"
    config_type: ClassVar[type[InstanceConfig]] = InstanceConfig
    default_models: ClassVar[tuple[ModelSpec, ...]] = (DINOV2_SMALL,)
    preprocess: ClassVar[Preprocess] = DINOV2_PREPROCESS
    output_name: ClassVar[str] = "last_hidden_state"

    def pool(self, output: np.ndarray) -> np.ndarray:
        """The CLS token: ``last_hidden_state[:, 0, :]``."""
        if output.ndim != 3:
            raise ModelLoadError(
                f"{self.spec.location}: last_hidden_state has shape {output.shape}; expected "
                "(batch, tokens, hidden) with the CLS token first"
            )
        return output[:, 0, :]
