"""Match a stream of inputs against a library: each input's best library items under a threshold.

The library is an :class:`~imageprism.ImageIndex` (built from folders, or loaded
from a saved index); :func:`open_library` is the one place that turns a path into
one, so other library formats (e.g. embedding tables) plug in there. Inputs are
embedded ``chunk_size`` at a time with the library's own ``ImagePrism`` and ranked
with :meth:`ImageIndex.search_embedding <imageprism.ImageIndex.search_embedding>`
(exact), so memory holds one chunk of inputs whatever their number.

>>> from imageprism import ImageIndex, ImagePrism
>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> a = np.kron(rng.integers(0, 256, (8, 8)), np.ones((8, 8))).astype(np.uint8)
>>> library = ImageIndex(ImagePrism())
>>> library.add([a], ids=["a"])
()
>>> [[hit.id for hit in m.matches] for m in match(library, [a, rng.integers(0, 256, (64, 64)).astype(np.uint8)])]
[['a'], []]
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

from imageprism._dedup import check_threshold, default_threshold
from imageprism._image import ImageInput, describe_input
from imageprism._index import ImageIndex, SearchHit
from imageprism._index_files import MANIFEST
from imageprism.errors import ConfigError, ImagePrismError, InputError

__all__ = ["InputMatches", "is_saved_index", "match"]

#: inputs embedded per step; bounds the memory held for inputs
CHUNK = 256


@dataclasses.dataclass(frozen=True)
class InputMatches:
    """One input's matches, best first (``error`` set, and no matches, when the input failed)."""

    input: str
    matches: tuple[SearchHit, ...]
    error: ImagePrismError | None = None

    def to_dict(self) -> dict[str, object]:
        """``{"input": ..., "matches": [{"id", "score", "scores"}...]}`` (plus ``"error"`` for a failure)."""
        out: dict[str, object] = {
            "input": self.input,
            "matches": [{"id": h.id, "score": h.score, "scores": dict(h.scores)} for h in self.matches],
        }
        if self.error is not None:
            out["error"] = str(self.error)
        return out


def is_saved_index(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a folder written by :meth:`ImageIndex.save <imageprism.ImageIndex.save>`."""
    return (Path(os.fspath(path)) / MANIFEST).is_file()


def match(
    library: ImageIndex,
    inputs: Iterable[ImageInput],
    *,
    threshold: float | None = None,
    k: int = 1,
    chunk_size: int = CHUNK,
) -> Iterator[InputMatches]:
    """For each input, in order, its best ``k`` library items whose score reaches ``threshold``.

    ``threshold`` defaults to the library prism's (its profile's, else 0.9 for the
    hash dimension alone). Inputs are consumed lazily, ``chunk_size`` at a time; an
    input that cannot be read yields an :class:`InputMatches` with its ``error``.
    """
    prism = library.prism
    threshold = check_threshold(default_threshold(prism.blend, prism.plugins) if threshold is None else threshold)
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ConfigError(f"k={k!r} is invalid; use a positive integer (matches per input)")
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ConfigError(f"chunk_size={chunk_size!r} is invalid; use a positive integer")
    chunk: list[ImageInput] = []
    for item in inputs:
        chunk.append(item)
        if len(chunk) >= chunk_size:
            yield from _match_chunk(library, chunk, threshold, k)
            chunk = []
    yield from _match_chunk(library, chunk, threshold, k)


def _match_chunk(library: ImageIndex, chunk: list[ImageInput], threshold: float, k: int) -> Iterator[InputMatches]:
    if not chunk:
        return
    batch = library.prism.embed_batch(chunk, on_error="skip", progress=False)
    errors = {f.index: f.error for f in batch.failures}
    for i, (item, embedding) in enumerate(zip(chunk, batch.embeddings)):
        name = os.fspath(item) if isinstance(item, (str, os.PathLike)) else describe_input(item)
        if embedding is None:
            yield InputMatches(name, (), errors.get(i, InputError(f"{name} could not be embedded")))
            continue
        hits = library.search_embedding(embedding, k=k)
        yield InputMatches(name, tuple(h for h in hits if h.score >= threshold))
