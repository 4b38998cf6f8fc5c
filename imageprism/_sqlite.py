"""SQLite helpers of the persistent cache: busy retries, what an error means for the user, TEXT values."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from typing import TypeVar

__all__ = ["BUSY_RETRIES", "describe", "is_busy", "is_damaged", "retry_busy", "text_value"]

T = TypeVar("T")

#: attempts of a statement that SQLite reports busy without waiting (its busy timeout does not cover
#: every case, e.g. while another process switches the file to WAL or checkpoints it on close)
BUSY_RETRIES = 6


def is_busy(exc: sqlite3.Error) -> bool:
    return "locked" in str(exc) or "busy" in str(exc).lower()


def retry_busy(run: Callable[[], T]) -> T:
    """``run()``, tried again after a short pause while SQLite reports the file busy."""
    for attempt in range(BUSY_RETRIES - 1):
        try:
            return run()
        except sqlite3.OperationalError as exc:
            if not is_busy(exc):
                raise
            time.sleep(0.05 * 2**attempt)
    return run()


def is_damaged(exc: sqlite3.Error) -> bool:
    """Whether an error says the file is not (or no longer) a readable SQLite database."""
    return any(word in str(exc) for word in ("not a database", "malformed", "corrupt"))


def describe(exc: sqlite3.Error) -> str:
    """What an SQLite error means for the user."""
    text = str(exc)
    if "not a database" in text:
        return "is not an SQLite database, so not an imageprism cache; it was left unchanged: pass another path"
    if "malformed" in text or "corrupt" in text:
        return f"is damaged ({text}); it only holds cached embeddings: pass another path, or remove it to start afresh"
    name = getattr(exc, "sqlite_errorname", None) or type(exc).__name__
    if "full" in text or "I/O error" in text:
        return f"could not be written: the disk is full, a file size limit was reached or the device failed ({name}: {text})"
    if "readonly" in text or "read-only" in text:
        return f"is read-only ({name}: {text})"
    return f"failed ({name}: {text})"


def text_value(value: object) -> str | None:
    """A TEXT column read as ``str`` or, by a connection with ``text_factory = bytes``, as bytes (``None`` if not UTF-8)."""
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            return None
    return value if isinstance(value, str) else None
