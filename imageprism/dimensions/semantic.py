"""The ``semantic`` dimension: CLIP ViT-B/32 image embeddings ("same concept?").

Default model: ``Xenova/clip-vit-base-patch32`` ``onnx/vision_model_quantized.onnx``
(the int8 dynamically quantized image tower, ~89 MB), pinned to one commit and
checked by sha256. Input ``pixel_values`` (N, 3, 224, 224); output ``image_embeds``
(N, 512), the projected image embedding, L2-normalised here.

Preprocessing is transformers' ``CLIPImageProcessor`` (PIL backend) pixel for pixel:
shortest edge to 224 (long edge truncated), bicubic, centre crop 224, rescale 1/255,
CLIP mean/std. The score is the cosine similarity: unrelated photos land around 0.5,
the same concept above about 0.75.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

from imageprism._runtime import ModelSpec
from imageprism.dimensions._onnx import ModelConfig, OnnxImageEmbedding
from imageprism.dimensions._preprocess import CLIP_MEAN, CLIP_STD, Preprocess

__all__ = ["CLIP_PREPROCESS", "CLIP_VIT_B32", "SemanticConfig", "SemanticDimension"]

CLIP_VIT_B32 = ModelSpec(
    repo="Xenova/clip-vit-base-patch32",
    filename="onnx/vision_model_quantized.onnx",
    revision="d15189d7028b43f1d3e65039190477f6af591c2a",
    sha256="583fd1110a514667812fee7d684952aaf82a99b959760c8d7dca7e0ab9839299",
    size=89_117_001,
    license="none declared on the repo (upstream OpenAI CLIP code: MIT)",
    inputs=("pixel_values",),
    outputs=("image_embeds",),
    dimension="semantic",
    description="CLIP ViT-B/32 image tower, int8 dynamic quantization, 512-d projected embedding",
)

CLIP_PREPROCESS = Preprocess(
    shortest_edge=224,
    crop=224,
    resample="bicubic",
    size_rule="truncate",
    mean=CLIP_MEAN,
    std=CLIP_STD,
)


@dataclasses.dataclass(frozen=True, kw_only=True)
class SemanticConfig(ModelConfig):
    """Configuration of the ``semantic`` dimension (see :class:`ModelConfig` for the fields).

    A replacement model must take ``pixel_values`` (N, 3, 224, 224) and give
    ``image_embeds``, e.g. another CLIP image tower exported by transformers.js/optimum.

    ``batch_size`` defaults to 1 here: the default file is dynamically quantized, and
    dynamic quantization scales activations over the whole batch, so in a batch an
    image's vector would depend on the other images (cosine about 0.9997 to its
    one-at-a-time vector). One image per call keeps vectors reproducible and, measured
    on CPU, costs no throughput. Raise it for an fp32 model.
    """

    batch_size: int = 1


class SemanticDimension(OnnxImageEmbedding):
    """CLIP image embeddings; score = cosine similarity."""

    name: ClassVar[str] = "semantic"
    config_type: ClassVar[type[SemanticConfig]] = SemanticConfig
    default_models: ClassVar[tuple[ModelSpec, ...]] = (CLIP_VIT_B32,)
    preprocess: ClassVar[Preprocess] = CLIP_PREPROCESS
    output_name: ClassVar[str] = "image_embeds"
