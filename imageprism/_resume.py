"""Resumable runs: a file already embedded, and unchanged since, is not decoded again.

The embedding cache is keyed by pixel content, which costs a decode to compute. The
file-identity layer of a :class:`~imageprism._cache.PersistentCache` remembers, for
each file path and dimension, the pixel key its embedding is filed under and the
image's size, together with what identifies the file's version: size, modification
time (ns) and inode.
:func:`resumed_chunks` looks every path up before decoding; a file whose identity
still matches and whose embeddings are in the cache is answered from the cache, the
others are computed and their identity recorded (each embedding is committed as it
is computed, so a killed run, started again, resumes where it stopped).

Why not a digest of the bytes: reading and hashing a file costs a large part of its
decode for the small JPEGs most datasets hold (see ``benchmarks/scale.py``), and any
edit through the file system changes the modification time or the size. A file
rewritten in place with identical size and a forged modification time is not seen;
use a new cache file (or ``clear()``) after such tools.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from imageprism._cache import EmbeddingCache
from imageprism._cache_files import FileIdentity, FileRecord
from imageprism._results import Failure
from imageprism._workers import ChunkResult, Embedded

__all__ = ["WINDOW", "file_identity", "resumed_chunks"]

#: inputs looked up at a time (bounds the memory of a run: results are handed on per window)
WINDOW = 4096


def file_identity(item: object) -> FileIdentity | None:
    """The identity of a path input's file now (``None`` for other inputs, or a file that cannot be seen)."""
    if not isinstance(item, (str, os.PathLike)):
        return None
    try:
        path = os.path.abspath(os.fsdecode(item))
        path.encode("utf-8")  # a name that is not UTF-8 (surrogate escapes) cannot be a TEXT key: no record
        info = os.stat(path)
    except (OSError, ValueError):  # UnicodeEncodeError is a ValueError
        return None  # the decode reports a real problem
    return FileIdentity(path, info.st_size, info.st_mtime_ns, info.st_ino)


def resumed_chunks(
    cache: EmbeddingCache,
    tokens: Mapping[str, str],
    items: Sequence[Any],
    compute: Callable[[Sequence[Any]], Iterator[ChunkResult]],
) -> Iterator[ChunkResult]:
    """Outcomes with their input index, in input order: known files from ``cache``, the rest from
    ``compute`` (then recorded).

    ``tokens``: dimension -> cache token. ``compute(sub_items)`` yields chunks in order
    whose indices are positions in ``sub_items``; they are mapped back to ``items``. The
    known files of a window (:data:`WINDOW` inputs) are handed on in their place between
    the computed ones, so a writer can stream the outcomes as they come.
    """
    if not cache.remembers_files:
        yield from compute(items)
        return
    for start in range(0, len(items), WINDOW):
        window = items[start : start + WINDOW]
        identities = [file_identity(item) for item in window]
        seen = [(k, identity) for k, identity in enumerate(identities) if identity is not None]
        recorded = cache.file_records([identity for _, identity in seen], list(tokens.values()))
        found = _cached(cache, {k: record for (k, _), record in zip(seen, recorded) if record is not None}, tokens)
        known = iter(sorted(found))
        after = next(known, None)  # the next known position not handed on yet
        todo = [k for k in range(len(window)) if k not in found]
        for chunk in compute([window[k] for k in todo]):
            out: ChunkResult = []
            for i, outcome in chunk:
                k = todo[i]
                while after is not None and after < k:
                    out.append((start + after, found[after]))
                    after = next(known, None)
                identity = identities[k]
                if isinstance(outcome, Failure):
                    outcome = dataclasses.replace(outcome, index=start + k)
                elif identity is not None:
                    cache.put_file_record(identity, {tokens[name]: key for name, key in outcome.pixel_keys.items()}, outcome.size)
                out.append((start + k, outcome))
            yield out
        rest: ChunkResult = []
        while after is not None:
            rest.append((start + after, found[after]))
            after = next(known, None)
        if rest:
            yield rest


def _cached(cache: EmbeddingCache, recorded: Mapping[int, FileRecord], tokens: Mapping[str, str]) -> dict[int, Embedded]:
    """The embeddings, pixel keys and sizes of the unchanged files (``recorded``: position -> record)
    whose every dimension's embedding is cached, in one batched lookup."""
    wanted = [(k, name, (record.keys[token], token)) for k, record in recorded.items() for name, token in tokens.items()]
    hits = cache.lookup_many([key for _, _, key in wanted])
    found: dict[int, Embedded] = {}
    missed: set[int] = set()
    for (k, name, (pixel_key, _)), (hit, embedding) in zip(wanted, hits):
        if not hit:
            missed.add(k)
        elif k not in missed:
            found.setdefault(k, Embedded({}, {}, recorded[k].size))
            found[k].embeddings[name] = embedding
            found[k].pixel_keys[name] = pixel_key
    return {k: hit for k, hit in found.items() if k not in missed}
