"""Semantic, instance and style through the Hub route (loopback fake Hub), defaults and errors."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from style_standin import mobilenet_standin

from imageprism import ImagePrism
from imageprism._runtime import COMMIT_RE, ModelRuntime
from imageprism.dimensions import plugin_class, style
from imageprism.dimensions.instance import DINOV2_SMALL, InstanceConfig
from imageprism.dimensions.semantic import CLIP_VIT_B32, SemanticConfig
from imageprism.dimensions.style import MOBILENETV2_7, StyleConfig
from imageprism.errors import ConfigError, ModelDownloadError, ModelLoadError

PARITY = Path(__file__).resolve().parent / "data" / "parity"
MODELS = {
    "semantic": (SemanticConfig, CLIP_VIT_B32, lambda: (PARITY / "clip_vision_tiny.onnx").read_bytes()),
    "instance": (InstanceConfig, DINOV2_SMALL, lambda: (PARITY / "dinov2_tiny.onnx").read_bytes()),
    "style": (StyleConfig, MOBILENETV2_7, mobilenet_standin),
}


def test_default_models_are_pinned_and_named() -> None:
    for name, (_, spec, _) in MODELS.items():
        cls = plugin_class(name)
        assert cls.default_models == (spec,) and spec.dimension == name
        assert spec.sha256 is not None or spec.is_pinned
    assert CLIP_VIT_B32.is_pinned and DINOV2_SMALL.is_pinned and COMMIT_RE.match(CLIP_VIT_B32.revision or "")
    assert (CLIP_VIT_B32.inputs, CLIP_VIT_B32.outputs) == (("pixel_values",), ("image_embeds",))
    assert (DINOV2_SMALL.inputs, DINOV2_SMALL.outputs) == (("pixel_values",), ("last_hidden_state",))
    assert (MOBILENETV2_7.inputs, MOBILENETV2_7.outputs) == (("data",), ("mobilenetv20_features_pool0_fwd",))


def test_construction_is_cheap_and_the_cache_token_names_the_model(tmp_path: Path) -> None:
    prism = ImagePrism(dimensions=list(MODELS), cache_dir=tmp_path)  # no download, no session
    assert not any(tmp_path.iterdir())
    tokens = {name: p.cache_token for name, p in prism.plugins.items()}
    assert CLIP_VIT_B32.revision in tokens["semantic"] and CLIP_VIT_B32.sha256 in tokens["semantic"]
    local = ImagePrism(dimensions=["semantic"], cache_dir=tmp_path,
                       config={"semantic": SemanticConfig(model_path=PARITY / "clip_vision_tiny.onnx")})
    assert local.plugins["semantic"].cache_token != tokens["semantic"]


@pytest.mark.parametrize("name", sorted(MODELS))
def test_hub_route_end_to_end(name: str, fake_hub, tmp_path: Path, dev_images: list[Path],
                              monkeypatch: pytest.MonkeyPatch) -> None:
    config_type, default, content = MODELS[name]
    data = content()
    commit = fake_hub.add_file(default.repo, default.filename, data)
    cache = tmp_path / "cache"
    config = {name: config_type(model_revision=commit)}

    online = ImagePrism(dimensions=[name], config=config, runtime=ModelRuntime(endpoint=fake_hub.endpoint,
                                                                               cache_dir=cache, retries=0))
    result = online.compare(dev_images[0], dev_images[3])
    assert fake_hub.count("GET") >= 1
    assert -1.0 <= result.scores[name] < 0.9999

    local_file = tmp_path / "local.onnx"
    local_file.write_bytes(data)
    local = ImagePrism(dimensions=[name], config={name: config_type(model_path=local_file)}, cache_dir=tmp_path / "c2")
    assert local.compare(dev_images[0], dev_images[3]).scores[name] == pytest.approx(result.scores[name], abs=1e-6)

    # a second process, offline: the cached file (and, for style, the derived file) is enough
    fake_hub.clear_requests()
    monkeypatch.setattr(style, "_derived", {})  # forget what this process derived
    monkeypatch.setitem(sys.modules, "onnx", None)
    offline = ImagePrism(dimensions=[name], config=config, runtime=ModelRuntime(cache_dir=cache, offline=True))
    again = offline.embed(dev_images[0])[name]
    assert fake_hub.count() == 0
    np.testing.assert_allclose(again, online.embed(dev_images[0])[name], atol=1e-6)


def test_default_route_checks_the_pinned_checksum(fake_hub, tmp_path: Path, dev_images: list[Path]) -> None:
    fake_hub.add_file(CLIP_VIT_B32.repo, CLIP_VIT_B32.filename, MODELS["semantic"][2](),
                      revision=CLIP_VIT_B32.revision)
    prism = ImagePrism(dimensions=["semantic"], runtime=ModelRuntime(endpoint=fake_hub.endpoint,
                                                                     cache_dir=tmp_path, retries=0))
    with pytest.raises(ModelDownloadError, match="expected 89117001 bytes"):
        prism.embed(dev_images[0])


def test_wrong_model_for_the_dimension_is_a_clear_error(tmp_path: Path, dev_images: list[Path]) -> None:
    prism = ImagePrism(dimensions=["semantic"], cache_dir=tmp_path,
                       config={"semantic": SemanticConfig(model_path=PARITY / "dinov2_tiny.onnx")})
    with pytest.raises(ModelLoadError, match="image_embeds"):
        prism.embed(dev_images[0])


def test_override_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not both"):
        ImagePrism(dimensions=["instance"], config={"instance": InstanceConfig(
            model_path=PARITY / "dinov2_tiny.onnx", model_repo="someone/else")})
    with pytest.raises(ConfigError, match="invalid Hub repository"):
        ImagePrism(dimensions=["instance"], config={"instance": InstanceConfig(model_repo="no-slash")})


def test_semantic_vectors_do_not_depend_on_batch_mates(tmp_path: Path, dev_images: list[Path]) -> None:
    """Dynamic quantization scales activations per batch; semantic runs one image per call by default."""
    pytest.importorskip("onnx")
    from onnxruntime.quantization import quantize_dynamic

    quantized = tmp_path / "clip_quantized.onnx"
    quantize_dynamic(str(PARITY / "clip_vision_tiny.onnx"), str(quantized))

    def vectors(config: SemanticConfig, images: list[Path]) -> np.ndarray:
        prism = ImagePrism(dimensions=["semantic"], config={"semantic": config}, cache_dir=tmp_path)
        return np.stack([e["semantic"] for e in prism.embed_batch(images).embeddings])

    alone = vectors(SemanticConfig(model_path=quantized), dev_images[:1])[0]
    assert SemanticConfig().batch_size == 1
    np.testing.assert_array_equal(vectors(SemanticConfig(model_path=quantized), dev_images[:4])[0], alone)
    batched = vectors(SemanticConfig(model_path=quantized, batch_size=4), dev_images[:4])[0]
    assert not np.array_equal(batched, alone)  # what the default avoids


def test_instance_needs_a_token_sequence(tmp_path: Path, dev_images: list[Path]) -> None:
    pytest.importorskip("onnx")
    from fakehub import onnx_bytes

    flat = tmp_path / "flat.onnx"
    flat.write_bytes(onnx_bytes(output_name="last_hidden_state"))  # (N, 8): no token axis
    prism = ImagePrism(dimensions=["instance"], config={"instance": InstanceConfig(model_path=flat)}, cache_dir=tmp_path)
    with pytest.raises(ModelLoadError, match=r"expected \(batch, tokens, hidden\)"):
        prism.embed(dev_images[0])


@pytest.mark.parametrize(
    ("first", "second", "needle"),
    [
        (np.ones(8, np.float32), np.ones(9, np.float32), "differ in length"),
        (np.full(8, np.nan, np.float32), np.ones(8, np.float32), "finite 1-D"),
        (np.ones((2, 8), np.float32), np.ones(8, np.float32), "finite 1-D"),
        ("not a vector", np.ones(8, np.float32), "finite 1-D"),
        (np.ones(0, np.float32), np.ones(8, np.float32), "finite 1-D"),
    ],
)
def test_stored_vectors_are_checked_before_scoring(first, second, needle) -> None:
    """compare_embeddings on vectors from a user's store: bad ones are InputErrors, never NaN scores."""
    from imageprism import ImagePrism, InputError

    prism = ImagePrism(dimensions=["semantic"])  # no model is loaded to score stored vectors
    with pytest.raises(InputError, match=needle):
        prism.compare_embeddings({"semantic": first}, {"semantic": second})
    good = np.ones(8, np.float32)
    assert prism.compare_embeddings({"semantic": good}, {"semantic": good}).scores["semantic"] == pytest.approx(1.0)
