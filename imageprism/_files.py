"""Writing output files without ever losing one: atomic replace, no silent overwrite."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from imageprism.errors import InputError

__all__ = ["atomic_file", "atomic_write", "check_writable_folder", "fsync_folder"]


def atomic_write(path: str | os.PathLike[str], data: bytes, *, overwrite: bool = False) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder, fsync, then rename.

    A reader sees the old file or the complete new one, never a partial one. An
    existing ``path`` is refused (:class:`InputError`) unless ``overwrite``; the check
    and the rename are as close together as a plain filesystem allows.
    """
    with atomic_file(path, overwrite=overwrite) as handle:
        handle.write(data)


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike[str], *, overwrite: bool = False) -> Iterator[BinaryIO]:
    """A binary file to write in steps that appears at ``path`` complete, or not at all.

    The writes go to a temporary file in the same folder; when the block ends without an
    exception it is flushed, fsynced and renamed to ``path`` (refused like
    :func:`atomic_write` when ``path`` exists and not ``overwrite``). If the block raises
    (or the process dies), ``path`` is untouched and the temporary file is removed
    (left as a hidden ``.NAME.*.tmp`` only by a kill).
    """
    target = Path(os.fspath(path))
    if not overwrite and os.path.lexists(target):
        raise InputError(f"{os.fspath(target)!r} already exists; refusing to overwrite it (choose another name)")
    fd, temp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp's 0600 would make outputs private; use the usual mode
        with os.fdopen(fd, "wb") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        if overwrite or not _link(temp, target):
            os.replace(temp, target)
    finally:
        if os.path.exists(temp):
            os.unlink(temp)
    fsync_folder(target.parent)


def _link(temp: str, target: Path) -> bool:
    """Hard-link ``temp`` as ``target`` (fails if the name appeared meanwhile); False where links are unsupported."""
    try:
        os.link(temp, target)
    except FileExistsError:
        raise InputError(f"{os.fspath(target)!r} already exists; refusing to overwrite it") from None
    except OSError:
        return False
    return True


def check_writable_folder(folder: str | os.PathLike[str], *, what: str) -> None:
    """Raise a one-line :class:`InputError` unless ``folder`` is (or can be created as) a writable folder."""
    path = Path(os.fspath(folder))
    existing = path
    while not existing.exists():
        if existing.parent == existing:
            break
        existing = existing.parent
    if existing.exists() and not existing.is_dir():
        raise InputError(f"{what} {os.fspath(path)!r} cannot be written: {os.fspath(existing)!r} is not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise InputError(f"{what} {os.fspath(path)!r} cannot be written: no write permission on {os.fspath(existing)!r}")


def fsync_folder(folder: Path, *, strict: bool = False) -> None:
    """Make a rename or unlink in ``folder`` durable (fsync of the directory, POSIX only).

    ``strict``: an error is raised (the index's commit reports it); otherwise it is ignored
    (a file system that cannot sync folders still gets its complete file).
    """
    if os.name != "posix":  # pragma: no cover
        return
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        if strict:
            raise
        return
    try:
        os.fsync(fd)
    except OSError:
        if strict:
            raise
    finally:
        os.close(fd)


def _umask() -> int:
    """The process's file-creation mask (read by setting it, then restoring it)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask
