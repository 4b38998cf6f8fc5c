"""Semantic (CLIP) and instance (DINOv2) vectors match transformers on the same photos.

The fixtures in ``tests/data/parity/`` come from ``python tests/parity_generate.py``: tiny
random-weight models exported with the real files' tensor names, and the vectors
transformers computes (its own image processor + the torch model) for the parity inputs
of ``tests/parity_inputs.py``. Here imageprism loads those models through the normal
``model_path`` route and must give the same vectors. With random weights, only the
weights differ from what users run.
"""

from __future__ import annotations

import dataclasses
import importlib.util
from pathlib import Path

import numpy as np
import pytest
from parity_inputs import parity_inputs, pixel_digest

from imageprism import ImagePrism
from imageprism._image import open_image
from imageprism.dimensions import ImageRequest
from imageprism.dimensions.instance import InstanceConfig, InstanceDimension
from imageprism.dimensions.semantic import SemanticConfig, SemanticDimension

PARITY = Path(__file__).resolve().parent / "data" / "parity"
CASES = {
    "semantic": (SemanticConfig, SemanticDimension, "clip_vision_tiny.onnx"),
    "instance": (InstanceConfig, InstanceDimension, "dinov2_tiny.onnx"),
}
MIN_COSINE = 0.99999
MAX_ABS_DIFF = 1e-4


@pytest.fixture(scope="module")
def reference() -> dict[str, np.ndarray]:
    with np.load(PARITY / "reference.npz") as data:
        return {key: data[key] for key in data.files}


@pytest.fixture(scope="module")
def arrays(dev_images_dir: Path, reference: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The parity inputs, checked to be the very pixels the reference was computed from."""
    made = parity_inputs(dev_images_dir)
    assert list(made) == list(reference["names"])
    for (name, array), digest in zip(made.items(), reference["digests"]):
        assert pixel_digest(array) == digest, f"parity input {name!r} differs from the one the reference used"
    return made


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def test_inputs_cover_the_required_shapes_and_modes(arrays: dict[str, np.ndarray]) -> None:
    shapes = {name: a.shape for name, a in arrays.items()}
    assert len(arrays) >= 8
    assert shapes["landscape"][1] > shapes["landscape"][0] and shapes["portrait"][0] > shapes["portrait"][1]
    assert shapes["square"][0] == shapes["square"][1]
    assert max(shapes["tiny"][:2]) < 64 and max(shapes["large"][:2]) > 2000
    assert arrays["grayscale"].ndim == 2 and arrays["rgba"].shape[2] == 4
    alpha = arrays["rgba"][..., 3]
    assert alpha.min() == 0 and alpha.max() == 255  # transparent and opaque pixels both present


@pytest.mark.parametrize("dimension", sorted(CASES))
def test_vectors_match_transformers(dimension: str, arrays: dict[str, np.ndarray],
                                    reference: dict[str, np.ndarray], tmp_path: Path) -> None:
    config_type, _, filename = CASES[dimension]
    prism = ImagePrism(dimensions=[dimension], config={dimension: config_type(model_path=PARITY / filename)},
                       cache_dir=tmp_path)
    expected = reference[dimension]

    # end to end, one image at a time: normalised vectors
    for (name, array), ref in zip(arrays.items(), expected):
        vector = prism.embed(array)[dimension]
        assert vector.dtype == np.float32 and vector.shape == ref.shape
        assert abs(float(np.linalg.norm(vector)) - 1) < 1e-5
        assert float(vector @ _unit(ref)) >= MIN_COSINE, name

    # before normalisation, and in one batch (mixed sizes and modes)
    plugin = prism.plugins[dimension]
    images = [open_image(a).pixels(plugin.image_request).image for a in arrays.values()]
    raw = plugin.embed_raw(images)
    diff = np.abs(raw - expected).max(axis=1)
    assert diff.max() <= MAX_ABS_DIFF, dict(zip(arrays, diff))
    batch = prism.embed_batch(list(arrays.values()))
    stacked = np.stack([e[dimension] for e in batch.embeddings])
    np.testing.assert_allclose(stacked, _unit(expected), atol=1e-5)


@pytest.mark.parametrize("change", [{"size_rule": "round"}, {"resample": "bilinear"}, {"shortest_edge": 240}])
def test_a_preprocessing_slip_breaks_parity(change: dict[str, object], arrays: dict[str, np.ndarray],
                                            reference: dict[str, np.ndarray], tmp_path: Path) -> None:
    """The parity check is sensitive: a plausible recipe mistake misses the tolerance by far."""

    class Slipped(SemanticDimension):
        preprocess = dataclasses.replace(SemanticDimension.preprocess, **change)

    from imageprism._runtime import ModelRuntime

    plugin = Slipped(SemanticConfig(model_path=PARITY / "clip_vision_tiny.onnx"), ModelRuntime(cache_dir=tmp_path))
    images = [open_image(a).pixels(plugin.image_request).image for a in arrays.values()]
    diff = np.abs(plugin.embed_raw(images) - reference["semantic"]).max()
    assert diff > 100 * MAX_ABS_DIFF


def test_compare_two_photos_with_local_models(dev_images: list[Path], tmp_path: Path) -> None:
    config = {name: cfg(model_path=PARITY / f) for name, (cfg, _, f) in CASES.items()}
    prism = ImagePrism(dimensions=list(CASES), config=config, cache_dir=tmp_path)
    same = prism.compare(dev_images[0], dev_images[0])
    other = prism.compare(dev_images[0], dev_images[1])
    for name in CASES:
        assert same.scores[name] == pytest.approx(1.0, abs=1e-6)
        assert -1.0 <= other.scores[name] < 0.9999
    assert 0 <= other.weighted_score < same.weighted_score


_HAVE_REFERENCE_STACK = all(importlib.util.find_spec(m) is not None for m in ("torch", "transformers"))


@pytest.mark.slow
@pytest.mark.skipif(not _HAVE_REFERENCE_STACK, reason="torch and transformers are not installed (CI does not need them)")
def test_generator_reproduces_the_committed_fixtures(dev_images_dir: Path, reference: dict[str, np.ndarray],
                                                     tmp_path: Path) -> None:
    """Re-run the generator: same reference vectors, and imageprism's preprocessing is transformers' exactly."""
    import parity_generate

    from imageprism.dimensions._preprocess import to_batch

    vectors = parity_generate.generate(tmp_path, dev_images_dir)
    for name in CASES:
        np.testing.assert_allclose(vectors[name], reference[name], rtol=0, atol=1e-5)

    made = parity_inputs(dev_images_dir)
    for name, processor in (("semantic", parity_generate.clip_processor()),
                            ("instance", parity_generate.dinov2_processor())):
        expected = parity_generate.reference_pixel_values(processor, made)
        images = [open_image(a).pixels(ImageRequest()).image for a in made.values()]
        np.testing.assert_array_equal(to_batch(images, CASES[name][1].preprocess), expected)
