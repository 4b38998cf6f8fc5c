"""The files of a saved index: format, checked reading, crash-safe writing.

A saved index is a directory::

    manifest.json              the committed generation (replaced atomically, never edited)
    g000001.ids.json           segment written by generation 1: its item ids
    g000001.hash.codes.npy     ... and one array per column key (``Column.arrays()``)
    g000003.deleted.npy        rows removed by generation 3 (int64, numbered across segments)
    g000002.semantic.ann-<digest>-centroids.npy  a trained approximate-search state
                               (``Searcher.state()``, written by the save that first has it)
    lock                       held (``flock``) by the one process saving

A save writes its new files beside the old ones (fsync each), writes
``manifest.json.tmp`` (fsync), renames it over ``manifest.json`` and fsyncs the
directory: a reader sees the old generation or the new one, whatever instant the
writer dies at. Files that no committed manifest names (an interrupted save's, or
the previous generation's after a compaction) are deleted by the next save.

Reading trusts nothing: every name is a plain file name matching :data:`_NAME`
(no ``/``, no ``..``), opened without following symlinks and without blocking,
and must be a regular file; the manifest and id lists are size-bounded; every
field is type-checked; an array's header (dtype, shape) must match its file size
before anything is allocated, and it is read with ``allow_pickle`` off.
Each problem raises :class:`~imageprism.errors.IndexFormatError`.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import stat
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from imageprism._files import fsync_folder
from imageprism._version import __version__
from imageprism.errors import IndexConflictError, IndexFormatError, IndexWriteError

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no lock (one writer is then the caller's duty)
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "LOCK",
    "MANIFEST",
    "Manifest",
    "Segment",
    "Writer",
    "is_leftover",
    "load_array",
    "read_deleted",
    "read_ids",
    "read_manifest",
    "segment_arrays",
]

#: version of the on-disk layout written by :meth:`ImageIndex.save <imageprism.ImageIndex.save>`
FORMAT_VERSION = 2
MANIFEST = "manifest.json"
FORMAT_NAME = "imageprism-index"
LOCK = "lock"
#: the largest manifest read (a version-1 manifest lists every id)
MAX_MANIFEST_BYTES = 64 << 20
#: the largest id, in UTF-8 bytes (an id is a path or the caller's string)
MAX_ID_BYTES = 4096
MAX_SEGMENTS = 10_000
MAX_ITEMS = 1 << 40
#: every file name a manifest may name: a plain name in the index directory
_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,199}\Z")
_OURS = re.compile(r"(g\d{6,}\..*|manifest\.json\.tmp)\Z")  # what a save may delete once unreferenced
_DTYPE_KINDS = "biuf"


@dataclass(frozen=True)
class Segment:
    """Rows written together: ``rows`` items, their ids (a file, or a list from version 1) and arrays."""

    rows: int
    ids: str | list[str]
    files: dict[str, dict[str, str]]  # dimension -> column key -> file name

    def names(self) -> set[str]:
        named = {f for keys in self.files.values() for f in keys.values()}
        return named | ({self.ids} if isinstance(self.ids, str) else set())

    def to_json(self) -> dict[str, Any]:
        return {"rows": self.rows, "ids": self.ids, "files": self.files}


@dataclass(frozen=True)
class Manifest:
    """A checked manifest: what one committed generation holds."""

    generation: int
    count: int
    dimensions: dict[str, dict[str, str]]  # name -> {"kind", "cache_token"}
    weights: dict[str, float]
    missing: str
    profile: str | None
    segments: list[Segment]
    deleted: list[str]
    version: int = FORMAT_VERSION
    exact: bool | str = True  # ImageIndex(exact=...): approximate vector search or not
    ann: dict[str, dict[str, str]] = field(default_factory=dict)  # dimension -> state key -> file name

    @property
    def rows(self) -> int:
        """Rows across segments, removed ones included."""
        return sum(s.rows for s in self.segments)

    def names(self) -> set[str]:
        return set(self.deleted).union(*(s.names() for s in self.segments), *(f.values() for f in self.ann.values()))

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT_NAME,
            "format_version": FORMAT_VERSION,
            "imageprism_version": __version__,
            "generation": self.generation,
            "count": self.count,
            "dimensions": self.dimensions,
            "weights": self.weights,
            "missing": self.missing,
            "exact": self.exact,
            "profile": self.profile,
            "segments": [s.to_json() for s in self.segments],
            "deleted": self.deleted,
            "ann": self.ann,
        }


# -- reading ---------------------------------------------------------------------------------


def _damaged(folder: Path, what: str) -> IndexFormatError:
    return IndexFormatError(f"index {str(folder)!r} is damaged: {what}; save it again from its source or rebuild it")


@contextlib.contextmanager
def _open_file(folder: Path, name: object, limit: int) -> Iterator[tuple[Any, int]]:
    """A named file of the index, opened only if it is a regular file in ``folder`` of at most ``limit`` bytes."""
    if not isinstance(name, str) or not _NAME.match(name) or ".." in name:
        raise _damaged(folder, f"file name {name!r} is not a plain file name inside the index")
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(folder / name, flags)
    except FileNotFoundError:
        raise _damaged(folder, f"{name!r} is missing") from None
    except OSError as exc:
        raise _damaged(folder, f"{name!r} cannot be opened (a symbolic link or unreadable: {exc.strerror})") from None
    with os.fdopen(fd, "rb") as handle:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise _damaged(folder, f"{name!r} is not a regular file")
        if info.st_size > limit:
            raise _damaged(folder, f"{name!r} holds {info.st_size} bytes, more than the {limit} expected")
        yield handle, info.st_size


def _read_json(folder: Path, name: str, limit: int) -> object:
    with _open_file(folder, name, limit) as (handle, _):
        data = handle.read(limit + 1)
    try:
        return json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise _damaged(folder, f"{name} is not valid JSON ({type(exc).__name__}: {str(exc)[:200]})") from None


def _field(folder: Path, data: Mapping[str, Any], key: str, kind: type | tuple[type, ...], where: str = MANIFEST) -> Any:
    value = data.get(key)
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is int):
        raise _damaged(folder, f"{where} has no valid {key!r} (got {type(value).__name__})")
    return value


def _count(folder: Path, data: Mapping[str, Any], key: str, where: str = MANIFEST) -> int:
    value = _field(folder, data, key, int, where)
    if not 0 <= value <= MAX_ITEMS:
        raise _damaged(folder, f"{where} gives {key!r} = {value}, outside 0..{MAX_ITEMS}")
    return int(value)


def _str_map(folder: Path, value: object, where: str) -> dict[str, str]:
    if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise _damaged(folder, f"{where} must map names to strings")
    return dict(value)


def read_manifest(folder: Path) -> Manifest:
    """The committed manifest of the index in ``folder``, checked field by field."""
    if not (folder / MANIFEST).exists() and not (folder / MANIFEST).is_symlink():
        hint = "" if folder.exists() else " (no such directory)"
        raise IndexFormatError(
            f"{str(folder)!r} is not an imageprism index{hint}: {MANIFEST} is missing; build one with ImageIndex.save"
        )
    data = _read_json(folder, MANIFEST, MAX_MANIFEST_BYTES)
    if not isinstance(data, dict) or data.get("format") != FORMAT_NAME:
        raise IndexFormatError(f"{str(folder / MANIFEST)!r} is not an imageprism index manifest")
    version = data.get("format_version")
    if version not in (1, FORMAT_VERSION) or isinstance(version, bool):
        raise IndexFormatError(
            f"index {str(folder)!r} has format version {version!r}; this imageprism {__version__} reads versions "
            f"1 and {FORMAT_VERSION}; rebuild the index with this version"
        )
    count = _count(folder, data, "count")
    dims: dict[str, dict[str, str]] = {}
    for name, entry in _field(folder, data, "dimensions", dict).items():
        if not isinstance(entry, dict):
            raise _damaged(folder, f"dimension {name!r} is not an object")
        dims[name] = {key: _field(folder, entry, key, str, f"dimension {name!r}") for key in ("kind", "cache_token")}
    weights = _field(folder, data, "weights", dict)
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in weights.values()):
        raise _damaged(folder, f"'weights' must be finite numbers, got {str(weights)[:200]}")
    profile = data.get("profile")
    if profile is not None and (not isinstance(profile, str) or len(profile) > MAX_ID_BYTES or "\0" in profile):
        raise _damaged(folder, f"'profile' must be a name or a path, got {type(profile).__name__}")
    missing = _field(folder, data, "missing", str)
    exact = data.get("exact", True)
    if not (exact is True or exact is False or exact == "auto"):
        raise _damaged(folder, f"'exact' must be true, false or \"auto\", got {str(exact)[:50]!r}")
    if version == 1:  # one segment: the ids inline, one file per array
        ids = _field(folder, data, "ids", list)
        files = {name: _str_map(folder, _field(folder, e, "files", dict, f"dimension {name!r}"), f"dimension {name!r} files")
                 for name, e in data["dimensions"].items()}
        segments = [Segment(count, ids, files)] if count else []
        return Manifest(0, count, dims, dict(weights), missing, profile, segments, [], version=1, exact=exact)
    raw_segments = _field(folder, data, "segments", list)
    if len(raw_segments) > MAX_SEGMENTS:
        raise _damaged(folder, f"{len(raw_segments)} segments, more than {MAX_SEGMENTS}")
    segments = []
    for i, raw in enumerate(raw_segments):
        where = f"segment {i}"
        if not isinstance(raw, dict):
            raise _damaged(folder, f"{where} is not an object")
        files = _field(folder, raw, "files", dict, where)
        if sorted(files) != sorted(dims):
            raise _damaged(folder, f"{where} has arrays for {sorted(files)}, not the dimensions {sorted(dims)}")
        segment_files = {name: _str_map(folder, keys, f"{where} files of {name!r}") for name, keys in files.items()}
        segments.append(Segment(_count(folder, raw, "rows", where), _field(folder, raw, "ids", str, where), segment_files))
    deleted = _field(folder, data, "deleted", list)
    if len(deleted) > MAX_SEGMENTS or not all(isinstance(d, str) for d in deleted):
        raise _damaged(folder, "'deleted' must list at most {MAX_SEGMENTS} file names")
    raw_ann = data.get("ann", {})  # absent from indexes saved before the approximate state was kept
    if not isinstance(raw_ann, dict) or not set(raw_ann) <= set(dims):
        raise _damaged(folder, f"'ann' must map some of the dimensions {sorted(dims)} to files")
    ann = {name: _str_map(folder, files, f"'ann' of {name!r}") for name, files in raw_ann.items()}
    generation = _count(folder, data, "generation")
    manifest = Manifest(
        generation, count, dims, dict(weights), missing, profile, segments, list(deleted), exact=exact, ann=ann
    )
    if manifest.rows < count:
        raise _damaged(folder, f"{MANIFEST} counts {count} items in {manifest.rows} rows")
    return manifest


def load_array(folder: Path, name: str, *, max_dims: int = 4) -> np.ndarray:
    """An ``.npy`` array of the index: header checked against the file size, then read (no pickles)."""
    with _open_file(folder, name, 1 << 62) as (handle, size):
        try:
            version = np.lib.format.read_magic(handle)
            if version == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(handle)
            elif version == (2, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(handle)
            else:
                raise ValueError(f"npy version {version}")
        except (ValueError, OSError, EOFError, SyntaxError, TypeError) as exc:
            raise _damaged(folder, f"{name!r} is not a readable .npy file ({exc})") from None
        if dtype.hasobject or dtype.fields is not None or dtype.kind not in _DTYPE_KINDS or len(shape) > max_dims:
            raise _damaged(folder, f"{name!r} holds {dtype} {shape}; index arrays are plain numbers")
        expected = math.prod(shape) * dtype.itemsize
        if handle.tell() + expected != size:
            raise _damaged(folder, f"{name!r} declares {dtype} {shape} ({expected} bytes) but holds {size - handle.tell()}")
        array = np.fromfile(handle, dtype=dtype, count=math.prod(shape))
    array = array.reshape(shape, order="F" if fortran else "C")
    if not dtype.isnative:
        array = array.astype(dtype.newbyteorder("="))
    if dtype.kind == "f" and not np.isfinite(array).all():
        raise _damaged(folder, f"{name!r} holds NaN or infinite values")
    return np.ascontiguousarray(array)


def segment_arrays(folder: Path, segment: Segment, dimension: str) -> dict[str, np.ndarray]:
    """The arrays of one dimension in one segment, by column key."""
    return {key: load_array(folder, file) for key, file in segment.files[dimension].items()}


def read_ids(folder: Path, segment: Segment) -> list[str]:
    """The ids of one segment: ``segment.rows`` non-empty strings."""
    ids: object = segment.ids
    if isinstance(ids, str):
        ids = _read_json(folder, ids, 64 + segment.rows * (MAX_ID_BYTES + 8))
    if not isinstance(ids, list) or len(ids) != segment.rows:
        got = len(ids) if isinstance(ids, list) else type(ids).__name__
        raise _damaged(folder, f"a segment of {segment.rows} rows lists {got} ids")
    if not all(isinstance(i, str) and i for i in ids):
        raise _damaged(folder, "ids must be non-empty strings")
    return ids


def read_deleted(folder: Path, manifest: Manifest) -> np.ndarray:
    """A mask over every row of the segments: true for rows still in the index."""
    keep = np.ones(manifest.rows, bool)
    for name in manifest.deleted:
        rows = load_array(folder, name, max_dims=1)
        if rows.ndim != 1 or rows.dtype.kind not in "iu" or (len(rows) and (rows.min() < 0 or rows.max() >= len(keep))):
            raise _damaged(folder, f"{name!r} must list row numbers below {len(keep)}")
        keep[rows] = False
    if int(keep.sum()) != manifest.count:
        raise _damaged(folder, f"{MANIFEST} counts {manifest.count} items, the segments hold {int(keep.sum())}")
    return keep


# -- writing ---------------------------------------------------------------------------------


def is_leftover(name: str) -> bool:
    """A file name a save writes (so a save may delete it once no manifest names it), or the lock."""
    return name == LOCK or bool(_OURS.match(name))


class Writer:
    """One save into ``folder``: holds its lock, writes files durably, commits a manifest atomically.

    Use as a context manager; a second writer (another process, or another index
    in this one) raises :class:`~imageprism.errors.IndexConflictError` at once.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._lock_fd: int | None = None
        self.written: set[str] = set()

    def __enter__(self) -> Writer:
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            self._lock_fd = os.open(self.folder / LOCK, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o644)
        except OSError as exc:
            raise IndexWriteError(f"cannot save the index to {str(self.folder)!r}: {exc.strerror}") from None
        if fcntl is not None:
            try:
                fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(self._lock_fd)
                self._lock_fd = None
                raise IndexConflictError(
                    f"index {str(self.folder)!r} is being saved by another process or index; "
                    "save from one writer at a time"
                ) from None
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # releases the flock
            self._lock_fd = None

    def _write(self, name: str, dump: Any) -> None:
        path = self.folder / name
        with contextlib.suppress(FileNotFoundError):
            path.unlink()  # an interrupted save's leftover of the same name
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
        try:
            with os.fdopen(os.open(path, flags, 0o644), "wb") as handle:
                self.written.add(name)
                dump(handle)
                handle.flush()
                os.fsync(handle.fileno())
        except OSError as exc:
            raise IndexWriteError(
                f"cannot write {str(path)!r} ({exc.strerror}); the index keeps its last saved state"
            ) from exc

    def array(self, name: str, array: np.ndarray) -> str:
        """Write an array file (durably); returns its name."""
        self._write(name, lambda f: np.lib.format.write_array(f, np.ascontiguousarray(array), allow_pickle=False))
        return name

    def json(self, name: str, value: object) -> str:
        """Write a JSON file (durably); returns its name."""
        self._write(name, lambda f: f.write(json.dumps(value, indent=1).encode("utf-8")))
        return name

    def commit(self, manifest: Manifest, previous: set[str]) -> None:
        """Switch the index to ``manifest`` (one atomic rename), then delete the files no longer named."""
        tmp = MANIFEST + ".tmp"
        self.json(tmp, manifest.to_json())
        try:
            os.replace(self.folder / tmp, self.folder / MANIFEST)
            fsync_folder(self.folder, strict=True)
        except OSError as exc:
            raise IndexWriteError(f"cannot commit the index in {str(self.folder)!r} ({exc.strerror})") from exc
        keep = manifest.names() | {MANIFEST, LOCK}
        for entry in os.scandir(self.folder):
            if entry.name not in keep and (entry.name in previous or _OURS.match(entry.name)):
                with contextlib.suppress(OSError):
                    os.unlink(entry.path)
