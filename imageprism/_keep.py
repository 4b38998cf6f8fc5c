"""Which copy represents a group in dedup: the order of the greedy pass.

:meth:`ImagePrism.dedup <imageprism.ImagePrism.dedup>` visits its inputs in one
order; each joins the first representative (in that order) whose score reaches the
threshold, else becomes one. ``keep`` chooses the order, so the preferred copy of
each group is met first and becomes its representative, and the grouping stays
exact (the greedy pass itself is unchanged). With ``linkage="connected"`` a group's
representative is likewise its first member in this order:

- ``"first"``: input order (the contract's default);
- ``"largest"``: most pixels first, then the largest file;
- ``"newest"`` / ``"oldest"``: latest / earliest modification time first (paths only);
- a key function: inputs in ``sorted(inputs, key=keep)`` order, so the input with
  the smallest key is preferred (``keep=lambda path: -os.path.getsize(path)``).

Ties keep input order. Metadata is read without decoding pixels: a file's size and
mtime from ``os.stat``, its pixel count from the image header; an input whose header
cannot be read counts as 0 pixels (it fails later, when it is embedded).
"""

from __future__ import annotations

import io
import os
import stat
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal, Protocol

import numpy as np
from PIL import Image

from imageprism._dedup import DedupResult
from imageprism._results import Failure
from imageprism._search.ann import Exact
from imageprism._search.components import DEFAULT_MAX_HOPS, Linkage
from imageprism.errors import ConfigError, InputError


class Deduplicator(Protocol):
    """What :func:`dedup_in_order` uses of an :class:`~imageprism.ImagePrism` (declared here, so
    this module never imports the facade above it)."""

    def dedup_embeddings(
        self, embeddings: Sequence[Mapping[str, np.ndarray | None]], threshold: float | None = ..., *,
        progress: bool | None = ..., linkage: Linkage = ..., max_hops: int | None = ..., exact: Exact = ...,
    ) -> DedupResult: ...

__all__ = ["KEEP_POLICIES", "Keep", "dedup_in_order", "keep_order", "pixels_and_bytes"]

#: the named policies, in the order help texts list them
KEEP_POLICIES: tuple[str, ...] = ("first", "largest", "newest", "oldest")

Keep = Literal["first", "largest", "newest", "oldest"] | Callable[[Any], Any]


def keep_order(items: Sequence[object], keep: Keep) -> np.ndarray:
    """The order in which dedup visits ``items`` under ``keep`` (a permutation of their indices)."""
    n = len(items)
    if callable(keep):
        keys = [keep(item) for item in items]
        return np.array(sorted(range(n), key=keys.__getitem__), dtype=np.int64)
    if keep not in KEEP_POLICIES:
        raise ConfigError(f"keep={keep!r} is invalid; use one of {', '.join(map(repr, KEEP_POLICIES))} or a key function")
    if keep == "first":
        return np.arange(n, dtype=np.int64)
    if keep == "largest":
        sizes = [pixels_and_bytes(item) for item in items]
        return np.array(sorted(range(n), key=lambda i: (-sizes[i][0], -sizes[i][1])), dtype=np.int64)
    times = [_mtime(item, keep) for item in items]
    sign = -1.0 if keep == "newest" else 1.0
    return np.array(sorted(range(n), key=lambda i: sign * times[i]), dtype=np.int64)


def dedup_in_order(
    prism: Deduplicator,
    embeddings: Sequence[Mapping[str, np.ndarray | None] | None],
    failures: Sequence[Failure],
    order: np.ndarray,
    threshold: float | None,
    *,
    progress: bool | None = None,
    linkage: Linkage = "representative",
    max_hops: int | None = DEFAULT_MAX_HOPS,
    exact: Exact = True,
) -> DedupResult:
    """Dedup of ``embeddings`` visited in ``order``; labels, scores and failures refer to input positions.

    Entries listed in ``failures`` (``None`` embeddings) get label ``-1``.
    """
    failed = {f.index for f in failures}
    visit = np.array([i for i in order.tolist() if i not in failed], dtype=np.int64)
    inner = prism.dedup_embeddings(
        [embeddings[i] for i in visit.tolist()], threshold, progress=progress, linkage=linkage, max_hops=max_hops,
        exact=exact,
    )
    labels = np.full(len(embeddings), -1, dtype=np.int64)
    labels[visit] = visit[inner.labels] if len(visit) else visit
    scores = None
    if inner.scores is not None:
        scores = np.full(len(embeddings), np.nan)
        scores[visit] = inner.scores
    return DedupResult.from_labels(labels, threshold=inner.threshold, failures=failures, scores=scores)


def _regular_file(item: object) -> str | None:
    """The path of ``item`` if it names a regular file (never opens FIFOs or devices)."""
    if not isinstance(item, (str, os.PathLike)):
        return None
    path = os.fspath(item)
    try:
        return path if stat.S_ISREG(os.stat(path).st_mode) else None
    except OSError:
        return None


def pixels_and_bytes(item: object) -> tuple[int, int]:
    """Pixel count (from the header) and byte size of an input; ``(0, 0)`` where unknown."""
    if isinstance(item, Image.Image):
        return item.width * item.height, 0
    if isinstance(item, np.ndarray):
        return int(item.shape[0] * item.shape[1]) if item.ndim >= 2 else 0, item.nbytes
    if isinstance(item, (bytes, bytearray)):
        return _header_pixels(io.BytesIO(item)), len(item)
    path = _regular_file(item)
    if path is None:
        return 0, 0
    with open(path, "rb") as handle:
        return _header_pixels(handle), os.fstat(handle.fileno()).st_size


def _header_pixels(handle: Any) -> int:
    try:
        with warnings.catch_warnings(), Image.open(handle) as image:  # reads the header only
            warnings.simplefilter("ignore")  # a huge size is refused when embedded, not here
            return int(image.width * image.height)
    except Exception:  # noqa: BLE001 - unreadable here means "fails later, when embedded"
        return 0


def _mtime(item: object, keep: str) -> float:
    path = _regular_file(item)
    if path is None:
        if isinstance(item, (str, os.PathLike)):
            return 0.0  # missing or not a file: it fails when embedded
        raise InputError(
            f"keep={keep!r} needs file paths (it compares modification times), but an input is "
            f"{type(item).__name__}; pass paths or use keep='first' or 'largest'"
        )
    return os.stat(path).st_mtime
