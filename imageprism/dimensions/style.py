"""The ``style`` dimension: MobileNetV2 pooled features (colour, texture, look).

Default model: the ONNX Model Zoo ``mobilenetv2-7.onnx`` (``onnxmodelzoo/mobilenetv2-7``
on the Hub, 14 MB, Apache-2.0), checked by sha256. Input ``data`` (1, 3, 224, 224);
the vector is the 1280-d global-average-pooled feature ``mobilenetv20_features_pool0_fwd``
(N, 1280, 1, 1), L2-normalised here.

That tensor is internal to the published graph, so after download it is exposed as
a graph output once, with the ``onnx`` package (``pip install ".[style]"`` from the checkout),
and the edited file is cached under its own sha256 in
``<model cache>/derived/<sha256 of the source file>/``. Later loads use the cached
file and need no ``onnx``.

Preprocessing is the ONNX Model Zoo ImageNet recipe: shortest edge to 256 (long edge
rounded), bilinear, centre crop 224, rescale 1/255, ImageNet mean/std. The score is
the cosine similarity.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import tempfile
import threading
from pathlib import Path
from typing import Any, ClassVar

from imageprism._runtime import ModelSpec, OnnxModel
from imageprism._runtime.hub import sha256_of
from imageprism.dimensions._onnx import ModelConfig, OnnxImageEmbedding
from imageprism.dimensions._preprocess import IMAGENET_MEAN, IMAGENET_STD, Preprocess
from imageprism.errors import MissingDependencyError, ModelLoadError

__all__ = [
    "MOBILENETV2_7",
    "POOLED_TENSOR",
    "STYLE_PREPROCESS",
    "StyleConfig",
    "StyleDimension",
    "expose_output",
]

#: the 1280-d pooled feature inside mobilenetv2-7.onnx
POOLED_TENSOR = "mobilenetv20_features_pool0_fwd"

MOBILENETV2_7 = ModelSpec(
    repo="onnxmodelzoo/mobilenetv2-7",
    filename="mobilenetv2-7.onnx",
    revision=None,  # the full commit hash could not be confirmed offline; the sha256 pins the bytes
    sha256="c1c513582d56afceff8516c73804e484c81c6a830712ab6d682253f4a3cd042f",
    size=14_246_826,
    license="Apache-2.0 (ONNX Model Zoo)",
    inputs=("data",),
    outputs=(POOLED_TENSOR,),
    dimension="style",
    description="MobileNetV2 (ONNX Model Zoo, opset 7); 1280-d pooled feature exposed as an output",
)

STYLE_PREPROCESS = Preprocess(
    shortest_edge=256,
    crop=224,
    resample="bilinear",
    size_rule="round",
    mean=IMAGENET_MEAN,
    std=IMAGENET_STD,
)


def _import_onnx() -> Any:  # onnx ships no type stubs
    try:
        import onnx
    except ImportError:
        raise MissingDependencyError(
            "the style dimension needs the 'onnx' package once, to expose the pooled feature of the "
            'downloaded MobileNetV2 as a graph output: pip install ".[style]" from the imageprism checkout (or pip install onnx)'
        ) from None
    return onnx


#: (source, size, mtime, tensor, derived_root) -> derived file, found or made in this process
_derived: dict[tuple[str, int, int, str, str], Path] = {}
_derived_lock = threading.Lock()


def expose_output(source: Path, tensor: str, derived_root: Path, *, source_sha256: str | None = None) -> Path:
    """A copy of the ONNX file ``source`` with the internal ``tensor`` added to its graph outputs.

    The copy is written once to ``derived_root/<sha256 of source>/<stem>.<tensor>.<sha256[:16] of
    the copy>.onnx`` and reused afterwards (its name is checked against its content once per
    process). When ``tensor`` already is a graph output, ``source`` itself is returned. A tensor
    that no node produces raises ``ModelLoadError``.
    """
    st = source.stat()
    key = (str(source.resolve()), st.st_size, st.st_mtime_ns, tensor, str(derived_root))
    with _derived_lock:
        found = _derived.get(key)
        if found is None or not found.is_file():
            found = _expose_output(source, tensor, derived_root, source_sha256)
            _derived[key] = found
        return found


def _expose_output(source: Path, tensor: str, derived_root: Path, source_sha256: str | None) -> Path:
    folder = derived_root / (source_sha256 or sha256_of(source))
    pattern = f"{source.stem}.{tensor}.*.onnx"
    for found in sorted(folder.glob(pattern)):
        if sha256_of(found).startswith(found.name.rsplit(".", 2)[-2]):
            return found
        found.unlink(missing_ok=True)  # a corrupt copy: derive it again

    onnx = _import_onnx()
    try:
        model = onnx.load(str(source))
    except Exception as exc:  # onnx raises DecodeError and friends on malformed files
        raise ModelLoadError(f"model file {source} could not be read as ONNX: {exc}") from exc
    graph = model.graph
    if any(out.name == tensor for out in graph.output):
        return source
    if not any(tensor in node.output for node in graph.node):
        raise ModelLoadError(
            f"model file {source} has no tensor {tensor!r} to expose (graph outputs: "
            f"{[o.name for o in graph.output]}); the style dimension needs a MobileNetV2 exported like "
            "the ONNX Model Zoo's mobilenetv2-7.onnx"
        )
    known = [vi for vi in graph.value_info if vi.name == tensor]
    graph.output.append(known[0] if known else onnx.helper.make_tensor_value_info(tensor, onnx.TensorProto.FLOAT, None))
    data = model.SerializeToString()
    digest = hashlib.sha256(data).hexdigest()
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"{source.stem}.{tensor}.{digest[:16]}.onnx"
    fd, tmp = tempfile.mkstemp(dir=folder, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


@dataclasses.dataclass(frozen=True, kw_only=True)
class StyleConfig(ModelConfig):
    """Configuration of the ``style`` dimension (see :class:`ModelConfig` for the fields).

    A replacement model must take ``data`` (N or 1, 3, 224, 224) and compute the tensor
    ``mobilenetv20_features_pool0_fwd`` (a graph output, or an internal tensor that is
    exposed automatically), like the ONNX Model Zoo's mobilenetv2-7.onnx.
    """


class StyleDimension(OnnxImageEmbedding):
    """MobileNetV2 pooled-feature embeddings; score = cosine similarity."""

    name: ClassVar[str] = "style"
    config_type: ClassVar[type[StyleConfig]] = StyleConfig
    default_models: ClassVar[tuple[ModelSpec, ...]] = (MOBILENETV2_7,)
    preprocess: ClassVar[Preprocess] = STYLE_PREPROCESS
    output_name: ClassVar[str] = POOLED_TENSOR

    _model: OnnxModel | None = None
    _lock = threading.Lock()

    def open_model(self) -> OnnxModel:
        """The downloaded model with the pooled feature exposed (derived once, then cached)."""
        if self._model is None:
            with self._lock:
                if self._model is None:
                    source = self.runtime.fetch(self.spec)
                    derived = expose_output(
                        source, POOLED_TENSOR, self.runtime.cache_path / "derived", source_sha256=self.spec.sha256
                    )
                    self._model = self.runtime.model(dataclasses.replace(self.spec, path=derived))
        return self._model
