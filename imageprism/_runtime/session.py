"""ONNX Runtime sessions: opened in one place, lazily, shared, safe across threads.

:func:`open_model` returns one :class:`OnnxModel` per (file, providers, threads)
for as long as anything holds it: two dimensions (or two ``ImagePrism``
instances) loading the same file share one ``InferenceSession``.
``InferenceSession.run`` is thread-safe, so one model serves several threads.
"""

from __future__ import annotations

import threading
import warnings
import weakref
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from imageprism._runtime.spec import ModelSpec
from imageprism.errors import ConfigError, ModelLoadError

if TYPE_CHECKING:
    import onnxruntime

__all__ = ["OnnxModel", "open_model", "resolve_providers"]

Shape = tuple[int | str | None, ...]

# onnxruntime log severities: 0 verbose, 1 info, 2 warning, 3 error, 4 fatal
_ORT_LOG_ERROR = 3
_DEFAULT_PROVIDERS = ("CPUExecutionProvider",)

_models: weakref.WeakValueDictionary[tuple[Any, ...], OnnxModel] = weakref.WeakValueDictionary()
_models_lock = threading.Lock()
_key_locks: dict[tuple[Any, ...], threading.Lock] = {}


class OnnxModel:
    """One opened ONNX model: its interface and a thread-safe :meth:`run`.

    Attributes: ``path`` (the file), ``spec`` (what was asked for),
    ``providers`` (the execution providers in use), ``input_names`` /
    ``output_names`` (in graph order), ``input_shapes`` / ``output_shapes``
    (name -> shape; a symbolic or unknown dimension is a ``str`` or ``None``).
    """

    def __init__(self, session: onnxruntime.InferenceSession, path: Path, spec: ModelSpec) -> None:
        self.session = session
        self.path = path
        self.spec = spec
        self.providers: tuple[str, ...] = tuple(session.get_providers())
        self.input_shapes: dict[str, Shape] = {i.name: tuple(i.shape) for i in session.get_inputs()}
        self.output_shapes: dict[str, Shape] = {o.name: tuple(o.shape) for o in session.get_outputs()}
        self.input_names: tuple[str, ...] = tuple(self.input_shapes)
        self.output_names: tuple[str, ...] = tuple(self.output_shapes)

    def __repr__(self) -> str:
        return f"OnnxModel({self.path.name!r}, inputs={self.input_shapes}, outputs={self.output_shapes})"

    def fixed_batch(self, input_name: str | None = None) -> int | None:
        """The fixed batch size of an input (default: the first), or ``None`` when dynamic."""
        shape = self.input_shapes[input_name or self.input_names[0]]
        if not shape:
            return None
        first = shape[0]
        return first if isinstance(first, int) and first > 0 else None

    @property
    def batch_is_dynamic(self) -> bool:
        """True when the first input accepts any batch size (its first axis is symbolic)."""
        return self.fixed_batch() is None

    def require(self, inputs: Sequence[str] = (), outputs: Sequence[str] = ()) -> None:
        """Check that the named tensors exist; ``ModelLoadError`` naming both sides otherwise.

        Outputs may name graph outputs only (an internal tensor must first be
        added to the graph outputs).
        """
        missing_in = [n for n in inputs if n not in self.input_shapes]
        missing_out = [n for n in outputs if n not in self.output_shapes]
        if not (missing_in or missing_out):
            return
        parts = []
        if missing_in:
            parts.append(f"inputs {missing_in} missing (the model has {list(self.input_names)})")
        if missing_out:
            parts.append(f"outputs {missing_out} missing (the model has {list(self.output_names)})")
        raise ModelLoadError(
            f"model {self.path} ({self.spec.location}) does not have the tensors this dimension needs: "
            f"{'; '.join(parts)}. Use a model exported with these tensor names, or the dimension's default model"
        )

    def run(self, feeds: Mapping[str, np.ndarray], output_names: Sequence[str] | None = None) -> list[np.ndarray]:
        """Run the session (thread-safe). ``output_names=None`` returns every output, in graph order."""
        out: list[np.ndarray] = self.session.run(None if output_names is None else list(output_names), dict(feeds))
        return out


def resolve_providers(requested: Sequence[str] | None) -> tuple[str, ...]:
    """Requested execution providers that this onnxruntime build has (CPU by default).

    An unavailable provider is dropped with a ``RuntimeWarning``; when none
    remains, the CPU provider is used. A provider name that is not a string is a
    ``ConfigError``.
    """
    import onnxruntime

    if requested is None:
        return _DEFAULT_PROVIDERS
    if isinstance(requested, str) or not all(isinstance(p, str) for p in requested):
        raise ConfigError(
            f"providers must be a list of onnxruntime provider names such as ['CPUExecutionProvider'], "
            f"got {requested!r}"
        )
    available = onnxruntime.get_available_providers()
    usable = tuple(p for p in requested if p in available)
    dropped = [p for p in requested if p not in available]
    if dropped:
        fallback = list(usable or _DEFAULT_PROVIDERS)
        warnings.warn(
            f"onnxruntime execution provider(s) {dropped} not available in this build "
            f"(available: {available}); using {fallback}",
            RuntimeWarning,
            stacklevel=3,
        )
    return usable or _DEFAULT_PROVIDERS


def open_model(
    path: Path, spec: ModelSpec, *, providers: tuple[str, ...], threads: int | None, redownload: str | None = None
) -> OnnxModel:
    """The shared :class:`OnnxModel` for ``path`` with these settings; opens it on first call.

    Checks ``spec.inputs``/``spec.outputs`` against the session. A file that is
    not a loadable ONNX model raises ``ModelLoadError`` naming it and the fix
    (``redownload``: the command that replaces a cached Hub file).
    """
    try:
        st = path.stat()
    except OSError as exc:
        raise ModelLoadError(f"model file {path} cannot be read: {exc}") from exc
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns, providers, threads)
    with _models_lock:
        model = _models.get(key)
        if model is not None:
            model.require(spec.inputs, spec.outputs)
            return model
        key_lock = _key_locks.setdefault(key, threading.Lock())
    with key_lock:  # one thread opens a given file; the others wait and reuse it
        try:
            with _models_lock:
                model = _models.get(key)
            if model is None:
                model = OnnxModel(_create_session(path, spec, providers, threads, redownload), path, spec)
                with _models_lock:
                    _models[key] = model
        finally:
            with _models_lock:
                _key_locks.pop(key, None)
    model.require(spec.inputs, spec.outputs)
    return model


def _create_session(
    path: Path, spec: ModelSpec, providers: tuple[str, ...], threads: int | None, redownload: str | None = None
) -> onnxruntime.InferenceSession:
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.log_severity_level = _ORT_LOG_ERROR  # e.g. UltraFace warns once per unused initializer
    if threads is not None:
        options.intra_op_num_threads = threads
    try:
        return onnxruntime.InferenceSession(str(path), sess_options=options, providers=list(providers))
    except Exception as exc:  # onnxruntime raises its own pybind classes (InvalidProtobuf, Fail, ...)
        repo_dir = next((p for p in path.parents if p.name.startswith("models--")), None)
        if spec.path is not None:
            fix = "check that the path points at a valid .onnx file"
        elif redownload is not None and repo_dir is not None:
            # the snapshot entry is a link to a blob: deleting the link alone, then downloading
            # without --force, links the same damaged blob again
            fix = (
                f"download it again, replacing the cached copy: `{redownload}` (to delete it by hand instead, "
                f"remove the whole folder {repo_dir})"
            )
        else:
            fix = (
                "delete it (it is in the imageprism model cache, see `imageprism models path`) and download it "
                "again with `imageprism models download`"
            )
        raise ModelLoadError(
            f"model file {path} ({spec.location}) could not be opened as an ONNX model: "
            f"{type(exc).__name__}: {str(exc).strip()[:300]}. Fix: {fix}"
        ) from exc
