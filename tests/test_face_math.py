"""Pure face helpers: NMS, UltraFace post-processing, alignment maths and the warp."""

from __future__ import annotations

import math

import numpy as np
import pytest
from PIL import Image

from imageprism.dimensions._face import (
    ARCFACE_TEMPLATE,
    align_face,
    arcface_input,
    nms,
    similarity_transform,
    square_crop,
    ultraface_input,
    ultraface_postprocess,
    warp_affine,
)


def _apply(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    return points @ matrix[:, :2].T + matrix[:, 2]


def _similarity(angle_deg: float, scale: float, tx: float, ty: float) -> np.ndarray:
    a = math.radians(angle_deg)
    return np.array(
        [[scale * math.cos(a), -scale * math.sin(a), tx], [scale * math.sin(a), scale * math.cos(a), ty]]
    )


# --------------------------------------------------------------------------- NMS


def test_nms_suppresses_overlaps_above_threshold_and_orders_by_score() -> None:
    boxes = np.array([[0, 0, 10, 10], [1, 0, 11, 10], [20, 20, 30, 30], [0, 0, 10, 10.5]])
    scores = np.array([0.8, 0.9, 0.7, 0.1])
    # box 1 (best) suppresses 0 and 3 (IoU > 0.3); box 2 is apart.
    assert nms(boxes, scores, 0.3).tolist() == [1, 2]


def test_nms_keeps_a_box_whose_iou_equals_the_threshold() -> None:
    boxes = np.array([[0, 0, 10, 10], [5, 0, 15, 10]])  # IoU = 50 / 150 = 1/3
    assert nms(boxes, np.array([0.9, 0.8]), 1 / 3).tolist() == [0, 1]
    assert nms(boxes, np.array([0.9, 0.8]), 0.33).tolist() == [0]


def test_nms_suppression_is_not_transitive() -> None:
    # A suppresses B; B would suppress C, but C does not overlap A, so C stays.
    boxes = np.array([[0, 0, 10, 10], [6, 0, 16, 10], [12, 0, 22, 10]])
    assert nms(boxes, np.array([0.9, 0.8, 0.7]), 0.2).tolist() == [0, 2]


def test_nms_empty_input() -> None:
    assert nms(np.zeros((0, 4)), np.zeros(0), 0.3).tolist() == []


# --------------------------------------------------------------------------- UltraFace


def test_ultraface_input_is_rgb_stretched_and_normalised() -> None:
    img = Image.new("RGB", (640, 100), (255, 127, 0))
    x = ultraface_input(img)
    assert x.shape == (1, 3, 240, 320) and x.dtype == np.float32
    assert np.allclose(x[0, :, 120, 160], [(255 - 127) / 128, 0.0, -127 / 128])


def test_ultraface_postprocess_thresholds_clamps_scales_and_sorts_largest_first() -> None:
    scores = np.array([[[0.1, 0.9], [0.05, 0.95], [0.4, 0.6], [0.2, 0.8], [0.25, 0.75]]])
    boxes = np.array(
        [
            [
                [0.1, 0.1, 0.2, 0.2],  # small face, score 0.9
                [-0.1, 0.5, 0.5, 1.2],  # big face, off the image edge: clamped
                [0.0, 0.0, 1.0, 1.0],  # below the threshold
                [0.11, 0.1, 0.21, 0.2],  # overlaps the small face, lower score: suppressed
                [0.7, 0.7, 0.75, 0.75],  # tiny face
            ]
        ]
    )
    faces = ultraface_postprocess(scores, boxes, width=200, height=100, score_threshold=0.7, nms_iou=0.3)
    assert faces.landmarks is None
    np.testing.assert_allclose(faces.scores, [0.95, 0.9, 0.75], rtol=1e-6)
    np.testing.assert_allclose(
        faces.boxes, [[0, 50, 100, 100], [20, 10, 40, 20], [140, 70, 150, 75]], atol=1e-4
    )


def test_ultraface_postprocess_no_face() -> None:
    faces = ultraface_postprocess(
        np.array([[[0.9, 0.1]]]), np.array([[[0, 0, 1, 1]]]), width=10, height=10, score_threshold=0.7, nms_iou=0.3
    )
    assert len(faces) == 0 and faces.boxes.shape == (0, 4)


# --------------------------------------------------------------------------- similarity transform


def test_template_maps_to_itself() -> None:
    m = similarity_transform(ARCFACE_TEMPLATE, ARCFACE_TEMPLATE)
    np.testing.assert_allclose(m, [[1, 0, 0], [0, 1, 0]], atol=1e-10)


@pytest.mark.parametrize(("angle", "scale", "tx", "ty"), [(30, 2.5, 100, -40), (-75, 0.4, 3, 250), (180, 1.0, 0, 0)])
def test_known_rotation_scale_translation_is_undone(angle: float, scale: float, tx: float, ty: float) -> None:
    forward = _similarity(angle, scale, tx, ty)
    moved = _apply(forward, ARCFACE_TEMPLATE)
    back = similarity_transform(moved, ARCFACE_TEMPLATE)
    np.testing.assert_allclose(_apply(back, moved), ARCFACE_TEMPLATE, atol=1e-9)
    # the recovered matrix is the inverse of the forward one
    full = np.vstack([forward, [0, 0, 1]])
    np.testing.assert_allclose(back, np.linalg.inv(full)[:2], atol=1e-9)


def test_similarity_transform_is_least_squares_and_never_reflects() -> None:
    rng = np.random.default_rng(0)
    mirrored = ARCFACE_TEMPLATE * [-1, 1] + rng.normal(0, 0.5, (5, 2))
    m = similarity_transform(mirrored, ARCFACE_TEMPLATE)
    assert np.linalg.det(m[:, :2]) > 0
    # with noise, the fit is better than any perturbed transform
    noisy = _apply(_similarity(10, 1.5, 5, 5), ARCFACE_TEMPLATE) + rng.normal(0, 1.0, (5, 2))
    best = similarity_transform(noisy, ARCFACE_TEMPLATE)
    err = np.sum((_apply(best, noisy) - ARCFACE_TEMPLATE) ** 2)
    for _ in range(20):
        other = best + rng.normal(0, 1e-3, best.shape) * [[1, 1, 100], [1, 1, 100]]
        other[1, 1], other[1, 0] = other[0, 0], -other[0, 1]  # keep it a similarity
        assert np.sum((_apply(other, noisy) - ARCFACE_TEMPLATE) ** 2) >= err


def test_similarity_transform_rejects_degenerate_points() -> None:
    with pytest.raises(ValueError, match="identical"):
        similarity_transform(np.ones((5, 2)), ARCFACE_TEMPLATE)


# --------------------------------------------------------------------------- warp


def test_identity_and_integer_shift_warps_copy_pixels_exactly() -> None:
    rng = np.random.default_rng(1)
    arr = rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)
    img = Image.fromarray(arr)
    same = np.asarray(warp_affine(img, np.array([[1.0, 0, 0], [0, 1.0, 0]]), (50, 40)))
    np.testing.assert_array_equal(same, arr)
    shifted = np.asarray(warp_affine(img, np.array([[1.0, 0, 5], [0, 1.0, 3]]), (50, 40)))
    np.testing.assert_array_equal(shifted[3:, 5:], arr[:-3, :-5])
    assert not shifted[:3].any() and not shifted[:, :5].any()  # black border


def _blobs(size: tuple[int, int], centres: np.ndarray, sigma: float) -> Image.Image:
    yy, xx = np.mgrid[0 : size[1], 0 : size[0]].astype(np.float64)
    img = np.zeros((size[1], size[0]))
    for cx, cy in centres:
        img += np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * sigma**2))
    return Image.fromarray(np.clip(img * 255, 0, 255).astype(np.uint8)).convert("RGB")


def _centroid(arr: np.ndarray, near: np.ndarray, radius: int) -> np.ndarray:
    x0, y0 = (round(v) for v in near)
    win = arr[y0 - radius : y0 + radius + 1, x0 - radius : x0 + radius + 1].astype(np.float64)
    yy, xx = np.mgrid[y0 - radius : y0 + radius + 1, x0 - radius : x0 + radius + 1]
    return np.array([(win * xx).sum() / win.sum(), (win * yy).sum() / win.sum()])


def test_align_face_puts_landmarks_on_the_template() -> None:
    # a face rotated by 25 degrees, twice the template size, somewhere in a larger photo
    landmarks = _apply(_similarity(25, 2.0, 130, 60), ARCFACE_TEMPLATE)
    photo = _blobs((400, 360), landmarks, sigma=4.0)
    aligned = align_face(photo, landmarks)
    assert aligned.size == (112, 112)
    arr = np.asarray(aligned)[:, :, 0]
    for target in ARCFACE_TEMPLATE:
        np.testing.assert_allclose(_centroid(arr, target, 5), target, atol=0.15)


def test_square_crop_centres_the_box_with_margin() -> None:
    arr = np.zeros((200, 300, 3), dtype=np.uint8)
    arr[50:150, 100:180] = 255  # a white 80x100 "face"
    crop = square_crop(Image.fromarray(arr), np.array([100, 50, 180, 150]), margin=0.25)
    assert crop.size == (112, 112)
    out = np.asarray(crop)[:, :, 0] > 127
    # side = 100 * 1.25 = 125: the white box spans 80/125 and 100/125 of the crop, centred
    cols, rows = np.flatnonzero(out.any(axis=0)), np.flatnonzero(out.any(axis=1))
    assert abs((cols[-1] - cols[0] + 1) - 112 * 80 / 125) <= 1.5
    assert abs((rows[-1] - rows[0] + 1) - 112 * 100 / 125) <= 1.5
    assert abs((cols[0] + cols[-1]) / 2 - 55.5) <= 1 and abs((rows[0] + rows[-1]) / 2 - 55.5) <= 1


def test_arcface_input_is_raw_rgb_nchw() -> None:
    crop = Image.new("RGB", (112, 112), (10, 20, 30))
    x = arcface_input([crop, crop])
    assert x.shape == (2, 3, 112, 112) and x.dtype == np.float32
    assert x[1, :, 5, 5].tolist() == [10.0, 20.0, 30.0]
    with pytest.raises(ValueError, match="112x112"):
        arcface_input([Image.new("RGB", (100, 112))])
