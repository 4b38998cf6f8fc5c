"""The file-identity table of a persistent cache: which pixel key a version of a file had.

One row per (file path, dimension cache token): the file's size, modification time (ns)
and inode when it was embedded, the image's width and height (EXIF orientation applied),
and the pixel key its embedding is filed under in the ``embeddings`` table. A lookup
answers only when every row still describes the file as it is now and its checksum
holds; anything else is a miss (the file is decoded again and the rows rewritten). See :mod:`imageprism._resume` for how runs use it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import sqlite3
from collections.abc import Mapping, Sequence
from typing import NamedTuple

from imageprism._sqlite import text_value

__all__ = ["FILES_TABLE", "FileIdentity", "FileRecord", "read_file_records", "write_file_record"]

#: paths per lookup query (SQLite allows 32766 parameters; small enough to stay quick)
_QUERY_PATHS = 500

FILES_TABLE = (
    "CREATE TABLE files (path TEXT NOT NULL, token TEXT NOT NULL, size INTEGER NOT NULL, "
    "mtime_ns INTEGER NOT NULL, inode INTEGER NOT NULL, width INTEGER NOT NULL, height INTEGER NOT NULL, "
    "pixel_key TEXT NOT NULL, checksum BLOB NOT NULL, "
    "PRIMARY KEY (path, token)) WITHOUT ROWID"
)


@dataclasses.dataclass(frozen=True)
class FileIdentity:
    """A version of a file: absolute path, size, modification time (ns) and inode."""

    path: str
    size: int
    mtime_ns: int
    inode: int


class FileRecord(NamedTuple):
    """What the table knows of a file's current version: token -> pixel key, and the image's ``(width, height)``."""

    keys: dict[str, str]
    size: tuple[int, int]


def read_file_records(
    conn: sqlite3.Connection, identities: Sequence[FileIdentity], tokens: Sequence[str]
) -> list[FileRecord | None]:
    """Per file, its record if every token has a valid row for its current version; else ``None``.

    One query per :data:`_QUERY_PATHS` files.
    """
    rows: dict[str, list[tuple[object, ...]]] = {}
    paths = list(dict.fromkeys(identity.path for identity in identities))
    for s in range(0, len(paths), _QUERY_PATHS):
        part = paths[s : s + _QUERY_PATHS]
        marks = ",".join("?" * len(part))
        for row in conn.execute(
            f"SELECT path, token, size, mtime_ns, inode, width, height, pixel_key, checksum FROM files WHERE path IN ({marks})",
            part,
        ):
            path = text_value(row[0])
            if path is not None:
                rows.setdefault(path, []).append(row[1:])
    return [_record(identity, rows.get(identity.path, ()), tokens) for identity in identities]


def _record(identity: FileIdentity, rows: Sequence[tuple[object, ...]], tokens: Sequence[str]) -> FileRecord | None:
    keys: dict[str, str] = {}
    sizes: set[tuple[int, int]] = set()
    for token_raw, size, mtime_ns, inode, width, height, key_raw, checksum in rows:
        token, key = text_value(token_raw), text_value(key_raw)
        if token is None or key is None or not all(isinstance(x, int) for x in (size, mtime_ns, inode)):
            continue  # a tampered row: a miss
        if not isinstance(width, int) or not isinstance(height, int):
            continue
        if (size, mtime_ns, inode) == (identity.size, identity.mtime_ns, identity.inode) and checksum == _checksum(
            identity, token, key, (width, height)
        ):
            keys[token] = key
            sizes.add((width, height))
    if len(sizes) != 1 or not all(t in keys for t in tokens):
        return None  # a token missing, or rows of one version disagreeing on the size
    return FileRecord(keys, sizes.pop())


def write_file_record(conn: sqlite3.Connection, identity: FileIdentity, keys: Mapping[str, str], size: tuple[int, int]) -> None:
    """Record the pixel key of each token and the image size for this version of the file (one transaction)."""
    rows = [(identity.path, token, identity.size, identity.mtime_ns, identity.inode, *size, key,
             _checksum(identity, token, key, size)) for token, key in keys.items()]
    conn.execute("BEGIN")
    try:
        conn.executemany(
            "INSERT OR REPLACE INTO files (path, token, size, mtime_ns, inode, width, height, pixel_key, checksum) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", rows,
        )
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def _checksum(identity: FileIdentity, token: str, key: str, size: tuple[int, int]) -> bytes:
    """BLAKE2b-128 over every field, each length-prefixed: a damaged or edited row never matches."""
    chunks: list[bytes] = []
    for part in (identity.path, token, str(identity.size), str(identity.mtime_ns), str(identity.inode), key, str(size[0]), str(size[1])):
        raw = part.encode("utf-8", "surrogateescape")
        chunks += (len(raw).to_bytes(8, "little"), raw)
    return hashlib.blake2b(b"".join(chunks), digest_size=16, person=b"imageprism-f2").digest()
