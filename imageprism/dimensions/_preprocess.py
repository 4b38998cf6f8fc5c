"""Image preprocessing for the model-backed dimensions: the one home of resize, crop and normalise.

Every model dimension describes its recipe as a frozen :class:`Preprocess` of constants
kept next to its model spec, and calls :func:`to_batch` to turn decoded images into the
``float32`` NCHW array its ONNX model takes. The steps reproduce the reference
implementations pixel for pixel:

* transformers' PIL image processors (``CLIPImageProcessorPil``, ``BitImageProcessorPil``,
  the backend ``AutoImageProcessor`` picks when torchvision is absent): resize the shortest
  edge with Pillow on ``uint8`` pixels, the long edge *truncated* (``int(size * long / short)``);
  centre crop at ``((h - c) // 2, (w - c) // 2)``; ``x * rescale`` computed in float64 and
  stored as float32; then ``(x - mean) / std`` in float32.
* the ONNX Model Zoo ImageNet recipe: the same, except the long edge is *rounded*
  (``int(round(size * long / short))``) and the filter is bilinear. Its centre crop
  ``w // 2 - c // 2`` equals the one above for an even crop size.

Rescale and normalise act on ``uint8`` values, so they are one lookup table per channel,
computed once per recipe with exactly the reference arithmetic.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence
from typing import Literal

import numpy as np
from PIL import Image

__all__ = [
    "CLIP_MEAN",
    "CLIP_STD",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "Preprocess",
    "center_crop",
    "normalize_lut",
    "resize_shortest",
    "resized_size",
    "to_batch",
    "to_chw",
]

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

_FILTERS = {"bicubic": Image.Resampling.BICUBIC, "bilinear": Image.Resampling.BILINEAR}

#: Beyond this aspect ratio the full resize would be huge (a 1 x 10000 strip becomes
#: 224 x 2,240,000); only the crop window is resampled then (Pillow's ``box``), which can
#: differ from the reference by a few levels on some pixels but keeps memory bounded.
MAX_EXACT_ASPECT = 16.0


@dataclasses.dataclass(frozen=True)
class Preprocess:
    """Constants of one model's input recipe (RGB in, float32 NCHW out).

    ``shortest_edge``: the resized short side. ``size_rule``: how the long side is derived,
    ``"truncate"`` (transformers) or ``"round"`` (ONNX Model Zoo). ``resample``:
    ``"bicubic"`` or ``"bilinear"`` (Pillow filters). ``crop``: side of the square centre
    crop. ``rescale``, ``mean``, ``std``: ``(x * rescale - mean) / std`` per RGB channel.
    """

    shortest_edge: int
    crop: int
    resample: Literal["bicubic", "bilinear"]
    size_rule: Literal["truncate", "round"]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    rescale: float = 1 / 255

    def __post_init__(self) -> None:
        if self.resample not in _FILTERS:
            raise ValueError(f"resample must be one of {sorted(_FILTERS)}, got {self.resample!r}")
        if self.size_rule not in ("truncate", "round"):
            raise ValueError(f"size_rule must be 'truncate' or 'round', got {self.size_rule!r}")
        if not 0 < self.crop <= self.shortest_edge:
            raise ValueError(f"crop ({self.crop}) must be positive and at most shortest_edge ({self.shortest_edge})")
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise ValueError("mean and std must have 3 entries each, std positive")


def resized_size(width: int, height: int, shortest_edge: int, rule: str) -> tuple[int, int]:
    """``(width, height)`` after scaling the short side to ``shortest_edge`` (aspect kept)."""
    short, long = (width, height) if width <= height else (height, width)
    scaled = shortest_edge * long / short
    new_long = round(scaled) if rule == "round" else int(scaled)
    return (shortest_edge, new_long) if width <= height else (new_long, shortest_edge)


def center_crop(width: int, height: int, crop: int) -> tuple[int, int, int, int]:
    """The ``(left, top, right, bottom)`` box of the centred ``crop`` x ``crop`` window."""
    left, top = (width - crop) // 2, (height - crop) // 2
    return left, top, left + crop, top + crop


def resize_shortest(image: Image.Image, pp: Preprocess) -> Image.Image:
    """Resize, then centre crop, an RGB image to ``pp.crop`` x ``pp.crop`` (``uint8``)."""
    if image.mode != "RGB":
        image = image.convert("RGB")
    width, height = image.size
    new_w, new_h = resized_size(width, height, pp.shortest_edge, pp.size_rule)
    box = center_crop(new_w, new_h, pp.crop)
    resample = _FILTERS[pp.resample]
    if max(width, height) / min(width, height) <= MAX_EXACT_ASPECT:
        if (new_w, new_h) != (width, height):
            image = image.resize((new_w, new_h), resample=resample)
        return image.crop(box)
    sx, sy = width / new_w, height / new_h
    source_box = (box[0] * sx, box[1] * sy, box[2] * sx, box[3] * sy)
    return image.resize((pp.crop, pp.crop), resample=resample, box=source_box)


@functools.lru_cache(maxsize=16)
def normalize_lut(pp: Preprocess) -> np.ndarray:
    """``(3, 256)`` float32 table: ``lut[c, v]`` is the normalised value of level ``v`` in channel ``c``.

    Same arithmetic as transformers: rescale in float64, cast to float32, then subtract
    the mean and divide by the std in float32.
    """
    levels = (np.arange(256, dtype=np.float64) * pp.rescale).astype(np.float32)
    mean = np.asarray(pp.mean, dtype=np.float32)[:, None]
    std = np.asarray(pp.std, dtype=np.float32)[:, None]
    lut = (levels[None, :] - mean) / std
    lut.setflags(write=False)
    return lut


def to_chw(pixels: np.ndarray, pp: Preprocess, out: np.ndarray | None = None) -> np.ndarray:
    """Normalise an ``(H, W, 3)`` ``uint8`` array to ``(3, H, W)`` float32 (into ``out`` if given)."""
    lut = normalize_lut(pp)
    if out is None:
        out = np.empty((3, *pixels.shape[:2]), dtype=np.float32)
    for c in range(3):
        np.take(lut[c], pixels[..., c], out=out[c])
    return out


def to_batch(images: Sequence[Image.Image], pp: Preprocess) -> np.ndarray:
    """Preprocess decoded images into one ``(N, 3, crop, crop)`` float32 batch."""
    batch = np.empty((len(images), 3, pp.crop, pp.crop), dtype=np.float32)
    for i, image in enumerate(images):
        to_chw(np.asarray(resize_shortest(image, pp)), pp, out=batch[i])
    return batch
