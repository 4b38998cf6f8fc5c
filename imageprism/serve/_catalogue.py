"""The service's catalogue: one :class:`~imageprism.ImageIndex` in a folder, its thumbnails,
and the paths that read and write it.

**Reads** (embedding an upload, searching, comparing) run in a pool of
``decode_workers`` threads, so at most that many images are decoded and embedded at
once; further requests wait in the pool's queue.

**Writes** (adds and deletions) go to one writer thread, in arrival order. The
writer applies every write waiting in its queue to the in-memory index, makes them
durable with one :func:`commit` call (group commit: a save serves all the writes
that arrived while the previous one ran), and only then acknowledges them. So an
acknowledged write is on disk, and a crash loses none, as far as :func:`commit` is
crash-safe. If a commit fails, the in-memory index no longer matches the disk: the
catalogue refuses every later write (``broken``) until the server is restarted.

Thumbnails (``<folder>/thumbnails/``, one JPEG per item, named by a digest of its
id) are written atomically before the commit that adds their item, and deleted after
the commit that removes it.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import hashlib
import io
import os
import queue
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

from imageprism._dedup import default_threshold
from imageprism._files import atomic_write
from imageprism._image import open_image
from imageprism._index import ImageIndex
from imageprism._prism import ImagePrism
from imageprism._results import CompareResult, SearchHit
from imageprism.dimensions._base import ImageRequest
from imageprism.errors import ConfigError, ImagePrismError, InputError, UnknownIdError

__all__ = ["Added", "Catalogue", "CommitStats", "Limits", "Upload", "commit"]

T = TypeVar("T")
THUMBNAILS = "thumbnails"
THUMBNAIL_SIDE = 160


@dataclasses.dataclass(frozen=True)
class Limits:
    """Bounds on what one request may cost.

    Attributes:
        max_upload_bytes: largest request body (all its files together); checked as it arrives.
        max_files: most images in one request.
        decode_workers: most images decoded and embedded at once.
        request_timeout: seconds before a request is answered 503 (the work it started may finish).
        max_k: most hits one search may ask for.
        max_duplicates: most near-duplicates reported for one added image.
    """

    max_upload_bytes: int = 32 * 2**20
    max_files: int = 32
    decode_workers: int = 2
    request_timeout: float = 60.0
    max_k: int = 100
    max_duplicates: int = 10

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
                raise ConfigError(f"{field.name}={value!r} is invalid; use a positive number")


@dataclasses.dataclass(frozen=True)
class Upload:
    """One uploaded image: its bytes and the name the client gave it (for error messages)."""

    data: bytes
    name: str


@dataclasses.dataclass(frozen=True)
class Added:
    """One added item: its id and the items already indexed that it nearly duplicates."""

    id: str
    duplicates: tuple[SearchHit, ...]


@dataclasses.dataclass
class CommitStats:
    """Counters of the commits so far: how many, how many writes they carried, their time."""

    commits: int = 0
    writes: int = 0
    seconds: float = 0.0
    max_seconds: float = 0.0

    def record(self, writes: int, seconds: float) -> None:
        self.commits += 1
        self.writes += writes
        self.seconds += seconds
        self.max_seconds = max(self.max_seconds, seconds)


def commit(index: ImageIndex, folder: Path, added: Sequence[str], removed: Sequence[str]) -> None:
    """Make the index's current state durable in ``folder``: the one place writes reach disk.

    ``added`` and ``removed`` name what changed since the previous commit (for logs and
    tests); :meth:`ImageIndex.save` to the index's own folder writes only that change as
    a new segment and switches to it with one atomic rename, so a kill at any instant
    leaves the previous commit or this one.
    """
    index.save(folder)


@contextlib.contextmanager
def _named(upload: Upload) -> Iterator[None]:
    """Errors raised inside name the upload (``upload 'cat.jpg': ...``), keeping their class."""
    try:
        yield
    except ImagePrismError as exc:
        raise type(exc)(f"upload {upload.name!r}: {exc}") from None


class Catalogue:
    """An index directory served over HTTP: open (or create) it, read it, write it durably.

    Args:
        folder: the index directory; created (with an empty index) when missing or empty.
        prism: the ``ImagePrism`` for a new index, or to open an existing one with
            (``None``: hash only when new, else rebuilt from the saved profile and weights).
        limits: request bounds (see :class:`Limits`).
        threshold: the score from which an added image reports an indexed item as a
            near-duplicate (default: the profile's threshold, else 0.9 for hash alone).
    """

    def __init__(
        self,
        folder: str | os.PathLike[str],
        prism: ImagePrism | None = None,
        *,
        limits: Limits | None = None,
        threshold: float | None = None,
    ) -> None:
        self.folder = Path(folder)
        self.limits = limits or Limits()
        new = not (self.folder.is_dir() and any(self.folder.iterdir()))
        self.index = ImageIndex(prism) if new else ImageIndex.load(self.folder, prism=prism)
        self.prism = self.index.prism
        try:
            self.threshold = default_threshold(self.prism.blend, self.prism.plugins) if threshold is None else threshold
        except ConfigError as exc:
            raise ConfigError(f"{exc}; for the service, pass --threshold") from None
        if new:
            commit(self.index, self.folder, (), ())
        self.thumbnails = self.folder / THUMBNAILS
        self.thumbnails.mkdir(exist_ok=True)
        self.broken: BaseException | None = None
        self.commits = CommitStats()
        self._readers = concurrent.futures.ThreadPoolExecutor(self.limits.decode_workers, thread_name_prefix="imageprism-read")
        self._writes: queue.Queue[tuple[Callable[[], tuple[Any, list[str], list[str]]], concurrent.futures.Future[Any]] | None] = queue.Queue()
        self._writer = threading.Thread(target=self._write_loop, name="imageprism-writer", daemon=True)
        self._writer.start()

    def close(self) -> None:
        """Finish the queued writes and stop the threads."""
        self._writes.put(None)
        self._writer.join()
        self._readers.shutdown(wait=True, cancel_futures=True)

    # -- reads (in the bounded pool) --------------------------------------------------

    def read(self, fn: Callable[[], T]) -> concurrent.futures.Future[T]:
        """Run ``fn`` in the bounded pool of decode threads."""
        return self._readers.submit(fn)

    def embed(self, upload: Upload) -> dict[str, Any]:
        """The upload's embeddings (the prism checks ``max_pixels`` from the header before decoding)."""
        with _named(upload):
            return self.prism.embed(upload.data)

    def search(self, upload: Upload, k: int) -> list[SearchHit]:
        """The ``k`` indexed items most similar to the upload."""
        return self.index.search_embedding(self.embed(upload), k=k)

    def compare(self, a: Upload, b: Upload) -> CompareResult:
        """The two uploads scored on every dimension."""
        return self.prism.compare_embeddings(self.embed(a), self.embed(b))

    def prepare(self, upload: Upload) -> tuple[dict[str, Any], bytes]:
        """What adding an upload needs, computed before the write: embeddings and a JPEG thumbnail."""
        with _named(upload):
            embedding = self.prism.embed(upload.data)  # checks the limits before decoding
            source = open_image(upload.data, max_pixels=self.prism.max_pixels, max_bytes=self.prism.max_bytes)
            image = source.pixels(ImageRequest("RGB", THUMBNAIL_SIDE)).image.copy()
        image.thumbnail((THUMBNAIL_SIDE, THUMBNAIL_SIDE))
        out = io.BytesIO()
        image.save(out, "JPEG", quality=80)
        return embedding, out.getvalue()

    def thumbnail_path(self, item_id: str) -> Path:
        """Where an item's thumbnail is kept (named by a digest: ids may hold any character)."""
        return self.thumbnails / (hashlib.sha256(item_id.encode()).hexdigest()[:32] + ".jpg")

    def require(self, item_id: str) -> None:
        """Raise :class:`UnknownIdError` unless ``item_id`` is indexed."""
        if item_id not in self.index:
            raise UnknownIdError(f"id {item_id!r} is not in this index of {len(self.index)} items")

    # -- writes (one writer thread, group commit) ---------------------------------------

    def add(self, items: Sequence[tuple[str | None, dict[str, Any], bytes]]) -> concurrent.futures.Future[list[Added]]:
        """Queue an add of prepared items ``(id or None, embeddings, thumbnail)``; all or none.

        The future resolves once the items are committed. Each item reports the items
        already indexed (including earlier items of the same request) scoring at least
        :attr:`threshold` with it.
        """
        ids = [item_id if item_id is not None else uuid.uuid4().hex for item_id, _, _ in items]

        def apply() -> tuple[list[Added], list[str], list[str]]:
            self._check_new(ids)
            added = []
            for item_id, (_, embedding, thumbnail) in zip(ids, items):
                hits = self.index.search_embedding(embedding, k=self.limits.max_duplicates) if len(self.index) else []
                atomic_write(self.thumbnail_path(item_id), thumbnail, overwrite=True)
                self.index.add_embeddings([embedding], ids=[item_id])
                added.append(Added(item_id, tuple(h for h in hits if h.score >= self.threshold)))
            return added, ids, []

        return self._queue_write(apply)

    def remove(self, item_id: str) -> concurrent.futures.Future[None]:
        """Queue the deletion of one item; the future resolves once it is committed."""

        def apply() -> tuple[None, list[str], list[str]]:
            self.require(item_id)
            self.index.remove([item_id])
            return None, [], [item_id]

        return self._queue_write(apply)

    def _check_new(self, ids: Sequence[str]) -> None:
        for i, item_id in enumerate(ids):
            if not item_id or len(item_id) > 1024:
                raise InputError(f"id {item_id[:40]!r} is invalid; give a non-empty id of at most 1024 characters")
            if item_id in self.index or item_id in ids[:i]:
                raise InputError(f"id {item_id!r} is already in the index; give another id or delete it first")

    def _queue_write(self, apply: Callable[[], tuple[T, list[str], list[str]]]) -> concurrent.futures.Future[T]:
        future: concurrent.futures.Future[T] = concurrent.futures.Future()
        self._writes.put((apply, future))
        return future

    def _write_loop(self) -> None:
        stopping = False
        while not stopping:
            batch = [self._writes.get()]
            while True:  # every write already waiting joins this commit
                try:
                    batch.append(self._writes.get_nowait())
                except queue.Empty:
                    break
            stopping = None in batch
            self._apply_and_commit([job for job in batch if job is not None])

    def _apply_and_commit(self, jobs: list[tuple[Callable[[], tuple[Any, list[str], list[str]]], concurrent.futures.Future[Any]]]) -> None:
        done: list[tuple[concurrent.futures.Future[Any], Any]] = []
        added: list[str] = []
        removed: list[str] = []
        for apply, future in jobs:
            if not future.set_running_or_notify_cancel():
                continue  # the request gave up (timeout) before its turn: never applied
            if self.broken is not None:
                future.set_exception(self.broken)
                continue
            try:
                result, new, gone = apply()
            except BaseException as exc:  # noqa: BLE001  (handed to the waiting request)
                future.set_exception(exc)
                continue
            done.append((future, result))
            added += new
            removed += gone
        if not done:
            return
        started = time.perf_counter()
        try:
            commit(self.index, self.folder, added, removed)
        except BaseException as exc:  # noqa: BLE001
            self.broken = exc
            for future, _ in done:
                future.set_exception(exc)
            return
        self.commits.record(len(done), time.perf_counter() - started)
        for item_id in removed:
            if item_id not in self.index:  # not added again in this same commit
                self.thumbnail_path(item_id).unlink(missing_ok=True)
        for future, result in done:
            future.set_result(result)
