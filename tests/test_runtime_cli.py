"""``imageprism models list | download | path``."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest
from fakehub import FakeHub, onnx_bytes
from PIL import Image

from imageprism._runtime import ModelSpec
from imageprism.cli import main
from imageprism.dimensions import REGISTRY, DimensionPlugin, available, plugin_class

DATA = onnx_bytes()
COMMIT = "0123456789abcdef0123456789abcdef01234567"


class FakeSemantic(DimensionPlugin):
    """Stands in for the semantic dimension: two default models on the fake Hub."""

    name: ClassVar[str] = "semantic"
    config_type: ClassVar[type] = dict
    default_models: ClassVar[tuple[ModelSpec, ...]] = (
        ModelSpec(repo="acme/vision", filename="onnx/model.onnx", revision=COMMIT, size=len(DATA),
                  sha256=hashlib.sha256(DATA).hexdigest(), license="MIT", dimension="semantic"),
        ModelSpec(repo="acme/extra", filename="extra.onnx", license="Apache-2.0", dimension="semantic"),
    )

    def embed_batch(self, images: Sequence[Image.Image]) -> list[np.ndarray | None]:
        raise NotImplementedError

    def score(self, a: np.ndarray | None, b: np.ndarray | None) -> float | None:
        raise NotImplementedError


@pytest.fixture
def hub_env(fake_hub: FakeHub, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> FakeHub:
    """The fake Hub as HF_ENDPOINT, a temporary cache, and FakeSemantic registered as 'semantic'."""
    monkeypatch.setenv("HF_ENDPOINT", fake_hub.endpoint)
    monkeypatch.setenv("IMAGEPRISM_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setitem(REGISTRY, "semantic", f"{__name__}:FakeSemantic")
    fake_hub.add_file("acme/vision", "onnx/model.onnx", DATA, revision=COMMIT)
    fake_hub.add_file("acme/extra", "extra.onnx", DATA)
    return fake_hub


def _rows(out: str) -> dict[tuple[str, str], list[str]]:
    """``models list --json`` as rows: dimension, repo, file, revision, size, licence, cached (yes/no)."""
    return {
        (m["repo"], m["file"]): [m["dimension"], m["repo"], m["file"], m["revision"] or "main", str(m["size"]),
                                 m["license"], "yes" if m["cached"] else "no"]
        for m in json.loads(out)["models"]
    }


def test_models_path_follows_argument_then_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("IMAGEPRISM_CACHE_DIR", str(tmp_path / "env"))
    assert main(["models", "path"]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "env")
    assert main(["models", "path", "--cache-dir", str(tmp_path / "arg")]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "arg")
    monkeypatch.delenv("IMAGEPRISM_CACHE_DIR")
    assert main(["models", "path"]) == 0
    assert capsys.readouterr().out.strip().endswith("models")


#: (repo, file) -> (revision, sha256, bytes) as recorded in ../shared/notes/models.md section 0
#: (None where the notes have no verified value)
NOTES = {
    ("Xenova/clip-vit-base-patch32", "onnx/vision_model_quantized.onnx"): (
        "d15189d7028b43f1d3e65039190477f6af591c2a",
        "583fd1110a514667812fee7d684952aaf82a99b959760c8d7dca7e0ab9839299",
        89_117_001,
    ),
    ("Xenova/dinov2-small", "onnx/model.onnx"): ("bd222e886723524568931e43031f6d9327896fac", None, None),
    ("onnxmodelzoo/mobilenetv2-7", "mobilenetv2-7.onnx"): (
        None,
        "c1c513582d56afceff8516c73804e484c81c6a830712ab6d682253f4a3cd042f",
        14_246_826,
    ),
    ("onnxmodelzoo/version-RFB-320", "version-RFB-320.onnx"): (
        "6fd293d22b523ec88959f104b8eef5395e3adfbc",
        "34cd7e60aeff28744c657de7a3dc64e872d506741de66987f3426f2b79f88017",
        1_270_727,
    ),
    ("opencv/face_detection_yunet", "face_detection_yunet_2023mar.onnx"): (
        "3cc26e7f1014a5ee5d74a42acee58bafc9d0a310",
        "8f2383e4dd3cfbb4553ea8718107fc0423210dc964f9f4280604804ed2552fa4",
        232_589,
    ),
    ("onnxmodelzoo/arcfaceresnet100-8", "arcfaceresnet100-8.onnx"): (
        None,
        "f3a6bc281e72f88862f5748b53be3d76b3b48f8f1ab1f4a537941bdc4e1b01da",
        261_036_388,
    ),
}


def test_default_models_match_the_notes() -> None:
    """Every default model is one the notes describe, with the same pin, checksum and size."""
    specs = [spec for name in available() for spec in plugin_class(name).default_models]
    assert len(specs) >= 4, "the model-backed dimensions should be registered"
    for spec in specs:
        assert (spec.repo, spec.filename) in NOTES, f"{spec.location} is not in the notes' registry"
        revision, sha256, size = NOTES[(spec.repo, spec.filename)]
        assert (spec.revision, spec.sha256, spec.size) == (revision, sha256, size), spec.location
        assert spec.dimension and spec.license and spec.inputs and spec.outputs


def test_models_list_prints_every_default_with_its_pinned_revision(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["models", "list"]) == 0
    text = capsys.readouterr().out
    assert text.splitlines()[0].split() == ["DIMENSION", "FILE", "SIZE", "LICENCE", "CACHED"]
    assert max(len(line) for line in text.splitlines()[:-1]) <= 100  # narrow; --json has every field
    assert main(["models", "list", "--json"]) == 0
    out = capsys.readouterr().out
    specs = [spec for name in available() for spec in plugin_class(name).default_models]
    rows = _rows(out)
    for spec in specs:
        row = rows[(spec.repo, spec.filename)]
        assert row[0] == spec.dimension
        assert row[3] == (spec.revision or "main")
    for spec in specs:  # the pins recorded in ../shared/notes/models.md section 0
        revision = NOTES[(spec.repo, spec.filename)][0]
        assert rows[(spec.repo, spec.filename)][3] == (revision or "main")
        assert spec.filename.rsplit("/", 1)[-1] in text and spec.dimension in text


def test_models_download_then_list_shows_cached(hub_env: FakeHub, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["models", "list", "--json"]) == 0
    rows = _rows(capsys.readouterr().out)
    assert rows[("acme/vision", "onnx/model.onnx")][-1] == "no"
    assert hub_env.requests == []  # listing never touches the network

    assert main(["models", "download", "semantic"]) == 0
    out = capsys.readouterr().out
    assert f"semantic: acme/vision@{COMMIT}/onnx/model.onnx -> " in out
    assert "semantic: acme/extra@main/extra.onnx -> " in out
    assert hub_env.count("GET") == 2

    assert main(["models", "list", "--json"]) == 0
    rows = _rows(capsys.readouterr().out)
    assert rows[("acme/vision", "onnx/model.onnx")][-1] == "yes"
    assert rows[("acme/vision", "onnx/model.onnx")][3] == COMMIT
    assert rows[("acme/extra", "extra.onnx")][-1] == "yes"

    hub_env.clear_requests()
    assert main(["models", "download", "semantic"]) == 0  # already cached: nothing fetched
    capsys.readouterr()
    assert hub_env.count("GET") == 0


def test_models_download_own_file_and_errors(
    hub_env: FakeHub, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "own"
    argv = ["models", "download", "--repo", "acme/vision", "--file", "onnx/model.onnx", "--revision", COMMIT]
    assert main([*argv, "--cache-dir", str(target)]) == 0
    path = Path(capsys.readouterr().out.strip().split(" -> ")[1])
    assert path.is_relative_to(target) and path.read_bytes() == DATA

    assert main(["models", "download", "--repo", "acme/nope", "--file", "x.onnx"]) == 1
    assert "repository 'acme/nope' not found" in capsys.readouterr().err
    assert main(["models", "download", "--repo", "acme/vision"]) == 1
    assert "--repo and --file are both needed" in capsys.readouterr().err
    assert main(["models", "download", "semantic", "--repo", "acme/vision", "--file", "f"]) == 1
    assert "not both" in capsys.readouterr().err
    assert main(["models", "download", "colour"]) == 1
    assert "unknown dimension 'colour'" in capsys.readouterr().err


def test_models_download_offline_says_what_is_missing(
    hub_env: FakeHub, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert main(["models", "download", "semantic"]) == 1
    err = capsys.readouterr().err
    assert "'onnx/model.onnx' from acme/vision" in err and "offline mode is on" in err
    assert hub_env.requests == []
