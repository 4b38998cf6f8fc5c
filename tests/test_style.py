"""Style dimension: the one-time graph edit that exposes MobileNetV2's pooled feature,
and preprocessing checked against the ONNX Model Zoo ImageNet recipe."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from parity_inputs import parity_inputs
from PIL import Image
from style_standin import LOGITS, expected_pool, mobilenet_standin

from imageprism import ImagePrism
from imageprism._image import open_image
from imageprism._runtime import ModelRuntime
from imageprism._runtime.hub import sha256_of
from imageprism.dimensions import ImageRequest, style
from imageprism.dimensions._preprocess import to_batch
from imageprism.dimensions.style import POOLED_TENSOR, STYLE_PREPROCESS, StyleConfig, StyleDimension, expose_output
from imageprism.errors import ConfigError, MissingDependencyError, ModelLoadError

pytest.importorskip("onnx")


def zoo_preprocess(image: Image.Image) -> np.ndarray:
    """The ONNX Model Zoo ImageNet recipe, written out independently (float64, then float32)."""
    image = image.convert("RGB")
    w, h = image.size
    ratio = 256 / min(w, h)
    image = image.resize((round(w * ratio), round(h * ratio)), Image.Resampling.BILINEAR)
    w, h = image.size
    left, top = w // 2 - 112, h // 2 - 112
    x = np.asarray(image.crop((left, top, left + 224, top + 224))).transpose(2, 0, 1) / 255
    mean = np.array([0.485, 0.456, 0.406])[:, None, None]
    std = np.array([0.229, 0.224, 0.225])[:, None, None]
    return ((x - mean) / std).astype(np.float32)


@pytest.fixture
def standin(tmp_path: Path) -> Path:
    path = tmp_path / "models" / "mobilenetv2-7.onnx"
    path.parent.mkdir()
    path.write_bytes(mobilenet_standin())
    return path


def _rgb(array: np.ndarray) -> Image.Image:
    return open_image(array).pixels(ImageRequest()).image


def test_preprocessing_is_the_zoo_recipe(dev_images_dir: Path) -> None:
    images = [_rgb(a) for a in parity_inputs(dev_images_dir).values()]
    ours = to_batch(images, STYLE_PREPROCESS)
    for image, got in zip(images, ours):
        np.testing.assert_allclose(got, zoo_preprocess(image), rtol=0, atol=2e-6)


def test_graph_edit_exposes_the_pooled_tensor_once(standin: Path, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    import onnx

    original = standin.read_bytes()
    derived_root = tmp_path / "derived"
    derived = expose_output(standin, POOLED_TENSOR, derived_root)
    assert standin.read_bytes() == original  # the download is left as it is
    assert derived.parent == derived_root / sha256_of(standin)
    assert derived.name == f"mobilenetv2-7.{POOLED_TENSOR}.{sha256_of(derived)[:16]}.onnx"
    outputs = [o.name for o in onnx.load(str(derived)).graph.output]
    assert outputs == [LOGITS, POOLED_TENSOR]

    # the next process finds the cached file and needs no onnx package
    monkeypatch.setattr(style, "_derived", {})
    monkeypatch.setitem(sys.modules, "onnx", None)
    assert expose_output(standin, POOLED_TENSOR, derived_root) == derived
    # ...but a corrupted copy is not trusted
    derived.write_bytes(b"garbage")
    monkeypatch.setattr(style, "_derived", {})
    with pytest.raises(MissingDependencyError, match=r"pip install \"\.\[style\]\""):
        expose_output(standin, POOLED_TENSOR, derived_root)
    monkeypatch.delitem(sys.modules, "onnx")
    assert expose_output(standin, POOLED_TENSOR, derived_root) == derived
    assert sha256_of(derived).startswith(derived.name.split(".")[-2])


def test_graph_edit_errors(standin: Path, tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="no tensor 'not_there'"):
        expose_output(standin, "not_there", tmp_path / "derived")
    assert expose_output(standin, LOGITS, tmp_path / "derived") == standin  # already an output
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model")
    with pytest.raises(ModelLoadError, match="could not be read as ONNX"):
        expose_output(bad, POOLED_TENSOR, tmp_path / "derived")


def test_style_vectors_end_to_end(standin: Path, tmp_path: Path, dev_images_dir: Path) -> None:
    arrays = parity_inputs(dev_images_dir)
    cache = tmp_path / "cache"
    prism = ImagePrism(dimensions=["style"], config={"style": StyleConfig(model_path=standin)}, cache_dir=cache)
    images = [_rgb(a) for a in arrays.values()]
    expected = expected_pool(np.stack([zoo_preprocess(im) for im in images]))

    plugin = prism.plugins["style"]
    assert isinstance(plugin, StyleDimension)
    raw = plugin.embed_raw(images)  # the model has a fixed batch of 1: run one at a time
    # onnxruntime averages 224 x 224 values in float32, the reference in float64
    np.testing.assert_allclose(raw, expected, rtol=5e-4, atol=1e-6)
    assert (cache / "derived" / sha256_of(standin)).is_dir()

    for array, ref in zip(arrays.values(), expected):
        vector = prism.embed(array)["style"]
        assert vector.shape == (16,) and abs(float(np.linalg.norm(vector)) - 1) < 1e-5
        assert float(vector @ (ref / np.linalg.norm(ref))) >= 0.99999
    score = prism.compare(arrays["square"], arrays["landscape"]).scores["style"]
    assert 0 <= score < 0.9999  # ReLU6 features are non-negative


def test_style_model_without_the_tensor_is_a_clear_error(tmp_path: Path) -> None:
    from fakehub import onnx_bytes

    other = tmp_path / "other.onnx"
    other.write_bytes(onnx_bytes(input_name="data", output_name="logits"))
    plugin = StyleDimension(StyleConfig(model_path=other), ModelRuntime(cache_dir=tmp_path / "cache"))
    with pytest.raises(ModelLoadError, match=POOLED_TENSOR):
        plugin.embed_batch([Image.new("RGB", (300, 200), "red")])


def test_config_validation(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="batch_size"):
        StyleConfig(batch_size=0)
    with pytest.raises(ConfigError, match="does not exist"):
        ImagePrism(dimensions=["style"], config={"style": StyleConfig(model_path=tmp_path / "missing.onnx")})
