"""Batched inference, and overlapping preparation of the next batch with the current one.

:func:`run_batched` runs a model over N preprocessed inputs: in batches when
the model's batch axis is dynamic, at the model's fixed batch size (usually one
at a time) otherwise, and concatenates the outputs. :func:`prefetch` runs a
producer (decode + preprocess) one step ahead in a background thread while the
caller runs inference on the current item.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import AbstractContextManager
from typing import Any, TypeVar, cast

import numpy as np

from imageprism._runtime.session import OnnxModel
from imageprism.errors import ConfigError, ModelLoadError

__all__ = ["DEFAULT_BATCH_SIZE", "PROGRESS_MIN_ITEMS", "prefetch", "progress_bar", "run_batched"]

T = TypeVar("T")

#: images per session call when the batch axis is dynamic
DEFAULT_BATCH_SIZE = 16
#: ``progress=None`` shows a bar from this many inputs on (and only on a terminal)
PROGRESS_MIN_ITEMS = 64


def run_batched(
    model: OnnxModel,
    inputs: np.ndarray | Sequence[np.ndarray],
    *,
    output_names: Sequence[str],
    input_name: str | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    progress: bool | None = None,
    description: str = "embedding",
) -> list[np.ndarray]:
    """Run ``model`` over ``inputs`` and return one array per output name, concatenated on axis 0.

    ``inputs`` is an array ``(N, ...)`` or a sequence of per-item arrays of one
    shape (each without the batch axis). They feed ``input_name`` (default: the
    model's first input). With a dynamic batch axis, batches hold up to
    ``batch_size`` items; with a fixed batch size ``k`` the model gets exactly
    ``k`` items per call (the last call padded with zeros, padding dropped from
    the outputs). ``progress``: ``True`` shows a tqdm bar, ``False`` never,
    ``None`` for runs of at least :data:`PROGRESS_MIN_ITEMS` items on a terminal.
    """
    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size!r}")
    name = input_name or model.input_names[0]
    if name not in model.input_shapes:
        model.require(inputs=[name])
    data = inputs if isinstance(inputs, np.ndarray) else _stack(inputs)
    total = int(data.shape[0])
    fixed = model.fixed_batch(name)
    step = fixed if fixed is not None else batch_size
    if total == 0:
        return [np.empty((0,)) for _ in output_names]
    chunks: list[list[np.ndarray]] = [[] for _ in output_names]
    with progress_bar(total, progress=progress, description=description) as bar:
        for start in range(0, total, step):
            batch = data[start : start + step]
            real = batch.shape[0]
            if fixed is not None and real < fixed:
                pad = np.zeros((fixed - real, *batch.shape[1:]), dtype=batch.dtype)
                batch = np.concatenate([batch, pad])
            outputs = model.run({name: batch}, output_names)
            for acc, out in zip(chunks, outputs):
                if out.shape[:1] != (batch.shape[0],):
                    raise ModelLoadError(
                        f"model {model.path.name} returned an output of shape {out.shape} for a batch of "
                        f"{batch.shape[0]}; expected the batch on the first axis"
                    )
                acc.append(out[:real])
            bar.update(real)
    return [np.concatenate(acc) for acc in chunks]


def _stack(items: Sequence[np.ndarray]) -> np.ndarray:
    if len(items) == 0:
        return np.empty((0,), dtype=np.float32)
    shapes = {item.shape for item in items}
    if len(shapes) > 1:
        raise ConfigError(f"run_batched needs inputs of one shape, got {sorted(shapes)}")
    return np.stack(items)


class _NoBar:
    def update(self, n: int) -> None:
        pass

    def __enter__(self) -> _NoBar:
        return self

    def __exit__(self, *exc: object) -> None:
        pass


def progress_bar(total: int, *, progress: bool | None = None, description: str = "embedding") -> AbstractContextManager[Any]:
    """A context manager with ``update(n)``: a tqdm bar on stderr, or nothing.

    ``progress=True`` always shows it, ``False`` never, ``None`` (default) only for
    runs of at least :data:`PROGRESS_MIN_ITEMS` items and only on a terminal.
    """
    if progress is False or (progress is None and total < PROGRESS_MIN_ITEMS):
        return _NoBar()
    from tqdm.auto import tqdm

    # disable=None: tqdm hides the bar when stderr is not a terminal
    return tqdm(total=total, desc=description, unit="img", disable=None if progress is None else False)


_DONE = object()


def prefetch(items: Iterable[T], *, depth: int = 1) -> Iterator[T]:
    """Iterate ``items`` while a background thread produces up to ``depth`` items ahead.

    Use it to decode and preprocess batch k+1 while batch k runs through the
    model (onnxruntime and PIL release the GIL)::

        for batch in prefetch(preprocess(chunk) for chunk in chunks):
            results.extend(run(batch))

    An exception raised by the producer is re-raised in the consumer at the
    point it occurred. Stopping early (``break``) stops the producer after its
    current item.
    """
    if depth < 1:
        raise ConfigError(f"prefetch depth must be >= 1, got {depth!r}")
    slots: queue.Queue[object] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def produce() -> None:
        try:
            for item in items:
                if stop.is_set():
                    return
                _put(item)
            _put(_DONE)
        except BaseException as exc:  # handed to the consumer, raised there
            _put(_Raised(exc))

    def _put(obj: object) -> None:
        while not stop.is_set():
            try:
                slots.put(obj, timeout=0.1)
                return
            except queue.Full:
                continue

    worker = threading.Thread(target=produce, name="imageprism-prefetch", daemon=True)
    worker.start()
    try:
        while True:
            obj = slots.get()
            if obj is _DONE:
                return
            if isinstance(obj, _Raised):
                raise obj.exc
            yield cast(T, obj)
    finally:
        stop.set()
        worker.join()


class _Raised:
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc
