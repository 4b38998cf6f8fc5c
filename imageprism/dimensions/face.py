"""The ``face`` dimension: detect faces, crop or align them, compare ArcFace identities.

Pipeline per image: a detector finds faces (UltraFace RFB-320 boxes by default, or
YuNet boxes plus five landmarks); each face becomes a 112x112 crop (a square around
the box, or a similarity warp of the landmarks onto the ArcFace template); ArcFace
turns crops into L2-normalised vectors; the score is their cosine.

The embedding of an image is a float32 ``(k, D)`` array (``D`` = 512 for ArcFace),
one row per compared face, largest face first; ``None`` when no face is found, and
then the score of any pair including that image is ``None``, not 0.0.

Choosing the detector. Alignment matters: ArcFace verifies LFW pairs at about 0.998
on aligned faces but about 0.909 on plain crops. ``FaceConfig(detector="yunet")``
aligns (YuNet, MIT, 230 kB). The default stays ``"ultraface"`` because it is the
detector checked end to end on real photos by this package's tests; YuNet's
decoding is tested against OpenCV's ``FaceDetectorYN`` and the alignment against
insightface's ``norm_crop``, but its real weights have not been run here yet.
Prefer ``detector="yunet"`` for identity matching.
"""

from __future__ import annotations

import dataclasses
import os
import threading
import warnings
from collections.abc import Sequence
from typing import ClassVar, Literal

import numpy as np
from PIL import Image

from imageprism._math import cosine, l2_normalize
from imageprism._runtime import (
    ModelRuntime,
    ModelSpec,
    OnnxModel,
    resolve_spec,
    run_batched,
)
from imageprism.dimensions import _face
from imageprism.dimensions._base import DimensionPlugin
from imageprism.errors import ConfigError, ModelDownloadError, ModelLoadError

__all__ = ["ARCFACE", "ULTRAFACE", "YUNET", "FaceConfig", "FaceDimension"]

ULTRAFACE = ModelSpec(
    repo="onnxmodelzoo/version-RFB-320",
    filename="version-RFB-320.onnx",
    revision="6fd293d22b523ec88959f104b8eef5395e3adfbc",
    sha256="34cd7e60aeff28744c657de7a3dc64e872d506741de66987f3426f2b79f88017",
    size=1_270_727,
    license="MIT (upstream Linzaer/Ultra-Light-Fast-Generic-Face-Detector-1MB); Hub repo metadata says Apache-2.0",
    inputs=("input",),
    outputs=("scores", "boxes"),
    io_verified=True,
    dimension="face",
    description="UltraFace RFB-320 face detector (boxes only), RGB 320x240, (x-127)/128",
)

YUNET = ModelSpec(
    repo="opencv/face_detection_yunet",
    filename="face_detection_yunet_2023mar.onnx",
    revision="3cc26e7f1014a5ee5d74a42acee58bafc9d0a310",
    sha256="8f2383e4dd3cfbb4553ea8718107fc0423210dc964f9f4280604804ed2552fa4",
    size=232_589,
    license="MIT (opencv_zoo face_detection_yunet LICENSE, (c) 2020 Shiqi Yu)",
    inputs=("input",),
    outputs=_face.YUNET_OUTPUTS,
    io_verified=False,
    dimension="face",
    description="YuNet 2023mar face detector with 5 landmarks (for alignment), BGR 640x640 raw 0-255",
)

ARCFACE = ModelSpec(
    repo="onnxmodelzoo/arcfaceresnet100-8",
    # The file's path inside this repo is not verified (root per most sources; one says model/).
    filename="arcfaceresnet100-8.onnx",
    revision=None,
    sha256="f3a6bc281e72f88862f5748b53be3d76b3b48f8f1ab1f4a537941bdc4e1b01da",
    size=261_036_388,
    license="Apache-2.0 (ONNX Model Zoo); trained on MS-Celeb-1M, a withdrawn dataset: no clear commercial licence",
    inputs=("data",),
    outputs=("fc1",),
    io_verified=False,
    dimension="face",
    description="ArcFace LResNet100E-IR, 112x112 RGB raw 0-255 -> 512-d (normalised in the graph)",
)

_ARCFACE_PATH_HINT = (
    "Note: the path of the default ArcFace file in onnxmodelzoo/arcfaceresnet100-8 is unverified. If the file "
    "was not found, try FaceConfig(embed_file='model/arcfaceresnet100-8.onnx'), or FaceConfig("
    "embed_repo='onnxmodelzoo/legacy_models', embed_file='validated/vision/body_analysis/arcface/model/"
    "arcfaceresnet100-8.onnx'), or download it yourself and pass FaceConfig(embed_path=...)"
)

_LICENCE_WARNING = (
    "imageprism face dimension: the default ArcFace weights (onnxmodelzoo/arcfaceresnet100-8) were trained on "
    "MS-Celeb-1M, a withdrawn dataset, and have no clear licence for commercial use. To bring your own model, "
    "pass FaceConfig(embed_path='face.onnx') or FaceConfig(embed_repo='org/name', embed_file='model.onnx'): "
    "any ONNX model taking 112x112 RGB face crops (float32 NCHW, raw 0-255) and returning one vector per face."
)
_licence_warned = False
_licence_lock = threading.Lock()

Detector = Literal["ultraface", "yunet"]
Select = Literal["largest", "best"]
_DETECTORS: dict[str, ModelSpec] = {"ultraface": ULTRAFACE, "yunet": YUNET}
#: reference score thresholds: UltraFace's detect_imgs_onnx.py, OpenCV's YuNet demo
_DEFAULT_THRESHOLD = {"ultraface": 0.7, "yunet": 0.9}
_SELECT = ("largest", "best")


@dataclasses.dataclass(frozen=True)
class FaceConfig:
    """Settings of the ``face`` dimension.

    Embedder (default: ONNX-zoo ArcFace ResNet-100; see the licence note in the README):

    - ``embed_path``: a local ONNX file to use instead, or
    - ``embed_repo`` / ``embed_file`` / ``embed_revision``: another Hub file.

    A custom embedder gets ``[N, 3, 112, 112]`` float32 RGB crops with raw 0-255
    values and must return ``[N, D]``. Its tensors are ``data``/``fc1`` if it has
    them, else its only input and output.

    Detector:

    - ``detector``: ``"ultraface"`` (default; boxes only, faces are square crops
      with ``margin``) or ``"yunet"`` (boxes and five landmarks; faces are aligned
      onto the ArcFace template, which is far more accurate for identity).
    - ``detector_path``: a local ONNX file for the chosen detector.
    - ``score_threshold``: minimum detection score; ``None`` uses the detector's
      reference value (UltraFace 0.7, YuNet 0.9).
    - ``nms_iou``: IoU above which overlapping detections are merged (0.3).
    - ``margin``: for square crops, the crop side is the box's longer side times
      ``1 + margin`` (0.25: the face plus a little hair and chin).

    Which faces are compared:

    - ``select="largest"`` (default): the largest face of each image.
    - ``select="best"``: every face (up to ``max_faces`` per image, largest first);
      the score is the best cosine over all pairs ("is anyone in A also in B?").
    """

    embed_repo: str | None = None
    embed_file: str | None = None
    embed_revision: str | None = None
    embed_path: str | os.PathLike[str] | None = None
    detector: Detector = "ultraface"
    detector_path: str | os.PathLike[str] | None = None
    score_threshold: float | None = None
    nms_iou: float = 0.3
    margin: float = 0.25
    select: Select = "largest"
    max_faces: int = 10

    def __post_init__(self) -> None:
        if self.detector not in _DETECTORS:
            raise ConfigError(
                f"unknown face detector {self.detector!r}; use one of {sorted(_DETECTORS)} "
                "('yunet' aligns faces on five landmarks)"
            )
        if self.select not in _SELECT:
            raise ConfigError(f"unknown face select {self.select!r}; use 'largest' or 'best'")
        for name in ("score_threshold", "nms_iou"):
            value = getattr(self, name)
            if value is None and name == "score_threshold":
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
                raise ConfigError(f"FaceConfig.{name} must be a number in [0, 1], got {value!r}")
        if isinstance(self.margin, bool) or not isinstance(self.margin, (int, float)) or not 0.0 <= self.margin <= 3.0:
            raise ConfigError(f"FaceConfig.margin must be a number in [0, 3] (0.25 = 25% around the box), got {self.margin!r}")
        if isinstance(self.max_faces, bool) or not isinstance(self.max_faces, int) or self.max_faces < 1:
            raise ConfigError(f"FaceConfig.max_faces must be a positive integer, got {self.max_faces!r}")

    @property
    def threshold(self) -> float:
        """The detection score threshold in use."""
        return _DEFAULT_THRESHOLD[self.detector] if self.score_threshold is None else float(self.score_threshold)


class FaceDimension(DimensionPlugin):
    """ArcFace identity similarity of the faces in two images (see the module doc)."""

    name = "face"
    config_type = FaceConfig
    default_models: ClassVar[tuple[ModelSpec, ...]] = (ULTRAFACE, YUNET, ARCFACE)

    def __init__(self, config: FaceConfig, runtime: ModelRuntime) -> None:
        super().__init__(config, runtime)
        self.config: FaceConfig = config
        self.detector_spec = resolve_spec(_DETECTORS[config.detector], path=config.detector_path)
        embed = resolve_spec(
            ARCFACE,
            path=config.embed_path,
            repo=config.embed_repo,
            filename=config.embed_file,
            revision=config.embed_revision,
        )
        # A model of the user's own: accept its only input/output when it lacks data/fc1.
        self.embed_spec = embed if embed.dimension else dataclasses.replace(embed, inputs=(), outputs=())

    @property
    def cache_token(self) -> str:
        return f"{self.name}:{self.config!r}:{self.detector_spec.identity}:{self.embed_spec.identity}"

    # ------------------------------------------------------------------ models

    def _detector(self) -> OnnxModel:
        return self.runtime.model(self.detector_spec)

    def _embedder(self) -> tuple[OnnxModel, str, str]:
        spec = self.embed_spec
        default_repo = spec.path is None and spec.repo == ARCFACE.repo
        if spec.dimension or default_repo:  # the default weights (maybe re-pinned), not the user's own
            _warn_licence_once()
        try:
            model = self.runtime.model(spec)
        except ModelDownloadError as exc:
            if default_repo and spec.filename == ARCFACE.filename:
                raise ModelDownloadError(f"{exc}. {_ARCFACE_PATH_HINT}") from exc
            raise
        in_name = _pick(model.input_names, "data", model, "input")
        out_name = _pick(model.output_names, "fc1", model, "output")
        shape = model.input_shapes[in_name]
        if len(shape) != 4 or any(isinstance(d, int) and d != want for d, want in zip(shape[1:], (3, 112, 112))):
            raise ModelLoadError(
                f"face embedder {model.path} ({spec.location}) takes {in_name!r} of shape {list(shape)}; "
                "expected [N, 3, 112, 112] (112x112 RGB crops, channels first). Use an ONNX model with that input"
            )
        return model, in_name, out_name

    # ------------------------------------------------------------------ detection

    def detect(self, image: Image.Image) -> _face.Faces:
        """Faces in ``image`` (original pixel coordinates, largest first)."""
        cfg = self.config
        model = self._detector()
        if cfg.detector == "yunet":
            x, scale = _face.yunet_input(image)
            outputs = dict(zip(_face.YUNET_OUTPUTS, model.run({"input": x}, _face.YUNET_OUTPUTS)))
            return _face.yunet_postprocess(
                outputs,
                scale=scale,
                width=image.width,
                height=image.height,
                score_threshold=cfg.threshold,
                nms_iou=cfg.nms_iou,
            )
        scores, boxes = model.run({"input": _face.ultraface_input(image)}, ["scores", "boxes"])
        return _face.ultraface_postprocess(
            scores, boxes, width=image.width, height=image.height, score_threshold=cfg.threshold, nms_iou=cfg.nms_iou
        )

    def face_crops(self, image: Image.Image, faces: _face.Faces) -> list[Image.Image]:
        """The 112x112 crops of the faces to compare: aligned when landmarks exist."""
        count = 1 if self.config.select == "largest" else self.config.max_faces
        crops = []
        for i in range(min(count, len(faces))):
            if faces.landmarks is not None:
                crops.append(_face.align_face(image, faces.landmarks[i]))
            else:
                crops.append(_face.square_crop(image, faces.boxes[i], margin=self.config.margin))
        return crops

    # ------------------------------------------------------------------ plugin API

    def embed_batch(self, images: Sequence[Image.Image]) -> list[np.ndarray | None]:
        per_image = [self.face_crops(image, self.detect(image)) for image in images]
        crops = [crop for group in per_image for crop in group]
        if not crops:
            return [None] * len(per_image)
        model, in_name, out_name = self._embedder()
        (vectors,) = run_batched(model, _face.arcface_input(crops), output_names=[out_name], input_name=in_name)
        if vectors.ndim != 2 or vectors.shape[0] != len(crops):
            raise ModelLoadError(
                f"face embedder {model.path} returned {out_name!r} of shape {list(vectors.shape)} for "
                f"{len(crops)} crops; expected [N, D]"
            )
        vectors = l2_normalize(vectors)
        result: list[np.ndarray | None] = []
        start = 0
        for group in per_image:
            result.append(vectors[start : start + len(group)] if group else None)
            start += len(group)
        return result

    def score(self, a: np.ndarray | None, b: np.ndarray | None) -> float | None:
        """Cosine of the largest faces (``select="largest"``) or the best pair (``"best"``);
        ``None`` when either image has no face."""
        if a is None or b is None or len(a) == 0 or len(b) == 0:
            return None
        if self.config.select == "largest":
            return cosine(a[0], b[0])
        pairs = l2_normalize(np.asarray(a, np.float64)) @ l2_normalize(np.asarray(b, np.float64)).T
        return float(np.clip(pairs.max(), -1.0, 1.0))


def _pick(names: Sequence[str], preferred: str, model: OnnxModel, kind: str) -> str:
    if preferred in names:
        return preferred
    if len(names) == 1:
        return names[0]
    raise ModelLoadError(
        f"face embedder {model.path} has {kind}s {list(names)}; expected one named {preferred!r} or a single {kind}"
    )


def _warn_licence_once() -> None:
    global _licence_warned
    with _licence_lock:
        if _licence_warned:
            return
        _licence_warned = True
    warnings.warn(_LICENCE_WARNING, UserWarning, stacklevel=4)
