"""A model-backed dimension pointed at the fake Hub: downloads once, embeds, embeds again offline."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest
from fakehub import FakeHub, onnx_bytes
from PIL import Image

from imageprism._math import cosine, l2_normalize
from imageprism._runtime import ModelRuntime, ModelSpec, resolve_spec, run_batched
from imageprism.dimensions import DimensionPlugin
from imageprism.errors import ModelNotCachedError

REPO = "acme/tiny-clip"
FILE = "onnx/vision_model.onnx"


def _images() -> list[Image.Image]:
    red = Image.new("RGB", (40, 30), (220, 20, 20))
    blue = Image.new("RGB", (30, 40), (20, 20, 220))
    noise = Image.fromarray(np.random.default_rng(1).integers(0, 256, (32, 32, 3), dtype=np.uint8))
    return [red, blue, noise]


# -- a test-only plugin written against the runtime API alone ----------------------------------


@dataclasses.dataclass(frozen=True, kw_only=True)
class TinyConfig:
    model_path: str | None = None
    model_repo: str | None = None
    model_file: str | None = None
    model_revision: str | None = None


class TinyDimension(DimensionPlugin):
    """Resize to 8x8, scale to [0, 1], run the model, L2-normalise."""

    name: ClassVar[str] = "semantic"
    config_type: ClassVar[type[TinyConfig]] = TinyConfig
    default_models: ClassVar[tuple[ModelSpec, ...]] = (
        ModelSpec(repo="nobody/unused", filename="m.onnx", inputs=("pixel_values",), outputs=("image_embeds",)),
    )

    def __init__(self, config: TinyConfig, runtime: ModelRuntime) -> None:
        super().__init__(config, runtime)
        self.spec = resolve_spec(
            self.default_models[0],
            path=config.model_path,
            repo=config.model_repo,
            filename=config.model_file,
            revision=config.model_revision,
        )

    def embed_batch(self, images: Sequence[Image.Image]) -> list[np.ndarray | None]:
        batch = np.stack([np.asarray(im.resize((8, 8)), np.float32).transpose(2, 0, 1) / 255 for im in images])
        (out,) = run_batched(self.runtime.model(self.spec), batch, output_names=["image_embeds"], batch_size=2)
        return list(l2_normalize(out))

    def score(self, a: np.ndarray | None, b: np.ndarray | None) -> float | None:
        return None if a is None or b is None else cosine(a, b)


def test_test_only_dimension_downloads_once_embeds_and_embeds_again_offline(
    fake_hub: FakeHub, tmp_path: Path
) -> None:
    commit = fake_hub.add_file(REPO, FILE, onnx_bytes())
    config = TinyConfig(model_repo=REPO, model_file=FILE, model_revision=commit)
    online = TinyDimension(config, ModelRuntime(endpoint=fake_hub.endpoint, cache_dir=tmp_path, retries=0))
    assert fake_hub.requests == []  # constructing the dimension downloads nothing
    first = online.embed_batch(_images())
    second = online.embed_batch(_images())
    assert fake_hub.count("GET") == 1
    fake_hub.clear_requests()

    with fake_hub.down():
        offline = TinyDimension(config, ModelRuntime(endpoint=fake_hub.endpoint, cache_dir=tmp_path, offline=True))
        again = offline.embed_batch(_images())
    assert fake_hub.requests == []
    for a, b, c in zip(first, second, again):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(a, c)
    assert online.score(first[0], first[0]) == pytest.approx(1.0)
    assert online.score(first[0], first[1]) < 0.99  # different images, different vectors

    empty_cache = TinyDimension(config, ModelRuntime(cache_dir=tmp_path / "empty", offline=True))
    with pytest.raises(ModelNotCachedError, match="--repo acme/tiny-clip"):
        empty_cache.embed_batch(_images())


# -- the real semantic dimension through ImagePrism ---------------------------------------------


def test_semantic_dimension_through_imageprism_downloads_once_then_works_offline(
    fake_hub: FakeHub, tmp_path: Path
) -> None:
    from imageprism import ImagePrism
    from imageprism.dimensions.semantic import SemanticConfig

    commit = fake_hub.add_file(REPO, FILE, onnx_bytes(dim=16))
    config = {"semantic": SemanticConfig(model_repo=REPO, model_file=FILE, model_revision=commit)}
    online = ImagePrism(
        dimensions=["semantic"],
        config=config,
        runtime=ModelRuntime(endpoint=fake_hub.endpoint, cache_dir=tmp_path, retries=0),
    )
    assert fake_hub.requests == []
    first = [online.embed(im)["semantic"] for im in _images()]
    assert fake_hub.count("GET") == 1
    assert all(v.shape == (16,) for v in first)
    fake_hub.clear_requests()

    with fake_hub.down():
        offline = ImagePrism(dimensions=["semantic"], config=config, offline=True, cache_dir=tmp_path)
        again = [offline.embed(im)["semantic"] for im in _images()]
        score = offline.compare(_images()[0], _images()[1]).scores["semantic"]
    assert fake_hub.requests == []
    for a, b in zip(first, again):
        np.testing.assert_allclose(a, b, rtol=1e-6)
    assert score < 0.999
