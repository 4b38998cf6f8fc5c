"""YuNet input, decoding and un-mapping, checked on a stand-in ONNX graph with known outputs."""

from __future__ import annotations

import math

import numpy as np
import onnxruntime as ort
import pytest
from face_standins import yunet_outputs, yunet_standin
from PIL import Image

from imageprism.dimensions._face import yunet_decode, yunet_input, yunet_postprocess

# Known cells (stride, row * cols + col) and what they must decode to, by hand:
CELLS = {
    # stride 8, row 10, col 20: score sqrt(0.81 * 1) = 0.9; centre ((20+.5)*8, (10+.25)*8) = (164, 82),
    # size (4*8, 2*8) = (32, 16) -> box (148, 74, 180, 90); landmarks ((kx + 20)*8, (ky + 10)*8)
    (8, 10 * 80 + 20): {"cls": 0.81, "obj": 1.0, "bbox": [0.5, 0.25, math.log(4), math.log(2)],
                        "kps": [0, 0, 1, 0, 0.5, 0.5, 0, 1, 1, 1]},
    # stride 8, row 10, col 21: the same box ((21-.5)*8 = 164), score 0.8: removed by NMS
    (8, 10 * 80 + 21): {"cls": 0.64, "obj": 1.0, "bbox": [-0.5, 0.25, math.log(4), math.log(2)]},
    # stride 16, row 3, col 4: cls 1.2 clamps to 1 -> score sqrt(0.64) = 0.8; box centre (64, 48), 16x16
    (16, 3 * 40 + 4): {"cls": 1.2, "obj": 0.64, "bbox": [0, 0, 0, 0], "kps": [0.25] * 10},
    # stride 16, row 0, col 0: score sqrt(0.25) = 0.5, below the 0.6 threshold
    (16, 0): {"cls": 0.25, "obj": 1.0},
    # stride 32, row 5, col 7: score sqrt(0.49) = 0.7; centre (224, 160), size (96, 128)
    (32, 5 * 20 + 7): {"cls": 1.0, "obj": 0.49, "bbox": [0, 0, math.log(3), math.log(4)]},
}


def test_decode_matches_hand_computed_boxes_landmarks_and_scores() -> None:
    faces = yunet_decode(yunet_outputs(CELLS), score_threshold=0.6)
    np.testing.assert_allclose(faces.scores, [0.9, 0.8, 0.8, 0.7], atol=1e-6)
    np.testing.assert_allclose(
        faces.boxes,
        [[148, 74, 180, 90], [148, 74, 180, 90], [56, 40, 72, 56], [176, 96, 272, 224]],
        atol=1e-4,
    )
    assert faces.landmarks is not None
    np.testing.assert_allclose(faces.landmarks[0], [[160, 80], [168, 80], [164, 84], [160, 88], [168, 88]], atol=1e-4)
    np.testing.assert_allclose(faces.landmarks[2], np.full((5, 2), [68, 52]), atol=1e-4)
    np.testing.assert_allclose(faces.landmarks[3], np.full((5, 2), [224, 160]), atol=1e-4)


def test_decode_rejects_wrong_output_shapes() -> None:
    outputs = yunet_outputs()
    outputs["cls_16"] = outputs["cls_16"][:, :100]
    with pytest.raises(ValueError, match="stride 16"):
        yunet_decode(outputs, score_threshold=0.5)


def test_input_letterboxes_top_left_in_bgr() -> None:
    img = Image.new("RGB", (1280, 400), (200, 100, 50))
    x, scale = yunet_input(img)
    assert x.shape == (1, 3, 640, 640) and x.dtype == np.float32 and scale == 0.5
    assert x[0, :, 0, 0].tolist() == [50, 100, 200]  # BGR, raw 0-255
    assert x[0, :, 199, 639].tolist() == [50, 100, 200]
    assert not x[0, :, 200:].any()  # zero padding below the 640x200 image


def test_standin_graph_end_to_end_with_unmapping_nms_and_clamping(tmp_path) -> None:  # type: ignore[no-untyped-def]
    model = yunet_standin(yunet_outputs(CELLS))
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    img = Image.new("RGB", (1280, 400), (90, 90, 90))
    x, scale = yunet_input(img)
    names = [o.name for o in session.get_outputs()]
    outputs = dict(zip(names, session.run(None, {"input": x})))
    faces = yunet_postprocess(outputs, scale=scale, width=1280, height=400, score_threshold=0.6, nms_iou=0.3)
    # x2 for the 0.5 scale; largest first; the duplicate is gone; y clamped to the 400 px image
    np.testing.assert_allclose(
        faces.boxes, [[352, 192, 544, 400], [296, 148, 360, 180], [112, 80, 144, 112]], atol=1e-3
    )
    np.testing.assert_allclose(faces.scores, [0.7, 0.9, 0.8], atol=1e-6)
    assert faces.landmarks is not None
    np.testing.assert_allclose(
        faces.landmarks[1], [[320, 160], [336, 160], [328, 168], [320, 176], [336, 176]], atol=1e-3
    )
