"""imageprism.dimensions._preprocess: resize rules, crop, normalisation table, odd shapes."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from imageprism.dimensions._preprocess import (
    CLIP_MEAN,
    CLIP_STD,
    Preprocess,
    center_crop,
    normalize_lut,
    resize_shortest,
    resized_size,
    to_batch,
)

CLIP = Preprocess(shortest_edge=224, crop=224, resample="bicubic", size_rule="truncate", mean=CLIP_MEAN, std=CLIP_STD)


@pytest.mark.parametrize(
    ("size", "edge", "rule", "expected"),
    [
        ((451, 300), 224, "truncate", (336, 224)),  # 336.75 -> 336
        ((451, 300), 224, "round", (337, 224)),
        ((300, 451), 224, "truncate", (224, 336)),
        ((500, 741), 256, "truncate", (256, 379)),  # 379.39
        ((500, 500), 224, "truncate", (224, 224)),
        ((43, 57), 224, "truncate", (224, 296)),  # upsampling: 296.93 -> 296
        ((43, 57), 224, "round", (224, 297)),
    ],
)
def test_resized_size(size: tuple[int, int], edge: int, rule: str, expected: tuple[int, int]) -> None:
    assert resized_size(*size, edge, rule) == expected


def test_center_crop_box() -> None:
    assert center_crop(336, 224, 224) == (56, 0, 280, 224)
    assert center_crop(225, 379, 224) == (0, 77, 224, 301)


def test_normalize_lut_is_the_reference_arithmetic() -> None:
    lut = normalize_lut(CLIP)
    levels = np.arange(256)
    for c in range(3):
        expected = ((levels.astype(np.float64) * (1 / 255)).astype(np.float32) - np.float32(CLIP_MEAN[c])) / np.float32(
            CLIP_STD[c]
        )
        np.testing.assert_array_equal(lut[c], expected.astype(np.float32))


def test_batch_shape_and_modes() -> None:
    rng = np.random.default_rng(0)
    rgb = Image.fromarray(rng.integers(0, 256, (123, 77, 3), dtype=np.uint8))
    gray = rgb.convert("L")
    batch = to_batch([rgb, gray, Image.new("RGB", (1, 1), (255, 0, 0))], CLIP)
    assert batch.shape == (3, 3, 224, 224) and batch.dtype == np.float32
    np.testing.assert_array_equal(to_batch([gray.convert("RGB")], CLIP)[0], batch[1])
    assert np.all(batch[2, 0] == normalize_lut(CLIP)[0, 255]) and np.all(batch[2, 1] == normalize_lut(CLIP)[1, 0])


def test_extreme_aspect_ratio_stays_bounded() -> None:
    strip = Image.new("RGB", (20_000, 2), (10, 200, 30))  # the full resize would be 2,240,000 x 224
    out = resize_shortest(strip, CLIP)
    assert out.size == (224, 224)
    assert np.all(np.abs(np.asarray(out, dtype=int) - [10, 200, 30]) <= 1)


@pytest.mark.parametrize(
    "kwargs",
    [dict(resample="nearest"), dict(size_rule="ceil"), dict(crop=300), dict(std=(1.0, 0.0, 1.0)), dict(mean=(0.5,))],
)
def test_preprocess_validation(kwargs: dict[str, object]) -> None:
    base: dict[str, object] = dict(shortest_edge=256, crop=224, resample="bilinear", size_rule="round",
                                   mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    with pytest.raises(ValueError):
        Preprocess(**{**base, **kwargs})  # type: ignore[arg-type]
