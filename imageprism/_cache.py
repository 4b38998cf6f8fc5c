"""The embedding cache: embeddings keyed by pixel content and dimension configuration.

A key is ``(pixel_key, cache_token)``: the BLAKE2b digest of the pixels a dimension
consumed, and the dimension's :attr:`~imageprism.dimensions.DimensionPlugin.cache_token`
(its name, configuration and model identity). Comparing one image with many
others therefore embeds it once, and two configurations never share an entry.

:class:`EmbeddingCache` lives in memory; :class:`PersistentCache` adds an SQLite
file (standard library ``sqlite3``, WAL mode) behind it, so re-running a job over
the same images skips the model work::

    prism = ImagePrism(cache=PersistentCache())        # in the user cache folder
    prism = ImagePrism(cache=PersistentCache("job.sqlite3"))

Arrays are stored as dtype, shape and raw bytes (never pickled); ``None`` results
("no face") are stored too.
"""

from __future__ import annotations

import dataclasses
import os
import sqlite3
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Optional

import numpy as np

from imageprism.errors import ConfigError, ImagePrismError

__all__ = ["CacheKey", "CacheStats", "EmbeddingCache", "PersistentCache"]

CacheKey = tuple[str, str]
Embedding = Optional[np.ndarray]


@dataclasses.dataclass(frozen=True)
class CacheStats:
    """Counters of an :class:`EmbeddingCache`."""

    hits: int
    misses: int
    entries: int
    bytes: int
    #: hits answered by the disk of a :class:`PersistentCache` (included in ``hits``)
    disk_hits: int = 0

    @property
    def hit_rate(self) -> float:
        total = self.hits + self.misses
        return self.hits / total if total else 0.0


class EmbeddingCache:
    """A bounded, thread-safe, in-memory LRU cache of embeddings.

    ``max_entries`` and ``max_bytes`` bound it (``None``: unbounded on that axis);
    the least recently used entries are evicted first. ``None`` embeddings (e.g.
    "no face found") are cached too.
    """

    def __init__(self, max_entries: int | None = 100_000, max_bytes: int | None = 256 * 2**20) -> None:
        for name, value in (("max_entries", max_entries), ("max_bytes", max_bytes)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
                raise ConfigError(f"{type(self).__name__}({name}={value!r}) is invalid; use a non-negative integer or None (unbounded)")
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._data: OrderedDict[CacheKey, Embedding] = OrderedDict()
        self._bytes = 0
        self._hits = 0
        self._misses = 0
        self._lock = threading.Lock()

    def lookup(self, key: CacheKey) -> tuple[bool, Embedding]:
        """``(True, embedding)`` on a hit, ``(False, None)`` on a miss."""
        with self._lock:
            if key in self._data:
                self._data.move_to_end(key)
                self._hits += 1
                return True, self._data[key]
        found, embedding = self._lookup_backing(key)
        with self._lock:
            if found:
                self._hits += 1
            else:
                self._misses += 1
        return found, embedding

    def _lookup_backing(self, key: CacheKey) -> tuple[bool, Embedding]:
        """Where a lookup that missed in memory looks next: nowhere, for the in-memory cache."""
        return False, None

    def put(self, key: CacheKey, embedding: Embedding) -> Embedding:
        """Store a read-only copy of an embedding, evicting old entries past the bounds; return the copy."""
        if embedding is not None:
            embedding = np.array(embedding, copy=True)
            embedding.setflags(write=False)
        size = 0 if embedding is None else embedding.nbytes
        with self._lock:
            old = self._data.pop(key, None)
            if old is not None:
                self._bytes -= old.nbytes
            self._data[key] = embedding
            self._bytes += size
            while self._data and (
                (self.max_entries is not None and len(self._data) > self.max_entries)
                or (self.max_bytes is not None and self._bytes > self.max_bytes)
            ):
                _, evicted = self._data.popitem(last=False)
                if evicted is not None:
                    self._bytes -= evicted.nbytes
        return embedding

    def clear(self) -> None:
        """Drop every entry and reset the counters."""
        with self._lock:
            self._data.clear()
            self._bytes = self._hits = self._misses = 0

    @property
    def stats(self) -> CacheStats:
        with self._lock:
            return CacheStats(self._hits, self._misses, len(self._data), self._bytes)

    def __len__(self) -> int:
        return len(self._data)


#: bumped when the table layout changes; older files are rebuilt
_SCHEMA_VERSION = 1
_NUMERIC_KINDS = frozenset("biufc")


def default_cache_path() -> Path:
    """``<user cache dir>/imageprism/embeddings.sqlite3`` (platformdirs)."""
    import platformdirs

    return Path(platformdirs.user_cache_dir("imageprism")) / "embeddings.sqlite3"


class PersistentCache(EmbeddingCache):
    """An :class:`EmbeddingCache` in memory, backed by an SQLite file that outlives the process.

    A lookup that misses in memory reads the file and keeps the result in memory; a
    put writes both. ``path`` defaults to :func:`default_cache_path`; several threads
    and processes may share a file (WAL mode, one connection per thread).
    ``max_entries``/``max_bytes`` bound the memory part; the file grows until
    :meth:`clear` (or deleting it). :attr:`stats` counts ``disk_hits`` among the hits.

    >>> import tempfile, numpy as np
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     with PersistentCache(f"{folder}/cache.sqlite3") as cache:
    ...         _ = cache.put(("pixels", "hash:v1"), np.arange(3, dtype=np.uint8))
    ...     with PersistentCache(f"{folder}/cache.sqlite3") as again:
    ...         again.lookup(("pixels", "hash:v1"))
    (True, array([0, 1, 2], dtype=uint8))
    """

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        *,
        max_entries: int | None = 100_000,
        max_bytes: int | None = 256 * 2**20,
    ) -> None:
        super().__init__(max_entries=max_entries, max_bytes=max_bytes)
        self.path = Path(path) if path is not None else default_cache_path()
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._disk_hits = 0
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"cannot create the cache folder {str(self.path.parent)!r}: {exc}; pass another path") from None
        self._connect()  # fail early on an unusable file

    def __repr__(self) -> str:
        return f"PersistentCache({str(self.path)!r}, max_entries={self.max_entries}, max_bytes={self.max_bytes})"

    def _connect(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is not None and getattr(self._local, "pid", None) == os.getpid():
            return conn
        try:
            conn = sqlite3.connect(self.path, timeout=60.0, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version != _SCHEMA_VERSION:
                conn.execute("DROP TABLE IF EXISTS embeddings")
                conn.execute(
                    "CREATE TABLE embeddings (pixel_key TEXT NOT NULL, token TEXT NOT NULL, dtype TEXT, "
                    "shape TEXT, data BLOB, PRIMARY KEY (pixel_key, token)) WITHOUT ROWID"
                )
                conn.execute(f"PRAGMA user_version = {_SCHEMA_VERSION}")
        except sqlite3.DatabaseError as exc:
            raise ImagePrismError(
                f"the embedding cache {str(self.path)!r} is not a usable SQLite file ({exc}); "
                "delete it (it only holds cached embeddings) or pass another path"
            ) from None
        self._local.conn, self._local.pid = conn, os.getpid()
        with self._lock:
            self._connections.append(conn)
        return conn

    def _lookup_backing(self, key: CacheKey) -> tuple[bool, Embedding]:
        """The SQLite file: a hit there is copied into memory and counted as a disk hit."""
        row = self._connect().execute(
            "SELECT dtype, shape, data FROM embeddings WHERE pixel_key = ? AND token = ?", key
        ).fetchone()
        embedding = _decode(row) if row is not None else _CORRUPT
        if embedding is _CORRUPT:
            return False, None
        embedding = super().put(key, embedding)  # type: ignore[arg-type]
        with self._lock:
            self._disk_hits += 1
        return True, embedding

    def put(self, key: CacheKey, embedding: Embedding) -> Embedding:
        stored = super().put(key, embedding)
        if stored is None:
            values: tuple[object, ...] = (*key, None, None, None)
        else:
            data = np.ascontiguousarray(stored)
            values = (*key, data.dtype.str, ",".join(map(str, data.shape)), data.tobytes())
        self._connect().execute(
            "INSERT OR REPLACE INTO embeddings (pixel_key, token, dtype, shape, data) VALUES (?, ?, ?, ?, ?)", values
        )
        return stored

    def clear(self) -> None:
        """Drop every entry, in memory and on disk, and reset the counters."""
        super().clear()
        self._connect().execute("DELETE FROM embeddings")
        with self._lock:
            self._disk_hits = 0

    @property
    def stats(self) -> CacheStats:
        with self._lock:
            return CacheStats(self._hits, self._misses, len(self._data), self._bytes, self._disk_hits)

    def disk_entries(self) -> int:
        """The number of entries in the file."""
        return int(self._connect().execute("SELECT COUNT(*) FROM embeddings").fetchone()[0])

    def close(self) -> None:
        """Close the file's connections (the cache reopens them if used again)."""
        with self._lock:
            connections, self._connections = self._connections, []
        for conn in connections:
            conn.close()
        self._local = threading.local()

    def __enter__(self) -> PersistentCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


_CORRUPT = object()


def _decode(row: tuple[str | None, str | None, bytes | None]) -> Embedding | object:
    """An array from (dtype, shape, bytes); ``None`` for a stored ``None``; ``_CORRUPT`` if unreadable."""
    dtype_text, shape_text, data = row
    if dtype_text is None:
        return None
    try:
        dtype = np.dtype(dtype_text)
        shape = tuple(int(x) for x in shape_text.split(",")) if shape_text else ()
        if dtype.kind not in _NUMERIC_KINDS or data is None:
            return _CORRUPT
        return np.frombuffer(data, dtype=dtype).reshape(shape).copy()
    except (TypeError, ValueError):
        return _CORRUPT
