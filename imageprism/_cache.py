"""The embedding cache: embeddings keyed by pixel content and dimension configuration.

A key is ``(pixel_key, cache_token)``: the BLAKE2b digest of the pixels a dimension
consumed, and the dimension's :attr:`~imageprism.dimensions.DimensionPlugin.cache_token`
(its name, configuration and model identity). Comparing one image with many
others therefore embeds it once, and two configurations never share an entry.
"""

from __future__ import annotations

import dataclasses
import threading
from collections import OrderedDict
from typing import Optional

import numpy as np

__all__ = ["CacheKey", "CacheStats", "EmbeddingCache"]

CacheKey = tuple[str, str]
Embedding = Optional[np.ndarray]


@dataclasses.dataclass(frozen=True)
class CacheStats:
    """Counters of an :class:`EmbeddingCache`."""

    hits: int
    misses: int
    entries: int
    bytes: int

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
            self._misses += 1
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
