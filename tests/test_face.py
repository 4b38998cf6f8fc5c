"""The face plugin with stand-in models: config, scoring, YuNet alignment route, licence warning,
user models and the download route of the (unverified) default ArcFace path."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest
from face_standins import arcface_standin, save, yunet_outputs, yunet_standin
from onnx import TensorProto, helper
from PIL import Image

import imageprism.dimensions.face as face_mod
from imageprism._runtime import ModelRuntime
from imageprism.dimensions import plugin_class
from imageprism.dimensions._face import ARCFACE_TEMPLATE
from imageprism.dimensions.face import ARCFACE, FaceConfig, FaceDimension
from imageprism.errors import ConfigError, ModelDownloadError, ModelLoadError


@pytest.fixture(scope="module")
def arcface_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save(arcface_standin(seed=3), tmp_path_factory.mktemp("arcface") / "arcface_standin.onnx")


# YuNet stand-in: one face at stride 16, row 10, col 12; box centre (200, 168), 96x112;
# landmarks = the ArcFace template scaled by 1.5 and moved, in 640x640 input coordinates.
_LMK = ARCFACE_TEMPLATE * 1.5 + [116, 90]
_ROW, _COL = 10, 12
_CELL = {
    (16, _ROW * 40 + _COL): {
        "cls": 0.95,
        "obj": 0.95,
        "bbox": [0.5, 0.5, np.log(6), np.log(7)],
        "kps": (_LMK / 16 - [_COL, _ROW]).ravel().tolist(),
    }
}


@pytest.fixture(scope="module")
def yunet_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save(yunet_standin(yunet_outputs(_CELL)), tmp_path_factory.mktemp("yunet") / "yunet_standin.onnx")


def _runtime(tmp_path: Path) -> ModelRuntime:
    return ModelRuntime(cache_dir=tmp_path / "cache", offline=True)


# --------------------------------------------------------------------------- config


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"detector": "mtcnn"}, "unknown face detector 'mtcnn'.*ultraface.*yunet"),
        ({"select": "all"}, "'largest' or 'best'"),
        ({"score_threshold": 1.5}, "score_threshold.*1.5"),
        ({"nms_iou": -0.1}, "nms_iou"),
        ({"margin": -1}, "margin"),
        ({"max_faces": 0}, "max_faces"),
    ],
)
def test_bad_config_values_are_named(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        FaceConfig(**kwargs)  # type: ignore[arg-type]


def test_registry_and_defaults() -> None:
    assert plugin_class("face") is FaceDimension
    cfg = FaceConfig()
    assert (cfg.detector, cfg.select, cfg.threshold, cfg.nms_iou) == ("ultraface", "largest", 0.7, 0.3)
    assert FaceConfig(detector="yunet").threshold == 0.9
    assert {s.repo for s in FaceDimension.default_models} == {
        "onnxmodelzoo/version-RFB-320",
        "opencv/face_detection_yunet",
        "onnxmodelzoo/arcfaceresnet100-8",
    }


def test_construction_is_cheap_and_checks_paths(tmp_path: Path) -> None:
    runtime = _runtime(tmp_path)
    FaceDimension(FaceConfig(), runtime)
    assert not runtime._opened and not (tmp_path / "cache").exists()
    with pytest.raises(ConfigError, match="does not exist"):
        FaceDimension(FaceConfig(embed_path=tmp_path / "missing.onnx"), runtime)
    with pytest.raises(ConfigError, match="not both"):
        FaceDimension(FaceConfig(embed_path=__file__, embed_repo="a/b"), runtime)


# --------------------------------------------------------------------------- scoring


def _unit(v: list[float]) -> np.ndarray:
    a = np.asarray(v, np.float32)
    return a / np.linalg.norm(a)


def test_score_none_when_either_side_has_no_face(tmp_path: Path) -> None:
    dim = FaceDimension(FaceConfig(), _runtime(tmp_path))
    a = np.stack([_unit([1, 0, 0])])
    assert dim.score(a, None) is None and dim.score(None, a) is None and dim.score(None, None) is None


def test_score_largest_vs_best(tmp_path: Path) -> None:
    a = np.stack([_unit([1, 0, 0]), _unit([0, 1, 0])])  # largest face first
    b = np.stack([_unit([0, 0, 1]), _unit([0, 1, 1])])
    largest = FaceDimension(FaceConfig(), _runtime(tmp_path))
    best = FaceDimension(FaceConfig(select="best"), _runtime(tmp_path))
    assert largest.score(a, b) == pytest.approx(0.0, abs=1e-7)
    assert best.score(a, b) == pytest.approx(np.sqrt(0.5), abs=1e-6)


# --------------------------------------------------------------------------- YuNet route (aligned)


def test_yunet_route_decodes_and_aligns(tmp_path: Path, yunet_path: Path, arcface_path: Path) -> None:
    dim = FaceDimension(
        FaceConfig(detector="yunet", detector_path=yunet_path, embed_path=arcface_path), _runtime(tmp_path)
    )
    # a 1280x1280 photo is scaled by 0.5 into the 640x640 input, so everything doubles
    faces = dim.detect(Image.new("RGB", (1280, 1280)))
    assert len(faces) == 1 and faces.landmarks is not None
    np.testing.assert_allclose(faces.boxes[0], np.array([152, 112, 248, 224]) * 2, atol=1e-3)
    np.testing.assert_allclose(faces.landmarks[0], _LMK * 2, atol=1e-3)
    assert faces.scores[0] == pytest.approx(0.95, abs=1e-6)

    # The crop is the similarity warp of the landmarks onto the template: draw dots there and find them.
    photo = np.zeros((1280, 1280, 3), np.uint8)
    for x, y in _LMK * 2:
        photo[round(y) - 2 : round(y) + 3, round(x) - 2 : round(x) + 3] = 255
    (crop,) = dim.face_crops(Image.fromarray(photo), faces)
    arr = np.asarray(crop)[:, :, 0].astype(float)
    for tx, ty in ARCFACE_TEMPLATE:
        x0, y0 = round(tx), round(ty)
        win = arr[y0 - 4 : y0 + 5, x0 - 4 : x0 + 5]
        yy, xx = np.mgrid[y0 - 4 : y0 + 5, x0 - 4 : x0 + 5]
        assert win.sum() > 0
        assert abs((win * xx).sum() / win.sum() - tx) < 0.6 and abs((win * yy).sum() / win.sum() - ty) < 0.6

    (emb,) = dim.embed_batch([Image.fromarray(photo)])
    assert emb is not None and emb.shape == (1, 512)
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, rtol=1e-5)


# --------------------------------------------------------------------------- embedder models


def _model_with_io(path: Path, in_name: str, shape: list[object], n_inputs: int = 1) -> Path:
    inputs = [helper.make_tensor_value_info(f"{in_name}{i or ''}", TensorProto.FLOAT, shape) for i in range(n_inputs)]
    nodes = [
        helper.make_node("GlobalAveragePool", [inputs[0].name], ["pooled"]),
        helper.make_node("Flatten", ["pooled"], ["embedding"], axis=1),
    ]
    graph = helper.make_graph(nodes, "tiny", inputs, [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, None)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)
    onnx.save(model, str(path))
    return path


def test_user_embedder_with_other_tensor_names_is_accepted(tmp_path: Path) -> None:
    path = _model_with_io(tmp_path / "other.onnx", "input.1", ["N", 3, 112, 112])
    dim = FaceDimension(FaceConfig(embed_path=path), _runtime(tmp_path))
    _, in_name, out_name = dim._embedder()
    assert (in_name, out_name) == ("input.1", "embedding")


@pytest.mark.parametrize(
    ("shape", "n_inputs", "match"),
    [
        (["N", 112, 112, 3], 1, r"expected \[N, 3, 112, 112\]"),  # NHWC
        (["N", 3, 128, 128], 1, r"expected \[N, 3, 112, 112\]"),
        (["N", 3, 112, 112], 2, "expected one named 'data'"),
    ],
)
def test_unusable_embedder_fails_clearly(tmp_path: Path, shape: list[object], n_inputs: int, match: str) -> None:
    path = _model_with_io(tmp_path / "bad.onnx", "x", shape, n_inputs)
    dim = FaceDimension(FaceConfig(embed_path=path), _runtime(tmp_path))
    with pytest.raises(ModelLoadError, match=match):
        dim._embedder()


# --------------------------------------------------------------------------- licence warning


def test_licence_warning_once_for_default_weights_only(
    tmp_path: Path, arcface_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(face_mod, "_licence_warned", False)
    # the user's own model: no warning
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        FaceDimension(FaceConfig(embed_path=arcface_path), _runtime(tmp_path))._embedder()
    # the default weights (here: the default spec pointed at the stand-in file): warned once
    monkeypatch.setattr(face_mod, "ARCFACE", face_mod.dataclasses.replace(ARCFACE, path=arcface_path))
    with pytest.warns(UserWarning, match=r"no clear licence.*FaceConfig\(embed_path="):
        FaceDimension(FaceConfig(), _runtime(tmp_path))._embedder()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        FaceDimension(FaceConfig(), _runtime(tmp_path))._embedder()


# --------------------------------------------------------------------------- download route


def test_default_arcface_missing_on_the_hub_names_the_unverified_path(
    fake_hub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(face_mod, "_licence_warned", True)
    fake_hub.add_file(ARCFACE.repo, "README.md", b"no model at the root", lfs=False)
    runtime = ModelRuntime(endpoint=fake_hub.endpoint, cache_dir=tmp_path / "cache", retries=0)
    with pytest.raises(ModelDownloadError, match=r"not found.*unverified.*embed_file='model/arcfaceresnet100-8.onnx'"):
        FaceDimension(FaceConfig(), runtime)._embedder()


def test_default_repo_at_another_revision_still_warns(
    fake_hub, arcface_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(face_mod, "_licence_warned", False)
    commit = fake_hub.add_file(ARCFACE.repo, ARCFACE.filename, arcface_path.read_bytes())
    runtime = ModelRuntime(endpoint=fake_hub.endpoint, cache_dir=tmp_path / "cache", retries=0)
    with pytest.warns(UserWarning, match="no clear licence"):
        _, in_name, _ = FaceDimension(FaceConfig(embed_revision=commit), runtime)._embedder()
    assert in_name == "data"


def test_user_hub_embedder_downloads_and_embeds(fake_hub, tmp_path: Path) -> None:
    data = arcface_standin(seed=5).SerializeToString()
    commit = fake_hub.add_file("me/my-face-model", "onnx/face.onnx", data)
    runtime = ModelRuntime(endpoint=fake_hub.endpoint, cache_dir=tmp_path / "cache", retries=0)
    cfg = FaceConfig(embed_repo="me/my-face-model", embed_file="onnx/face.onnx", embed_revision=commit)
    dim = FaceDimension(cfg, runtime)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the user's own model: no licence warning
        _, in_name, out_name = dim._embedder()
    assert (in_name, out_name) == ("data", "fc1") and fake_hub.count("GET") >= 1
