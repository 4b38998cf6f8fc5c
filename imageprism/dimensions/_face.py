"""Pure face helpers: detector pre/post-processing, NMS, alignment and crops.

Everything here is a small function of numpy arrays and Pillow images with no
model session inside, so each step can be tested on its own. The face dimension
(:mod:`imageprism.dimensions.face`) wires them to the ONNX models.

Coordinates are pixel coordinates of the original image, OpenCV style: the
centre of pixel ``(i, j)`` is at ``x = i, y = j``. Boxes are ``(x1, y1, x2, y2)``
corner form; landmarks are ``(5, 2)`` arrays of ``(x, y)`` in the order of the
ArcFace template: eye on the image left, eye on the image right, nose tip, mouth
corner on the image left, mouth corner on the image right.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

import numpy as np
from PIL import Image

__all__ = [
    "ARCFACE_SIZE",
    "ARCFACE_TEMPLATE",
    "ULTRAFACE_SIZE",
    "YUNET_OUTPUTS",
    "YUNET_SIZE",
    "Faces",
    "align_face",
    "arcface_input",
    "box_iou",
    "nms",
    "resize_linear",
    "similarity_transform",
    "square_crop",
    "ultraface_input",
    "ultraface_postprocess",
    "warp_affine",
    "yunet_decode",
    "yunet_input",
    "yunet_postprocess",
]

#: UltraFace RFB-320 input, as (width, height).
ULTRAFACE_SIZE = (320, 240)
#: YuNet's fixed square input side (the ONNX graph has a fixed 640x640 input).
YUNET_SIZE = 640
#: YuNet output names, per stride: ``cls_8 ... kps_32``.
YUNET_STRIDES = (8, 16, 32)
YUNET_OUTPUTS = tuple(f"{kind}_{s}" for kind in ("cls", "obj", "bbox", "kps") for s in YUNET_STRIDES)
#: ArcFace input side.
ARCFACE_SIZE = 112
#: Where the five landmarks sit in an aligned 112x112 ArcFace crop (insightface ``arcface_dst``).
ARCFACE_TEMPLATE = np.array(
    [
        [38.2946, 51.6963],  # eye, image left (subject's right eye)
        [73.5318, 51.5014],  # eye, image right
        [56.0252, 71.7366],  # nose tip
        [41.5493, 92.3655],  # mouth corner, image left
        [70.7299, 92.2041],  # mouth corner, image right
    ],
    dtype=np.float64,
)


@dataclasses.dataclass(frozen=True)
class Faces:
    """Faces found in one image, in original pixel coordinates, largest box first.

    ``boxes``: float32 ``(n, 4)`` as ``(x1, y1, x2, y2)``; ``scores``: float32 ``(n,)``;
    ``landmarks``: float32 ``(n, 5, 2)`` or ``None`` when the detector gives none.
    """

    boxes: np.ndarray
    scores: np.ndarray
    landmarks: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.boxes.shape[0])

    def largest_first(self) -> Faces:
        """The same faces reordered by box area, largest first (stable for ties)."""
        order = np.argsort(-_area(self.boxes), kind="stable")
        lmk = None if self.landmarks is None else self.landmarks[order]
        return Faces(self.boxes[order], self.scores[order], lmk)


def _rgb(image: Image.Image) -> Image.Image:
    return image if image.mode == "RGB" else image.convert("RGB")


def _area(boxes: np.ndarray) -> np.ndarray:
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    return np.clip(boxes[:, 2] - boxes[:, 0], 0, None) * np.clip(boxes[:, 3] - boxes[:, 1], 0, None)


# --------------------------------------------------------------------------- NMS


def box_iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """Intersection over union of one ``(4,)`` box with each row of ``(n, 4)`` boxes."""
    box = np.asarray(box, dtype=np.float64)
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    x1 = np.maximum(box[0], boxes[:, 0])
    y1 = np.maximum(box[1], boxes[:, 1])
    x2 = np.minimum(box[2], boxes[:, 2])
    y2 = np.minimum(box[3], boxes[:, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    union = _area(box[None])[0] + _area(boxes) - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Hard non-maximum suppression; indices of the kept boxes, best score first.

    A box is dropped when its IoU with an already kept, higher-scoring box is
    greater than ``iou_threshold`` (as in UltraFace's ``hard_nms``). Ties in score
    keep the earlier box.
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    if boxes.shape[0] != scores.shape[0]:
        raise ValueError(f"{boxes.shape[0]} boxes but {scores.shape[0]} scores")
    order = np.argsort(-scores, kind="stable")
    keep: list[int] = []
    while order.size:
        best = int(order[0])
        keep.append(best)
        rest = order[1:]
        order = rest[box_iou(boxes[best], boxes[rest]) <= iou_threshold]
    return np.asarray(keep, dtype=np.int64)


# --------------------------------------------------------------------------- UltraFace


def _linear_taps(src: int, dst: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Source indices and weights of OpenCV's ``INTER_LINEAR`` along one axis."""
    f = (np.arange(dst, dtype=np.float64) + 0.5) * (src / dst) - 0.5
    i0 = np.floor(f).astype(np.int64)
    w = f - i0
    w[i0 < 0] = 0.0
    i0 = np.clip(i0, 0, None)
    w[i0 >= src - 1] = 0.0
    i0 = np.clip(i0, None, src - 1)
    return i0, np.minimum(i0 + 1, src - 1), w.astype(np.float32)


def resize_linear(pixels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``cv2.resize(pixels, size)`` (``INTER_LINEAR``) in numpy: float32 ``(h, w, c)``.

    Half-pixel centres, borders clamped, no anti-aliasing when shrinking (each
    output pixel blends its 2x2 nearest source pixels), as the UltraFace reference
    preprocessing does. OpenCV rounds its weights to 1/2048; this does not, so
    results differ from it by at most one level.
    """
    height, width = pixels.shape[:2]
    x0, x1, wx = _linear_taps(width, size[0])
    y0, y1, wy = _linear_taps(height, size[1])
    pixels = np.asarray(pixels)
    rows0, rows1 = y0[:, None], y1[:, None]  # gather first: only 4 * w * h pixels become floats
    wx3, wy3 = wx[None, :, None], wy[:, None, None]
    upper = pixels[rows0, x0] * (1 - wx3) + pixels[rows0, x1] * wx3
    lower = pixels[rows1, x0] * (1 - wx3) + pixels[rows1, x1] * wx3
    out: np.ndarray = (upper * (1 - wy3) + lower * wy3).astype(np.float32)
    return out


def ultraface_input(image: Image.Image) -> np.ndarray:
    """UltraFace RFB-320 input: RGB, plain (aspect-changing) ``INTER_LINEAR`` resize to
    320x240 (:func:`resize_linear`), ``(x - 127) / 128``, float32 NCHW ``[1, 3, 240, 320]``."""
    x = (resize_linear(np.asarray(_rgb(image)), ULTRAFACE_SIZE) - 127.0) / 128.0
    return np.ascontiguousarray(x.transpose(2, 0, 1)[None])


def ultraface_postprocess(
    scores: np.ndarray,
    boxes: np.ndarray,
    *,
    width: int,
    height: int,
    score_threshold: float,
    nms_iou: float,
) -> Faces:
    """Faces from UltraFace outputs for an image of ``width`` x ``height`` pixels.

    ``scores`` ``[1, N, 2]`` are softmaxed (face = column 1); ``boxes`` ``[1, N, 4]``
    are decoded corner boxes normalised to 0..1, not clamped. Keeps scores above
    ``score_threshold``, clamps to the image, applies hard NMS at ``nms_iou`` and
    scales x by ``width`` and y by ``height`` (the input was stretched, not letterboxed).
    """
    face = np.asarray(scores, dtype=np.float32).reshape(-1, 2)[:, 1]
    norm = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    keep = face > score_threshold
    face, norm = face[keep], np.clip(norm[keep], 0.0, 1.0)
    kept = nms(norm, face, nms_iou)
    scaled = norm[kept] * np.array([width, height, width, height], dtype=np.float32)
    return Faces(scaled.astype(np.float32), face[kept]).largest_first()


# --------------------------------------------------------------------------- YuNet


def yunet_input(image: Image.Image) -> tuple[np.ndarray, float]:
    """YuNet input and the scale applied: the image resized (aspect kept,
    :func:`resize_linear`) so its longer side is 640, placed top-left on a black
    640x640 canvas; BGR, raw 0-255, float32 NCHW ``[1, 3, 640, 640]``. Divide
    detected coordinates by the scale."""
    rgb = _rgb(image)
    scale = YUNET_SIZE / max(rgb.size)
    size = (max(1, min(YUNET_SIZE, round(rgb.width * scale))), max(1, min(YUNET_SIZE, round(rgb.height * scale))))
    canvas = np.zeros((YUNET_SIZE, YUNET_SIZE, 3), dtype=np.float32)
    canvas[: size[1], : size[0]] = resize_linear(np.asarray(rgb), size)
    bgr = canvas[:, :, ::-1].transpose(2, 0, 1)[None]
    return np.ascontiguousarray(bgr), scale


def yunet_decode(
    outputs: Mapping[str, np.ndarray], *, score_threshold: float, size: int = YUNET_SIZE
) -> Faces:
    """Decode YuNet's 12 outputs (``cls_8 ... kps_32``) for a ``size`` x ``size`` input.

    As OpenCV's ``FaceDetectorYN``: for stride ``s`` and grid cell ``(row, col)``,
    ``score = sqrt(clamp01(cls) * clamp01(obj))``; centre ``((col + b0) s, (row + b1) s)``,
    size ``(exp(b2) s, exp(b3) s)``; landmark ``n`` at ``((k[2n] + col) s, (k[2n+1] + row) s)``.
    Returns the candidates scoring at least ``score_threshold``, in input coordinates,
    without NMS, in grid order.
    """
    boxes, scores, marks = [], [], []
    for s in YUNET_STRIDES:
        cols = rows = size // s
        cls = np.clip(np.asarray(outputs[f"cls_{s}"], dtype=np.float64).reshape(-1), 0, 1)
        obj = np.clip(np.asarray(outputs[f"obj_{s}"], dtype=np.float64).reshape(-1), 0, 1)
        bbox = np.asarray(outputs[f"bbox_{s}"], dtype=np.float64).reshape(-1, 4)
        kps = np.asarray(outputs[f"kps_{s}"], dtype=np.float64).reshape(-1, 10)
        if cls.size != rows * cols or bbox.shape[0] != rows * cols or kps.shape[0] != rows * cols:
            raise ValueError(f"YuNet output for stride {s} has {cls.size} cells, expected {rows * cols}")
        score = np.sqrt(cls * obj)
        idx = np.flatnonzero(score >= score_threshold)
        row, col = (idx // cols).astype(np.float64), (idx % cols).astype(np.float64)
        b = bbox[idx]
        cx, cy = (col + b[:, 0]) * s, (row + b[:, 1]) * s
        w, h = np.exp(b[:, 2]) * s, np.exp(b[:, 3]) * s
        boxes.append(np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1))
        k = kps[idx].reshape(-1, 5, 2)
        marks.append((k + np.stack([col, row], axis=1)[:, None, :]) * s)
        scores.append(score[idx])
    return Faces(
        np.concatenate(boxes).astype(np.float32).reshape(-1, 4),
        np.concatenate(scores).astype(np.float32),
        np.concatenate(marks).astype(np.float32).reshape(-1, 5, 2),
    )


def yunet_postprocess(
    outputs: Mapping[str, np.ndarray],
    *,
    scale: float,
    width: int,
    height: int,
    score_threshold: float,
    nms_iou: float,
) -> Faces:
    """Faces from YuNet outputs: decode, hard NMS, un-map by ``scale`` (from
    :func:`yunet_input`) and clamp boxes to the ``width`` x ``height`` image."""
    raw = yunet_decode(outputs, score_threshold=score_threshold)
    kept = nms(raw.boxes, raw.scores, nms_iou)
    boxes = raw.boxes[kept] / scale
    boxes = np.clip(boxes, 0, np.array([width, height, width, height], dtype=np.float32))
    landmarks = np.asarray(raw.landmarks)[kept] / scale
    return Faces(boxes.astype(np.float32), raw.scores[kept], landmarks.astype(np.float32)).largest_first()


# --------------------------------------------------------------------------- alignment


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity transform (rotation, uniform scale, translation; no
    reflection) mapping ``src`` points onto ``dst`` (Umeyama 1991). Returns the 2x3
    matrix ``M`` with ``dst ~= M @ [x, y, 1]``."""
    src = np.asarray(src, dtype=np.float64).reshape(-1, 2)
    dst = np.asarray(dst, dtype=np.float64).reshape(-1, 2)
    if src.shape != dst.shape or src.shape[0] < 2:
        raise ValueError(f"need two matching sets of at least 2 points, got {src.shape} and {dst.shape}")
    mu_src, mu_dst = src.mean(axis=0), dst.mean(axis=0)
    src_c, dst_c = src - mu_src, dst - mu_dst
    var_src = (src_c**2).sum() / len(src)
    if var_src <= 0:
        raise ValueError("source points are all identical; no similarity transform exists")
    cov = dst_c.T @ src_c / len(src)
    u, sigma, vt = np.linalg.svd(cov)
    d = np.array([1.0, 1.0 if np.linalg.det(u) * np.linalg.det(vt) >= 0 else -1.0])
    rot = u @ np.diag(d) @ vt
    scale = float((sigma * d).sum() / var_src)
    matrix = np.empty((2, 3))
    matrix[:, :2] = scale * rot
    matrix[:, 2] = mu_dst - scale * rot @ mu_src
    return matrix


def warp_affine(image: Image.Image, matrix: np.ndarray, size: tuple[int, int]) -> Image.Image:
    """``cv2.warpAffine(image, matrix, size)`` with Pillow: bilinear, black border.

    ``matrix`` (2x3) maps source pixel coordinates to output pixel coordinates, with
    pixel centres at integers (OpenCV's convention). Pillow wants the inverse map in
    its own convention (pixel centres at ``+0.5``), so the inverse is shifted by half a
    pixel on both sides.
    """
    full = np.vstack([np.asarray(matrix, dtype=np.float64), [0.0, 0.0, 1.0]])
    inv = np.linalg.inv(full)[:2]
    lin, trans = inv[:, :2], inv[:, 2]
    trans = trans + 0.5 - lin @ np.array([0.5, 0.5])
    data = (lin[0, 0], lin[0, 1], trans[0], lin[1, 0], lin[1, 1], trans[1])
    return _rgb(image).transform(size, Image.Transform.AFFINE, data, resample=Image.Resampling.BILINEAR, fillcolor=(0, 0, 0))


def align_face(image: Image.Image, landmarks: np.ndarray) -> Image.Image:
    """The 112x112 ArcFace crop: a similarity warp of the five ``landmarks`` onto
    :data:`ARCFACE_TEMPLATE` (insightface's ``norm_crop``)."""
    matrix = similarity_transform(landmarks, ARCFACE_TEMPLATE)
    return warp_affine(image, matrix, (ARCFACE_SIZE, ARCFACE_SIZE))


def square_crop(image: Image.Image, box: np.ndarray, *, margin: float, size: int = ARCFACE_SIZE) -> Image.Image:
    """An unaligned face crop: the square centred on ``box`` whose side is the box's
    longer side times ``1 + margin``, resized (bilinear) to ``size`` x ``size``.
    Parts outside the image are black."""
    x1, y1, x2, y2 = (float(v) for v in box)
    side = max(x2 - x1, y2 - y1, 1.0) * (1.0 + margin)
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    # Pillow's crop box is in edge coordinates; box corners are edges too.
    left, top = round(cx - side / 2), round(cy - side / 2)
    crop = _rgb(image).crop((left, top, left + round(side), top + round(side)))
    return crop.resize((size, size), Image.Resampling.BILINEAR)


def arcface_input(crops: Sequence[Image.Image]) -> np.ndarray:
    """ArcFace batch: 112x112 RGB crops as raw 0-255 float32 NCHW ``[N, 3, 112, 112]``
    (the ONNX-zoo arcfaceresnet100-8 normalises inside the graph)."""
    arrays = [np.asarray(c.convert("RGB"), dtype=np.float32) for c in crops]
    for a in arrays:
        if a.shape != (ARCFACE_SIZE, ARCFACE_SIZE, 3):
            raise ValueError(f"face crop must be {ARCFACE_SIZE}x{ARCFACE_SIZE}, got {a.shape[1]}x{a.shape[0]}")
    return np.ascontiguousarray(np.stack(arrays).transpose(0, 3, 1, 2))
