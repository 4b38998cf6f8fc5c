"""A new dimension is one file's worth of code plugged in through ``ImagePrism(registry=...)``.

``ToyDimension`` below is complete: it declares its layout and default threshold and
implements ``embed_batch`` and ``score``. Nothing else in the package changes, and no
global registry is touched; compare, embed, dedup, blended weights, the index (search,
removal, save and load) and the cache all work with it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import ClassVar

import numpy as np
import pytest
from PIL import Image

from imageprism import ImageIndex, ImagePrism
from imageprism._math import cosine
from imageprism.dimensions import REGISTRY, DimensionPlugin, ImageRequest, Layout
from imageprism.errors import ConfigError

# -- the one file's worth --------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ToyConfig:
    """Grid cells per side."""

    grid: int = 4


class ToyDimension(DimensionPlugin):
    """Mean brightness of grid cells, centred: a tiny vector embedding scored by cosine."""

    name: ClassVar[str] = "toy"
    config_type: ClassVar[type[ToyConfig]] = ToyConfig
    default_threshold: ClassVar[float | None] = 0.95
    config: ToyConfig

    @property
    def image_request(self) -> ImageRequest:
        return ImageRequest(mode="L")

    @property
    def layout(self) -> Layout:
        return Layout("vector")

    def embed_batch(self, images: Sequence[Image.Image]) -> list[np.ndarray | None]:
        g = self.config.grid
        out: list[np.ndarray | None] = []
        for image in images:
            cells = np.asarray(image.resize((g, g), Image.Resampling.BOX), np.float32).ravel()
            v = cells - cells.mean()
            norm = float(np.linalg.norm(v))
            out.append((v / norm if norm else v).astype(np.float32))
        return out

    def score(self, a: np.ndarray | None, b: np.ndarray | None) -> float | None:
        return None if a is None or b is None else cosine(a, b)


# -- the proof ----------------------------------------------------------------------------------


def _ramp(angle: float, size: int = 64) -> np.ndarray:
    y, x = np.mgrid[0:size, 0:size] / size
    return (255 * (0.5 + 0.5 * np.sin(6 * (np.cos(angle) * x + np.sin(angle) * y)))).astype(np.uint8)


def test_a_toy_dimension_works_everywhere_through_the_seam(tmp_path) -> None:
    images = [_ramp(0.0), _ramp(1.2), _ramp(0.0) // 2 + 60, _ramp(2.5)]  # 2 is a dimmed copy of 0
    prism = ImagePrism(dimensions=["toy"], registry={"toy": ToyDimension})
    assert "toy" not in REGISTRY  # nothing global changed
    assert prism.dimensions == ("toy",)
    emb = prism.embed(images[0])
    assert emb["toy"].shape == (16,)
    assert prism.compare(images[0], images[2]).scores["toy"] > 0.99
    assert prism.compare(images[0], images[1]).scores["toy"] < 0.9
    # dedup with the plugin's own default threshold (a class attribute, not a table in the core)
    result = prism.dedup(images)
    assert result.threshold == 0.95 and result.labels.tolist() == [0, 1, 0, 3]
    # blended with a built-in dimension
    both = ImagePrism(weights={"toy": 0.5, "hash": 0.5}, registry={"toy": ToyDimension})
    assert both.compare(images[0], images[0]).weighted_score == pytest.approx(1.0)
    # the index: search, removal, save and load
    index = ImageIndex(prism)
    index.add(images, ids=["a", "b", "a-dim", "c"])
    assert [h.id for h in index.search(images[0], k=2)] == ["a", "a-dim"]
    index.remove(["a"])
    assert index.search(images[0], k=1)[0].id == "a-dim"
    loaded = ImageIndex.load(index.save(tmp_path / "toy"), prism=prism)
    assert loaded.ids == ("b", "a-dim", "c")
    assert loaded.search(images[0], k=3) == index.search(images[0], k=3)
    # a repeated input is embedded once (the cache key includes the plugin's cache_token)
    assert prism.embed(images[0])["toy"] is prism.embed(images[0])["toy"]


def test_other_instances_do_not_see_the_toy() -> None:
    with pytest.raises(ConfigError, match="unknown dimension 'toy'"):
        ImagePrism(dimensions=["toy"])
