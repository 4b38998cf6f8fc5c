"""The real UltraFace RFB-320 detector (../shared/models) on real photos (../shared/data/dev-images).

The astronaut's face box was measured once with the detector and checked by eye
(drawn on the photo): forehead to chin, ear to ear. Under resize, mirror and paste
the box must move with the pixels, within 6% of the face size.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from face_standins import arcface_standin, save
from PIL import Image, ImageOps

from imageprism._runtime import ModelRuntime
from imageprism.dimensions.face import FaceConfig, FaceDimension

#: (x1, y1, x2, y2) of the astronaut's face in the 512x512 photo
ASTRONAUT_FACE = np.array([179.0, 62.7, 269.3, 173.4])
TOLERANCE = 0.06  # of the face box's longer side (about 7 px at full size)


@pytest.fixture(scope="module")
def arcface_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save(arcface_standin(seed=1), tmp_path_factory.mktemp("arcface") / "arcface_standin.onnx")


@pytest.fixture(scope="module")
def face_dim(shared_models_dir: Path, arcface_path: Path, tmp_path_factory: pytest.TempPathFactory) -> FaceDimension:
    config = FaceConfig(detector_path=shared_models_dir / "version-RFB-320.onnx", embed_path=arcface_path)
    return FaceDimension(config, ModelRuntime(cache_dir=tmp_path_factory.mktemp("cache"), offline=True))


@pytest.fixture(scope="module")
def astronaut(dev_images_dir: Path) -> Image.Image:
    return Image.open(dev_images_dir / "skimage_astronaut.png").convert("RGB")


def _assert_one_face_at(dim: FaceDimension, image: Image.Image, expected: np.ndarray) -> None:
    faces = dim.detect(image)
    assert len(faces) == 1, f"expected exactly one face, found {len(faces)}: {faces.boxes}"
    tol = TOLERANCE * max(expected[2] - expected[0], expected[3] - expected[1])
    np.testing.assert_allclose(faces.boxes[0], expected, atol=tol)
    assert faces.scores[0] > 0.9


def test_astronaut_one_face_at_the_known_position(face_dim: FaceDimension, astronaut: Image.Image) -> None:
    faces = face_dim.detect(astronaut)
    assert len(faces) == 1
    np.testing.assert_allclose(faces.boxes[0], ASTRONAUT_FACE, atol=1.0)


@pytest.mark.parametrize("size", [(256, 256), (1024, 1024), (700, 400), (300, 512)])
def test_astronaut_resized(face_dim: FaceDimension, astronaut: Image.Image, size: tuple[int, int]) -> None:
    sx, sy = size[0] / 512, size[1] / 512
    expected = ASTRONAUT_FACE * [sx, sy, sx, sy]
    _assert_one_face_at(face_dim, astronaut.resize(size, Image.Resampling.BICUBIC), expected)


def test_astronaut_mirrored(face_dim: FaceDimension, astronaut: Image.Image) -> None:
    x1, y1, x2, y2 = ASTRONAUT_FACE
    _assert_one_face_at(face_dim, ImageOps.mirror(astronaut), np.array([512 - x2, y1, 512 - x1, y2]))


@pytest.mark.parametrize(
    ("canvas", "offset", "colour"),
    [((1000, 800), (300, 200), (128, 128, 128)), ((1400, 1000), (100, 400), (30, 60, 90))],
)
def test_astronaut_pasted_on_a_larger_canvas(
    face_dim: FaceDimension,
    astronaut: Image.Image,
    canvas: tuple[int, int],
    offset: tuple[int, int],
    colour: tuple[int, int, int],
) -> None:
    big = Image.new("RGB", canvas, colour)
    big.paste(astronaut, offset)
    _assert_one_face_at(face_dim, big, ASTRONAUT_FACE + [*offset, *offset])


@pytest.mark.parametrize("name", ["skimage_grass.png", "skimage_gravel.png", "skimage_brick.png", "skimage_coins.png"])
def test_no_face_in_textures(face_dim: FaceDimension, dev_images_dir: Path, name: str) -> None:
    image = Image.open(dev_images_dir / name).convert("RGB")
    assert len(face_dim.detect(image)) == 0
    assert face_dim.embed_batch([image]) == [None]


def test_face_score_none_for_two_images_without_faces(face_dim: FaceDimension, dev_images_dir: Path) -> None:
    a, b = (Image.open(dev_images_dir / n).convert("RGB") for n in ("skimage_grass.png", "skimage_brick.png"))
    ea, eb = face_dim.embed_batch([a, b])
    assert face_dim.score(ea, eb) is None


def test_embeddings_largest_face_first_and_scores(face_dim: FaceDimension, astronaut: Image.Image) -> None:
    mirrored = ImageOps.mirror(astronaut)
    e_astro, e_mirror, e_again = face_dim.embed_batch([astronaut, mirrored, astronaut.copy()])
    assert e_astro is not None and e_astro.shape == (1, 512)
    np.testing.assert_allclose(np.linalg.norm(e_astro, axis=1), 1.0, rtol=1e-5)
    assert face_dim.score(e_astro, e_again) == pytest.approx(1.0, abs=1e-6)
    assert face_dim.score(e_astro, e_mirror) < 0.999  # a different crop gives a different vector


def test_best_mode_embeds_every_face_largest_first(
    shared_models_dir: Path, arcface_path: Path, dev_images_dir: Path, tmp_path: Path
) -> None:
    config = FaceConfig(
        detector_path=shared_models_dir / "version-RFB-320.onnx", embed_path=arcface_path, select="best", max_faces=3
    )
    dim = FaceDimension(config, ModelRuntime(cache_dir=tmp_path, offline=True))
    group = Image.open(dev_images_dir / "kodim14.png").convert("RGB")  # four people in a raft
    faces = dim.detect(group)
    assert len(faces) >= 3
    areas = (faces.boxes[:, 2] - faces.boxes[:, 0]) * (faces.boxes[:, 3] - faces.boxes[:, 1])
    assert np.all(np.diff(areas) <= 0)
    (emb,) = dim.embed_batch([group])
    assert emb is not None and emb.shape == (3, 512)
    # the best pair of an image with itself is a face with itself
    assert dim.score(emb, emb) == pytest.approx(1.0, abs=1e-6)


def test_imageprism_face_end_to_end(shared_models_dir: Path, arcface_path: Path, dev_images_dir: Path, tmp_path: Path) -> None:
    from imageprism import ImagePrism

    config = FaceConfig(detector_path=shared_models_dir / "version-RFB-320.onnx", embed_path=arcface_path)
    prism = ImagePrism(dimensions=["face"], config={"face": config}, cache_dir=tmp_path, offline=True)
    astronaut = dev_images_dir / "skimage_astronaut.png"
    same = prism.compare(astronaut, astronaut)
    assert same.scores["face"] == pytest.approx(1.0, abs=1e-6)
    small = Image.open(astronaut).convert("RGB").resize((300, 300), Image.Resampling.BICUBIC)
    resized = prism.compare(astronaut, small)
    assert resized.scores["face"] is not None and 0.5 < resized.scores["face"] < 1.0
    none = prism.compare(dev_images_dir / "skimage_grass.png", dev_images_dir / "skimage_gravel.png")
    assert none.scores["face"] is None
    assert none.weighted_score == 0.0  # a dimension that cannot score contributes 0
    emb = prism.embed(astronaut)
    assert emb["face"] is not None and emb["face"].shape == (1, 512)
    assert prism.embed(dev_images_dir / "skimage_coins.png")["face"] is None


def test_default_detector_downloads_verifies_and_then_works_offline(
    fake_hub, shared_models_dir: Path, arcface_path: Path, astronaut: Image.Image, tmp_path: Path
) -> None:
    """The pinned default UltraFace spec, served by a loopback Hub with the real bytes."""
    from imageprism.dimensions.face import ULTRAFACE

    data = (shared_models_dir / "version-RFB-320.onnx").read_bytes()
    fake_hub.add_file(ULTRAFACE.repo, ULTRAFACE.filename, data, revision=ULTRAFACE.revision)
    online = ModelRuntime(endpoint=fake_hub.endpoint, cache_dir=tmp_path, retries=0)
    faces = FaceDimension(FaceConfig(embed_path=arcface_path), online).detect(astronaut)  # size + sha256 checked
    np.testing.assert_allclose(faces.boxes, [ASTRONAUT_FACE], atol=1.0)
    fake_hub.clear_requests()
    offline = ModelRuntime(cache_dir=tmp_path, offline=True)
    faces = FaceDimension(FaceConfig(embed_path=arcface_path), offline).detect(astronaut)
    np.testing.assert_allclose(faces.boxes, [ASTRONAUT_FACE], atol=1.0)
    assert fake_hub.count() == 0
