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
import functools
import hashlib
import os
import sqlite3
import threading
import time
import warnings
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Optional

import numpy as np

from imageprism._cache_files import FILES_TABLE, FileIdentity, FileRecord, read_file_records, write_file_record
from imageprism._sqlite import BUSY_RETRIES, describe, is_busy, is_damaged, retry_busy, text_value
from imageprism.errors import CacheError, ConfigError

__all__ = ["CacheKey", "CacheStats", "CacheWarning", "EmbeddingCache", "PersistentCache"]

CacheKey = tuple[str, str]


class CacheWarning(UserWarning):
    """A :class:`PersistentCache` file stopped being used (e.g. a full disk); the run goes on without it."""


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
        return self.lookup_many([key])[0]

    def lookup_many(self, keys: Sequence[CacheKey]) -> list[tuple[bool, Embedding]]:
        """:meth:`lookup` of every key, in order (one round trip to a backing store for the memory misses)."""
        out: list[tuple[bool, Embedding]] = [(False, None)] * len(keys)
        missing: list[int] = []
        with self._lock:
            for i, key in enumerate(keys):
                if key in self._data:
                    self._data.move_to_end(key)
                    self._hits += 1
                    out[i] = (True, self._data[key])
                else:
                    missing.append(i)
        if missing:
            found = self._lookup_backing_many([keys[i] for i in missing])
            for i, hit in zip(missing, found):
                out[i] = hit
            with self._lock:
                hits = sum(1 for hit, _ in found if hit)
                self._hits += hits
                self._misses += len(found) - hits
        return out

    def _lookup_backing_many(self, keys: Sequence[CacheKey]) -> list[tuple[bool, Embedding]]:
        """Where lookups that missed in memory look next: nowhere, for the in-memory cache."""
        return [(False, None)] * len(keys)

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

    #: whether :meth:`file_records` can answer (the file-identity layer of :class:`PersistentCache`)
    remembers_files = False

    def file_records(self, identities: Sequence[FileIdentity], tokens: Sequence[str]) -> list[FileRecord | None]:
        """Per file, the pixel key of every token and the image size if seen before in this very version; else ``None``."""
        return [None] * len(identities)

    def put_file_record(self, identity: FileIdentity, keys: Mapping[str, str], size: tuple[int, int]) -> None:
        """Remember the pixel key of each token's embedding of this version of a file, and its image size."""

    @property
    def stats(self) -> CacheStats:
        with self._lock:
            return CacheStats(self._hits, self._misses, len(self._data), self._bytes)

    def __len__(self) -> int:
        return len(self._data)


#: ``PRAGMA application_id`` of an imageprism cache ("IPRC"): any other value is another application's file
APPLICATION_ID = 0x49505243
#: bumped when the table layout changes; an older imageprism cache is rebuilt, a newer one refused
_SCHEMA_VERSION = 4  # 3: the files table (imageprism._cache_files); 4: image sizes in it
_TABLE = (
    "CREATE TABLE embeddings (pixel_key TEXT NOT NULL, token TEXT NOT NULL, dtype TEXT, "
    "shape TEXT, data BLOB, checksum BLOB NOT NULL, PRIMARY KEY (pixel_key, token)) WITHOUT ROWID"
)
#: keys looked up per query (under SQLite's default limit of host parameters)
_QUERY_KEYS = 500
#: the layout of schema 1 (before application_id), recognised exactly and upgraded
_TABLE_V1 = (
    "CREATE TABLE embeddings (pixel_key TEXT NOT NULL, token TEXT NOT NULL, dtype TEXT, "
    "shape TEXT, data BLOB, PRIMARY KEY (pixel_key, token)) WITHOUT ROWID"
)
_NUMERIC_KINDS = frozenset("biufc")


def default_cache_path() -> Path:
    """``<user cache dir>/imageprism/embeddings.sqlite3`` (platformdirs)."""
    import platformdirs

    return Path(platformdirs.user_cache_dir("imageprism")) / "embeddings.sqlite3"


class PersistentCache(EmbeddingCache):
    """An :class:`EmbeddingCache` in memory, backed by an SQLite file that outlives the process.

    A lookup that misses in memory reads the file and keeps the result in memory; a
    put writes both. ``path`` defaults to :func:`default_cache_path`; several threads
    and processes may share a file (WAL mode, one connection per thread), and may
    create it at the same time. ``max_entries``/``max_bytes`` bound the memory part;
    the file grows until :meth:`clear` (or deleting it). :attr:`stats` counts
    ``disk_hits`` among the hits.

    The file is marked as an imageprism cache (``PRAGMA application_id`` and a schema
    version); any other SQLite file, or a file that is not SQLite, raises
    :class:`~imageprism.errors.CacheError` and is left exactly as it was. Every row
    carries a checksum of its key, metadata and bytes: a row that fails it is a miss
    (recomputed and rewritten), never an embedding. If the file stops accepting
    writes (full disk, read-only file, damage found mid-run), one
    :class:`CacheWarning` is issued and the cache carries on in
    memory only.

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
        #: why the file is no longer used (``None``: in use)
        self.disabled: str | None = None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"cannot create the cache folder {str(self.path.parent)!r}: {exc}; pass another path") from None
        if self.path.exists() and not self.path.is_file():
            raise CacheError(f"the embedding cache {str(self.path)!r} is not a regular file; pass the path of a file", str(self.path))
        if self.path.exists() and not os.access(self.path, os.W_OK):
            self._check_identity(read_only=True)
            self._disable("is read-only (no write permission)")
        else:
            for attempt in range(BUSY_RETRIES):
                try:
                    self._check_identity(read_only=False, final=attempt == BUSY_RETRIES - 1)
                    break
                except sqlite3.OperationalError:  # busy beyond the timeout's reach: try again
                    time.sleep(0.05 * 2**attempt)

    def __repr__(self) -> str:
        return f"PersistentCache({str(self.path)!r}, max_entries={self.max_entries}, max_bytes={self.max_bytes})"

    def _error(self, problem: str) -> CacheError:
        return CacheError(f"the embedding cache {str(self.path)!r} {problem}", str(self.path))

    def _check_identity(self, read_only: bool, final: bool = True) -> None:
        """Refuse a file that is not an imageprism cache; create or upgrade ours in one transaction."""
        try:
            if read_only:
                conn = sqlite3.connect(f"{self.path.resolve().as_uri()}?mode=ro", uri=True, timeout=60.0, isolation_level=None)
            else:
                conn = sqlite3.connect(self.path, timeout=60.0, isolation_level=None)
        except sqlite3.Error as exc:
            raise self._error(f"cannot be opened ({exc}); pass another path") from None
        try:
            if read_only:
                self._identify(conn)
                return
            conn.execute("BEGIN IMMEDIATE")  # one creator at a time; the others wait, then see its work
            try:
                version = self._identify(conn)
                if version != _SCHEMA_VERSION:
                    if version not in (2, 3):  # from 2 or 3 only the files table is (re)made: the embeddings stay
                        conn.execute("DROP TABLE IF EXISTS embeddings")
                        conn.execute(_TABLE)
                    conn.execute("DROP TABLE IF EXISTS files")
                    conn.execute(FILES_TABLE)
                    conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
                    conn.execute(f"PRAGMA user_version = {_SCHEMA_VERSION}")
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            conn.execute("PRAGMA journal_mode=WAL")  # only once the file is known to be ours
        except sqlite3.Error as exc:
            if is_damaged(exc):
                raise self._error(describe(exc)) from None
            if is_busy(exc) and not final:
                raise
            self._disable(describe(exc))  # e.g. a full disk: the run goes on without the file
        finally:
            conn.close()

    def _identify(self, conn: sqlite3.Connection) -> int:
        """The schema version of our file (0: empty, to create); raises for anything else."""
        app_id = conn.execute("PRAGMA application_id").fetchone()[0]
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        schema = conn.execute("SELECT type, name, sql FROM sqlite_master").fetchall()
        if app_id == APPLICATION_ID:
            if version > _SCHEMA_VERSION:
                raise self._error(
                    f"was written by a newer imageprism (cache schema {version}, this one reads {_SCHEMA_VERSION}); "
                    "upgrade imageprism or pass another path"
                )
            return version
        if app_id == 0 and version == 0 and not schema:
            return 0  # a new, empty file
        if app_id == 0 and version == 1 and schema == [("table", "embeddings", _TABLE_V1)]:
            return 1  # an imageprism cache from before application_id: upgraded
        what = f"application_id {app_id:#x}" if app_id else "no application_id"
        tables = ", ".join(sorted(name for kind, name, _ in schema if kind == "table")) or "none"
        raise self._error(
            f"is another application's SQLite database ({what}, user_version {version}, tables: {tables}), "
            "not an imageprism cache; it was left unchanged: pass the path of a new file or of an imageprism cache"
        )

    def _connect(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is not None and getattr(self._local, "pid", None) == os.getpid():
            return conn
        conn = sqlite3.connect(self.path, timeout=60.0, isolation_level=None, check_same_thread=False)
        conn.text_factory = bytes  # a tampered TEXT value must fail its checksum, not the query
        conn.execute("PRAGMA synchronous=NORMAL")
        self._local.conn, self._local.pid = conn, os.getpid()
        with self._lock:
            self._connections.append(conn)
        return conn

    def _disable(self, reason: str) -> None:
        """Stop using the file (once): warn, and carry on in memory."""
        with self._lock:
            if self.disabled is not None:
                return
            self.disabled = reason
        warnings.warn(
            f"the embedding cache {str(self.path)!r} {reason}; continuing without it: "
            "results are unaffected, but embeddings are not saved for the next run",
            CacheWarning,
            stacklevel=4,
        )

    def _query(self, sql: str, args: Sequence[object]) -> list[Any]:
        return self._connect().execute(sql, args).fetchall()

    def _lookup_backing_many(self, keys: Sequence[CacheKey]) -> list[tuple[bool, Embedding]]:
        """The SQLite file, one query per token and :data:`_QUERY_KEYS` keys: a hit is copied into memory and
        counted as a disk hit; a row whose checksum fails is a miss."""
        out: list[tuple[bool, Embedding]] = [(False, None)] * len(keys)
        if self.disabled is not None:
            return out
        wanted: dict[str, list[str]] = {}
        for pixel_key, token in keys:
            wanted.setdefault(token, []).append(pixel_key)
        rows: dict[tuple[object, str], tuple[Any, ...]] = {}
        try:
            for token, pixel_keys in wanted.items():
                for s in range(0, len(pixel_keys), _QUERY_KEYS):
                    part = pixel_keys[s : s + _QUERY_KEYS]
                    sql = (
                        "SELECT pixel_key, dtype, shape, data, checksum FROM embeddings "
                        f"WHERE token = ? AND pixel_key IN ({','.join('?' * len(part))})"
                    )
                    found = retry_busy(functools.partial(self._query, sql, (token, *part)))
                    rows.update(((text_value(row[0]), token), row[1:]) for row in found)
        except sqlite3.Error as exc:
            self._disable(describe(exc))
            return out
        for i, key in enumerate(keys):
            row = rows.get(key)
            if row is None or row[3] != _checksum(key, *row[:3]):
                continue
            embedding = _decode(*row[:3])
            if isinstance(embedding, _Corrupt):
                continue
            out[i] = (True, super().put(key, embedding))
            with self._lock:
                self._disk_hits += 1
        return out

    def put(self, key: CacheKey, embedding: Embedding) -> Embedding:
        stored = super().put(key, embedding)
        if self.disabled is not None:
            return stored
        if stored is None:
            row: tuple[str | None, str | None, bytes | None] = (None, None, None)
        else:
            data = np.ascontiguousarray(stored)
            row = (data.dtype.str, ",".join(map(str, data.shape)), data.tobytes())
        values = (*key, *row, _checksum(key, *row))
        try:
            retry_busy(lambda: self._connect().execute(
                "INSERT OR REPLACE INTO embeddings (pixel_key, token, dtype, shape, data, checksum) VALUES (?, ?, ?, ?, ?, ?)",
                values,
            ))
        except sqlite3.Error as exc:
            self._disable(describe(exc))
        return stored

    remembers_files = True

    def file_records(self, identities: Sequence[FileIdentity], tokens: Sequence[str]) -> list[FileRecord | None]:
        if self.disabled is None:
            try:
                return retry_busy(lambda: read_file_records(self._connect(), identities, tokens))
            except sqlite3.Error as exc:
                self._disable(describe(exc))
        return [None] * len(identities)

    def put_file_record(self, identity: FileIdentity, keys: Mapping[str, str], size: tuple[int, int]) -> None:
        if self.disabled is None:
            try:
                retry_busy(lambda: write_file_record(self._connect(), identity, keys, size))
            except sqlite3.Error as exc:
                self._disable(describe(exc))

    def clear(self) -> None:
        """Drop every entry, in memory and on disk, and reset the counters."""
        super().clear()
        self._execute("DELETE FROM files")
        self._execute("DELETE FROM embeddings")
        with self._lock:
            self._disk_hits = 0

    def _execute(self, sql: str) -> sqlite3.Cursor:
        try:
            return self._connect().execute(sql)
        except sqlite3.Error as exc:
            raise self._error(describe(exc)) from None

    @property
    def stats(self) -> CacheStats:
        with self._lock:
            return CacheStats(self._hits, self._misses, len(self._data), self._bytes, self._disk_hits)

    def disk_entries(self) -> int:
        """The number of entries in the file."""
        return int(self._execute("SELECT COUNT(*) FROM embeddings").fetchone()[0])

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


class _Corrupt:
    """The type of :data:`_CORRUPT`: a stored row that cannot be read back."""


_CORRUPT = _Corrupt()


def _checksum(key: CacheKey, dtype: str | bytes | None, shape: str | bytes | None, data: bytes | None) -> bytes:
    """BLAKE2b-128 over the key, the metadata and the bytes, each length-prefixed (``None`` distinct from empty)."""
    chunks: list[bytes] = []
    for part in (*key, dtype, shape, data):
        if part is None:
            chunks.append(b"\xff" * 8)
            continue
        raw = part.encode() if isinstance(part, str) else bytes(part)
        chunks += (len(raw).to_bytes(8, "little"), raw)
    return hashlib.blake2b(b"".join(chunks), digest_size=16, person=b"imageprism-c2").digest()


def _decode(dtype_raw: bytes | None, shape_raw: bytes | None, data: bytes | None) -> Embedding | _Corrupt:
    """An array from (dtype, shape, bytes); ``None`` for a stored ``None``; ``_CORRUPT`` if unreadable."""
    if dtype_raw is None:
        return None
    try:
        dtype = np.dtype(dtype_raw.decode("ascii"))
        shape = tuple(int(x) for x in shape_raw.decode("ascii").split(",")) if shape_raw else ()
        if dtype.kind not in _NUMERIC_KINDS or data is None:
            return _CORRUPT
        return np.frombuffer(data, dtype=dtype).reshape(shape).copy()
    except (TypeError, ValueError, AttributeError):
        return _CORRUPT
