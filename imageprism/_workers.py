"""Embedding many inputs on a pool of worker processes, results in input order.

Processes, not threads: the default hash is a few hundred numpy calls per batch of
images plus JPEG header parsing in Python, and two threads hand the GIL back and forth
between them: on the development machine, threads cost 2.4x the CPU time of processes
for the same chunks (``benchmarks/scale.py`` and ``benchmarks/README.md``), while the
pool of processes cost no more CPU than one worker.

Each worker builds its own :class:`~imageprism.ImagePrism` once from a picklable
recipe (dimension configs, runtime settings, size limits: models and caches never
travel), decodes and embeds whole chunks of inputs, and sends back the embeddings with
the pixel keys they were computed from and the image sizes. The calling process owns the cache: it files every result under
its pixel key, so a later run (or the file-identity layer) finds it.

Only inputs that pickle cheaply travel (paths and bytes); arrays, PIL images and file
objects are embedded in the calling process, in their place in the order.
"""

from __future__ import annotations

import gc
import multiprocessing
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from typing import Any, NamedTuple, Protocol

from imageprism._results import EmbeddedImage, Failure
from imageprism._types import EmbeddingDict as Embeddings
from imageprism.errors import ConfigError

__all__ = [
    "TASK_SIZE", "ChunkEmbedder", "ChunkResult", "Embedded", "Outcome", "available_cores", "check_workers", "chunk_result",
    "parallel_chunks",
]


class Embedded(NamedTuple):
    """One input embedded: its embeddings, ``{dimension: pixel key}`` and ``(width, height)``.

    ``size`` is ``None`` for a file answered from the file-identity records of a
    persistent cache (see :mod:`imageprism._resume`), which keep no image size.
    """

    embeddings: Embeddings
    pixel_keys: dict[str, str]
    size: tuple[int, int] | None = None


#: one input's outcome: embedded, or why it failed
Outcome = Embedded | Failure
#: ``(input index, outcome)`` for each input of a chunk, in order
ChunkResult = list[tuple[int, Outcome]]


def chunk_result(entries: Sequence[EmbeddedImage | Failure]) -> ChunkResult:
    """The outcomes of :meth:`ImagePrism.embed_chunk`'s entries (embeddings, pixel keys and size, or the failure)."""
    return [(e.index, e if isinstance(e, Failure) else Embedded(dict(e.embeddings), dict(e.pixel_keys), (e.width, e.height)))
            for e in entries]


#: forked workers start in milliseconds and need no ``if __name__ == "__main__"`` guard in the caller's
#: script (spawned ones re-import it); the parallel path starts no thread of its own before forking
_START_METHOD = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
#: inputs per task sent to a worker: large enough that the pickling round trip is noise
TASK_SIZE = 64


def available_cores() -> int:
    """The CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def check_workers(workers: int | None) -> int:
    """``workers`` validated; ``None`` means every available core."""
    if workers is None:
        return available_cores()
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ConfigError(f"workers={workers!r} is invalid; use a positive integer, or None for every core")
    return workers


def travels(item: object) -> bool:
    """Whether an input is sent to a worker process (a path or bytes: cheap to pickle)."""
    return isinstance(item, (str, os.PathLike, bytes, bytearray))


class ChunkEmbedder(Protocol):
    """What a worker process runs: an ``ImagePrism`` (its ``_embed_chunk``)."""

    def _embed_chunk(self, items: Sequence[Any], start: int) -> ChunkResult: ...


_WORKER: ChunkEmbedder | None = None


def _start_worker(build: Callable[[], ChunkEmbedder], parent: int) -> None:
    global _WORKER
    _WORKER = build()
    # a worker holds both ends of its task pipe, so it never sees the end of input if the parent
    # is killed (SIGKILL): watch the parent instead and leave with it
    threading.Thread(target=_exit_with, args=(parent,), name="imageprism-orphan-watch", daemon=True).start()


def _exit_with(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(0.5)
    os._exit(1)


def _embed_task(start: int, items: Sequence[Any]) -> ChunkResult:
    assert _WORKER is not None, "worker started without its embedder"
    return _WORKER._embed_chunk(items, start)


def parallel_chunks(
    build: Callable[[], ChunkEmbedder], items: Sequence[Any], workers: int,
    local: Callable[[Sequence[Any], int], ChunkResult],
) -> Iterator[ChunkResult]:
    """Chunks of outcomes in input order, computed by ``workers`` processes.

    ``build`` (picklable) makes each worker's embedder once, when the worker starts.
    Inputs that do not travel (see :func:`travels`) go through ``local(items, start)``
    in this process. At most ``2 * workers`` tasks are in flight, so memory stays
    bounded however long ``items`` is.
    """
    context = multiprocessing.get_context(_START_METHOD)
    window = 2 * workers
    pending: deque[Future[ChunkResult] | ChunkResult] = deque()
    # Forked workers inherit every object of this process, garbage included. Frozen while they
    # are forked, none is ever collected by a worker's GC, so no inherited destructor runs there:
    # an onnxruntime session's, run in a worker, waits forever on its thread pool's condition
    # variable (its threads are not copied by fork) and the batch hangs.
    gc.freeze()
    try:
        with ProcessPoolExecutor(workers, mp_context=context, initializer=_start_worker,
                                 initargs=(build, os.getpid())) as pool:
            for start in range(0, len(items), TASK_SIZE):
                chunk = items[start : start + TASK_SIZE]
                if all(travels(item) for item in chunk):
                    pending.append(pool.submit(_embed_task, start, chunk))
                else:
                    pending.append(local(chunk, start))
                while len(pending) > window or (pending and not isinstance(pending[0], Future)):
                    yield _result(pending.popleft())
            while pending:
                yield _result(pending.popleft())
    finally:
        gc.unfreeze()


def _result(entry: Future[ChunkResult] | ChunkResult) -> ChunkResult:
    return entry.result() if isinstance(entry, Future) else entry
