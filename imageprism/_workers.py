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

A worker that dies (a crash in a decoder or a model, or the system ending it for lack of
memory) breaks the pool: the chunk it held is run again in a process of its own, split in
halves while a process running it dies, so that an input that kills a process alone is
reported as a :class:`~imageprism.errors.WorkerCrashError` failure in its place; a fresh pool
takes the other chunks. Nothing else is lost, and nothing is computed twice that finished.
"""

from __future__ import annotations

import gc
import multiprocessing
import os
import signal
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from multiprocessing.connection import Connection
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

from imageprism._image import describe_input
from imageprism._results import EmbeddedImage, Failure
from imageprism._types import EmbeddingDict as Embeddings
from imageprism.errors import ConfigError, WorkerCrashError

if TYPE_CHECKING:
    from multiprocessing.context import ForkContext, SpawnContext  # ForkContext: not on Windows

    _Context = ForkContext | SpawnContext

__all__ = [
    "TASK_SIZE", "ChunkEmbedder", "ChunkResult", "Embedded", "Outcome", "available_cores", "check_workers", "chunk_result",
    "parallel_chunks",
]


class Embedded(NamedTuple):
    """One input embedded: its embeddings, ``{dimension: pixel key}`` and ``(width, height)``."""

    embeddings: Embeddings
    pixel_keys: dict[str, str]
    size: tuple[int, int]


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
    bounded however long ``items`` is. A worker that dies costs only the inputs that
    kill a process alone (see the module's docstring).
    """
    context: _Context = multiprocessing.get_context("fork") if _START_METHOD == "fork" else multiprocessing.get_context("spawn")
    window = 2 * workers
    pending: deque[tuple[int, Sequence[Any], Future[ChunkResult] | ChunkResult]] = deque()

    def new_pool() -> ProcessPoolExecutor:
        return ProcessPoolExecutor(workers, mp_context=context, initializer=_start_worker, initargs=(build, os.getpid()))

    # Forked workers inherit every object of this process, garbage included. Frozen while they
    # are forked, none is ever collected by a worker's GC, so no inherited destructor runs there:
    # an onnxruntime session's, run in a worker, waits forever on its thread pool's condition
    # variable (its threads are not copied by fork) and the batch hangs.
    gc.freeze()
    pool = new_pool()
    try:
        for start in range(0, len(items), TASK_SIZE):
            chunk = items[start : start + TASK_SIZE]
            travelling = all(travels(item) for item in chunk)
            pending.append((start, chunk, pool.submit(_embed_task, start, chunk) if travelling else local(chunk, start)))
            while len(pending) > window or (pending and not isinstance(pending[0][2], Future)):
                result, pool = _result(pending, pool, new_pool, build, context)
                yield result
        while pending:
            result, pool = _result(pending, pool, new_pool, build, context)
            yield result
    finally:
        pool.shutdown(cancel_futures=True)
        gc.unfreeze()


def _result(
    pending: deque[tuple[int, Sequence[Any], Future[ChunkResult] | ChunkResult]], pool: ProcessPoolExecutor,
    new_pool: Callable[[], ProcessPoolExecutor], build: Callable[[], ChunkEmbedder], context: _Context,
) -> tuple[ChunkResult, ProcessPoolExecutor]:
    """The first pending chunk's outcomes, and the pool to go on with: a new one if a worker died,
    the chunks in flight on the broken one submitted to it again (the first run alone: :func:`_isolated`)."""
    start, chunk, entry = pending.popleft()
    if not isinstance(entry, Future):
        return entry, pool
    try:
        return entry.result(), pool
    except BrokenProcessPool:
        pool.shutdown(cancel_futures=True)
        pool = new_pool()
        for i, (other_start, other_chunk, other) in enumerate(pending):
            if isinstance(other, Future) and not _finished(other):  # a chunk done before the break is kept
                pending[i] = (other_start, other_chunk, pool.submit(_embed_task, other_start, other_chunk))
        return _isolated(build, chunk, start, context), pool


def _finished(future: Future[ChunkResult]) -> bool:
    return future.done() and not future.cancelled() and future.exception() is None


def _isolated(build: Callable[[], ChunkEmbedder], items: Sequence[Any], start: int, context: _Context) -> ChunkResult:
    """``items`` embedded in a process of their own; if it dies, each half likewise, down to the
    input that kills a process alone, which fails with :class:`WorkerCrashError`."""
    reader, writer = context.Pipe(duplex=False)
    process = context.Process(target=_run_alone, args=(build, items, start, writer), daemon=True)
    process.start()
    writer.close()
    try:
        outcome = reader.recv()
    except EOFError:  # it died before answering
        outcome = None
    finally:
        reader.close()
        process.join()
    if outcome is not None:
        ok, value = outcome
        if not ok:
            raise value  # an exception of the embedder (not a crash): as the pool would raise it
        return value
    if len(items) > 1:
        half = len(items) // 2
        return _isolated(build, items[:half], start, context) + _isolated(build, items[half:], start + half, context)
    label = describe_input(items[0])
    code = process.exitcode or 0
    how = f"killed by {signal.Signals(-code).name}" if code < 0 and -code in signal.valid_signals() else f"exit status {code}"
    error = WorkerCrashError(
        f"{label} stopped the process embedding it ({how}), also when run alone: a crash in an image decoder or "
        "a model, or the system ending the process (for lack of memory, say); it is left out, the other inputs "
        "went on. If the file is trusted, check it with another tool, or re-encode it"
    )
    return [(start, Failure(start, label, error))]


def _run_alone(build: Callable[[], ChunkEmbedder], items: Sequence[Any], start: int, out: Connection) -> None:
    try:
        out.send((True, build()._embed_chunk(items, start)))
    except Exception as exc:
        out.send((False, exc))
    finally:
        out.close()
