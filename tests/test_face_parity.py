"""Face preprocessing against the reference implementations.

- UltraFace's ``detect_imgs_onnx.py`` resizes with ``cv2.resize`` (``INTER_LINEAR``);
- insightface's ``norm_crop`` aligns with scikit-image's ``SimilarityTransform`` and
  ``cv2.warpAffine``;
- OpenCV's ``FaceDetectorYN`` decodes YuNet's outputs (run here on a stand-in graph).

imageprism uses neither at run time (numpy and Pillow only); these tests hold the
replacements to the originals.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from imageprism.dimensions._face import (
    ARCFACE_TEMPLATE,
    align_face,
    box_iou,
    resize_linear,
    similarity_transform,
    ultraface_postprocess,
)

cv2 = pytest.importorskip("cv2", reason="opencv-python-headless (test extra) is the reference for resize and warp")
skimage_transform = pytest.importorskip(
    "skimage.transform", reason="scikit-image (test extra) is the reference for the similarity transform"
)


@pytest.mark.parametrize("shape", [(480, 640), (512, 512), (2048, 1536), (80, 100), (239, 321), (1, 1), (3, 700)])
def test_resize_linear_matches_cv2(shape: tuple[int, int]) -> None:
    pixels = np.random.default_rng(sum(shape)).integers(0, 256, (*shape, 3), dtype=np.uint8)
    ours = resize_linear(pixels, (320, 240))
    ref = cv2.resize(pixels, (320, 240)).astype(np.float32)  # default INTER_LINEAR, as the reference
    assert ours.shape == ref.shape and ours.dtype == np.float32
    assert np.abs(ours - ref).max() < 1.0  # OpenCV rounds its weights to 1/2048 and its output to uint8


def test_ultraface_detections_match_the_reference_pipeline(dev_images: list[Path], shared_models_dir: Path) -> None:
    """Same faces as ``cv2.resize`` + ``(x - 127) / 128`` on every dev photo (real detector)."""
    from imageprism._runtime import ModelRuntime
    from imageprism.dimensions.face import FaceConfig, FaceDimension

    dim = FaceDimension(FaceConfig(detector_path=shared_models_dir / "version-RFB-320.onnx"), ModelRuntime())
    model = dim._detector()
    found = 0
    for path in dev_images:
        image = Image.open(path).convert("RGB")
        x = (cv2.resize(np.asarray(image), (320, 240)).astype(np.float32) - 127) / 128
        scores, boxes = model.run({"input": x.transpose(2, 0, 1)[None]}, ["scores", "boxes"])
        ref = ultraface_postprocess(scores, boxes, width=image.width, height=image.height, score_threshold=0.7, nms_iou=0.3)
        ours = dim.detect(image)
        assert len(ours) == len(ref), path.name
        for box, ref_box in zip(ours.boxes, ref.boxes):
            assert box_iou(box, ref_box[None])[0] > 0.98, (path.name, box, ref_box)
        found += len(ours)
    assert found >= 10  # the dev photos hold a dozen or so faces


def _estimate(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    cls = skimage_transform.SimilarityTransform
    if hasattr(cls, "from_estimate"):
        return np.asarray(cls.from_estimate(src, dst).params)
    tform = cls()
    tform.estimate(src, dst)
    return np.asarray(tform.params)


@pytest.mark.parametrize(("angle", "scale", "tx", "ty"), [(0, 0.8, 190, 70), (20, 0.9, 200, 40), (-35, 1.3, 170, 90), (5, 0.3, 200, 100)])
def test_alignment_matches_insightface_norm_crop(
    dev_images_dir: Path, angle: float, scale: float, tx: float, ty: float
) -> None:
    image = Image.open(dev_images_dir / "skimage_astronaut.png").convert("RGB")
    a = math.radians(angle)
    rot = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
    rng = np.random.default_rng(int(angle) + 100)
    landmarks = ARCFACE_TEMPLATE @ rot.T * scale + [tx, ty] + rng.normal(0, 1.0, (5, 2))

    matrix = _estimate(landmarks, ARCFACE_TEMPLATE)[:2]
    np.testing.assert_allclose(similarity_transform(landmarks, ARCFACE_TEMPLATE), matrix, atol=1e-9)

    ref = cv2.warpAffine(np.asarray(image), matrix, (112, 112), borderValue=0.0).astype(np.int16)
    ours = np.asarray(align_face(image, landmarks)).astype(np.int16)
    assert np.abs(ours - ref).max() <= 1  # both bilinear; they round differently


def test_yunet_decoding_matches_opencv_face_detector_yn(tmp_path: Path) -> None:
    """OpenCV's own ``FaceDetectorYN`` (the reference decoder) on a stand-in graph with known outputs."""
    from face_standins import save, yunet_outputs, yunet_standin

    from imageprism.dimensions._face import yunet_input, yunet_postprocess

    rng = np.random.default_rng(7)
    cells: dict[tuple[int, int], dict[str, object]] = {}
    for stride, grid in ((8, 80), (16, 40), (32, 20)):
        # sparse cells on a coarse lattice, so boxes overlap only where placed on purpose
        for idx in rng.choice(np.arange(0, grid * grid, 7), size=6, replace=False):
            cells[(stride, int(idx))] = {
                "cls": float(rng.uniform(0.7, 1.0)),
                "obj": float(rng.uniform(0.7, 1.0)),
                "bbox": rng.uniform(-0.4, 0.4, 4).tolist(),
                "kps": rng.uniform(-1.0, 1.0, 10).tolist(),
            }
    # a duplicate of one face one cell to the right, with a lower score: NMS must drop it
    (stride, idx), values = next(iter(cells.items()))
    bbox = list(values["bbox"])  # type: ignore[call-overload]
    cells[(stride, idx + 1)] = {"cls": 0.5, "obj": 0.5, "bbox": [bbox[0] - 1, *bbox[1:]]}
    path = save(yunet_standin(yunet_outputs(cells)), tmp_path / "yunet.onnx")

    image = np.full((640, 640, 3), 90, np.uint8)
    detector = cv2.FaceDetectorYN.create(str(path), "", (640, 640), 0.45, 0.3, 5000)
    _, ref = detector.detect(image)  # rows: x, y, w, h, 5 landmarks (x, y), score
    ref = ref[np.argsort(-ref[:, 14], kind="stable")]

    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x, scale = yunet_input(Image.fromarray(image))
    names = [o.name for o in session.get_outputs()]
    ours = yunet_postprocess(
        dict(zip(names, session.run(None, {"input": x}))), scale=scale, width=640, height=640,
        score_threshold=0.45, nms_iou=0.3,
    )
    order = np.argsort(-ours.scores, kind="stable")
    assert len(ours) == len(ref) == len(cells) - 1
    np.testing.assert_allclose(ours.scores[order], ref[:, 14], atol=1e-5)
    boxes = ref[:, :4].copy()
    boxes[:, 2:] += boxes[:, :2]
    np.testing.assert_allclose(np.clip(boxes, 0, 640), ours.boxes[order], atol=1e-3)
    assert ours.landmarks is not None
    np.testing.assert_allclose(ours.landmarks[order], ref[:, 4:14].reshape(-1, 5, 2), atol=1e-3)
