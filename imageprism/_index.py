"""A search index over a catalogue of images: top-k matches of a query, exact.

An :class:`ImageIndex` stores every item's embedding for each dimension of its
:class:`~imageprism.ImagePrism`, one *store* per dimension chosen by the plugin's
``embedding_kind``:

* ``"bits"`` (the ``hash`` dimension): packed codes in a faiss ``IndexBinaryFlat``
  (all rows of an item concatenated). The hash score is the mean fraction of
  equal bits over rows, so ranking by it is ranking by total Hamming distance.
* ``"vector"`` (``semantic``, ``instance``, ``style``): float32 vectors in a faiss
  ``IndexFlatIP``; the inner product is the cosine. The plugins' vectors have unit
  length and are stored as they are; a vector further than ``1e-4`` from unit
  length is L2-normalised first (cosine scores do not change).
* hashes with flip, rotation or crop variants (``bit_variants`` above 1): the
  score is the best alignment of either side's variants with the other's whole
  image, so the whole images go in one ``IndexBinaryFlat`` and the other variants
  in a second; a query searches its ``V`` variants in the first and its whole image
  in the second (``V + 1`` scans), and the candidates are scored with ``score``.
* ``"other"`` (``face``): the embeddings as they are, scored one by one with the
  plugin's ``score`` (a Python loop: exact, but about a microsecond per item).

**Exactness.** A query gives every item a *fast* score: for one dimension,
faiss' exhaustive top-``m`` search; for a blend, every item's fast score on each
weighted dimension, blended with :func:`~imageprism._dedup.blend_scores` (the
arithmetic of :func:`~imageprism._profiles.blend`). Fast and exact scores differ by
at most a rounding bound ``e`` (float32 inner products of near-unit vectors:
``d * 2**-23 + 2.5e-4``; packed bits: ``1e-9``), so every item whose exact score
reaches the ``k``-th best has a fast score within ``2e`` of the ``k``-th best fast
score: those items are the candidates (``m`` grows until no item left out can be
one). Candidates are scored exactly (:meth:`DedupColumn.pair_scores
<imageprism._dedup.DedupColumn.pair_scores>`, the arithmetic dedup uses; the
plugin's ``score`` for variant hashes and ``"other"``), blended, and ranked, ties
broken by insertion order. So the hits are exactly the top ``k``. Each hit reports
the plugin's own scores, the numbers :meth:`ImagePrism.compare
<imageprism.ImagePrism.compare>` gives (equal to the ranking scores up to the
last bit of float rounding).

**Files.** :meth:`ImageIndex.save` writes a directory: ``manifest.json`` (format
version, imageprism version, dimensions with their kind and ``cache_token``,
weights, missing policy, profile, item ids) and one ``.npy`` file per array
(read back with ``allow_pickle=False``). :meth:`ImageIndex.load` checks the format
version and that each dimension's ``cache_token`` matches the ``ImagePrism`` used
for queries: embeddings from another model or configuration are refused.
"""

from __future__ import annotations

import abc
import dataclasses
import json
import os
import threading
import types
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar, cast

import numpy as np

from imageprism._dedup import DedupColumn, _faiss, blend_scores, columns_from_embeddings
from imageprism._image import ImageInput, describe_input
from imageprism._math import hamming_similarity, l2_normalize
from imageprism._prism import ImagePrism, OnError
from imageprism._profiles import blend, load_profile, normalize_weights
from imageprism._results import Failure
from imageprism._types import Dimension, Profile
from imageprism._version import __version__
from imageprism._video import embed_inputs, is_video
from imageprism.dimensions import DimensionPlugin, parse_dimension
from imageprism.errors import ConfigError, ImagePrismError, InputError

__all__ = ["FORMAT_VERSION", "ImageIndex", "SearchHit"]

#: version of the on-disk layout written by :meth:`ImageIndex.save`
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
_FORMAT_NAME = "imageprism-index"
#: vectors whose norm is within this of 1 are stored as given (see the module doc)
_UNIT_TOLERANCE = 1e-4

Embeddings = Mapping[str, "np.ndarray | None"]


@dataclasses.dataclass(frozen=True)
class SearchHit:
    """One match of a query.

    Attributes:
        id: the item's id (its path unless another id was given when adding it).
        score: the score the hits are ranked by (blended, or the one dimension's).
        scores: every indexed dimension's score of the pair (``None``: cannot score).
        position: the item's insertion position in the index.
    """

    id: str
    score: float
    scores: Mapping[str, float | None]
    position: int

    def __post_init__(self) -> None:
        object.__setattr__(self, "scores", types.MappingProxyType(dict(self.scores)))

    def to_dict(self) -> dict[str, object]:
        """A JSON-ready dictionary."""
        return {"id": self.id, "score": self.score, "scores": dict(self.scores), "position": self.position}

    def __repr__(self) -> str:
        scores = ", ".join(f"{k}={'None' if v is None else f'{v:.4f}'}" for k, v in self.scores.items())
        return f"SearchHit(id={self.id!r}, score={self.score:.4f}, {scores}, position={self.position})"


# -- per-dimension stores ----------------------------------------------------------


class _Store(abc.ABC):
    """One dimension's embeddings of every item, with fast scoring of a query against all."""

    kind: ClassVar[str]
    #: whether :meth:`top` is faster than scoring every item
    searchable: ClassVar[bool] = True

    def __init__(self, plugin: DimensionPlugin) -> None:
        self.plugin = plugin
        self.name = plugin.name

    @abc.abstractmethod
    def __len__(self) -> int: ...

    @abc.abstractmethod
    def add(self, column: DedupColumn) -> None:
        """Append the column's embeddings (checked and stacked by :class:`DedupColumn`)."""

    @abc.abstractmethod
    def truncate(self, n: int) -> None:
        """Keep the first ``n`` items (undoes a partial add)."""

    @abc.abstractmethod
    def take(self, positions: np.ndarray) -> Any:
        """The stored embeddings of these items, stacked as in a :class:`DedupColumn`."""

    def exact(self, query: np.ndarray | None, positions: np.ndarray) -> np.ndarray:
        """Exact scores of the query against these items: :meth:`DedupColumn.pair_scores`."""
        taken = self.take(positions)
        if self.plugin.embedding_kind == "other":
            data: Any = [query, *taken]
        else:
            data = np.concatenate([np.asarray(query, taken.dtype)[None], taken])
        column = _column(self, data)
        return column.pair_scores(np.zeros(len(positions), np.int64), np.arange(1, len(positions) + 1))

    @abc.abstractmethod
    def prepare(self, query: np.ndarray | None) -> Any:
        """The query in the store's fast form (checked against the stored shape)."""

    @abc.abstractmethod
    def all_scores(self, query: Any) -> np.ndarray:
        """Fast scores of the query against every item (float64; NaN: cannot score)."""

    def top(self, query: Any, m: int) -> tuple[np.ndarray, np.ndarray, float]:
        """About the ``m`` items with the best fast scores: ``(positions, fast scores, bound)``.

        Every item not in ``positions`` has a fast score of at most ``bound``
        (``-inf`` when every item is returned).
        """
        positions, scores = _top(np.nan_to_num(self.all_scores(query), nan=-np.inf), m)
        return positions, scores, _bound(scores, m, len(self))

    @property
    def error(self) -> float:
        """Largest difference between a fast score and the exact score."""
        return 0.0

    @abc.abstractmethod
    def arrays(self) -> dict[str, np.ndarray]:
        """The stored data as named arrays (for :meth:`ImageIndex.save`; may be views)."""

    @abc.abstractmethod
    def restore(self, arrays: Mapping[str, np.ndarray]) -> None:
        """Load the arrays written by :meth:`arrays` into an empty store."""


def _bound(best: np.ndarray, m: int, n: int) -> float:
    """The best score an item outside a top-``m`` list (sorted, best first) of ``n`` items can have."""
    return float(best[-1]) if m < n else -np.inf


def _top(scores: np.ndarray, m: int) -> tuple[np.ndarray, np.ndarray]:
    m = min(m, len(scores))
    part = np.argpartition(-scores, m - 1)[:m] if m < len(scores) else np.arange(len(scores))
    part = part[np.lexsort((part, -scores[part]))]
    return part.astype(np.int64), scores[part]


class _FaissStore(_Store):
    """Embeddings held in a flat faiss index (created with the first embedding)."""

    def __init__(self, plugin: DimensionPlugin) -> None:
        super().__init__(plugin)
        self.index: Any = None

    def __len__(self) -> int:
        return 0 if self.index is None else int(self.index.ntotal)

    def truncate(self, n: int) -> None:
        if len(self) > n:
            self.index.remove_ids(np.arange(n, len(self), dtype=np.int64))


class _BitsStore(_FaissStore):
    kind = "bits"

    def __init__(self, plugin: DimensionPlugin) -> None:
        super().__init__(plugin)
        self.shape: tuple[int, int] | None = None  # (rows, nbytes)
        self.bits_per_row = bits_per_row(plugin)

    def _check_shape(self, shape: tuple[int, ...], what: str) -> None:
        if self.shape is None:
            self.shape = (int(shape[0]), int(shape[1]))
            self.index = _faiss().IndexBinaryFlat(shape[0] * shape[1] * 8)
        elif tuple(shape) != self.shape:
            raise InputError(
                f"{what} {self.name!r} embedding has shape {tuple(shape)}; this index holds {self.shape}; "
                "embed with the same configuration as the index"
            )

    def add(self, column: DedupColumn) -> None:
        data: np.ndarray = column.data  # type: ignore[assignment]
        self._check_shape(data.shape[1:], "an added")
        self.index.add(np.ascontiguousarray(data.reshape(len(data), -1)))

    def view(self) -> np.ndarray:
        """The stored codes ``(n, rows, nbytes)``, without a copy (valid until the next add)."""
        assert self.shape is not None
        flat = _faiss().rev_swig_ptr(self.index.xb.data(), len(self) * self.shape[0] * self.shape[1])
        return flat.reshape(len(self), *self.shape)

    def take(self, positions: np.ndarray) -> np.ndarray:
        return self.view()[positions]

    def prepare(self, query: np.ndarray | None) -> np.ndarray:
        array = np.asarray(query)
        if query is None or array.dtype != np.uint8 or array.ndim != 2:
            raise InputError(f"the query's {self.name!r} embedding must be a uint8 array (rows, nbytes), got {_describe(query)}")
        self._check_shape(array.shape, "the query's")
        return np.ascontiguousarray(array.reshape(1, -1))

    def _to_score(self, distances: np.ndarray) -> np.ndarray:
        assert self.shape is not None
        return 1.0 - np.asarray(distances, np.float64) / (self.shape[0] * (self.bits_per_row or 8 * self.shape[1]))

    def all_scores(self, query: np.ndarray) -> np.ndarray:
        assert self.shape is not None
        _, dist, ids = self.index.range_search(query, self.shape[0] * self.shape[1] * 8 + 1)
        out = np.empty(len(self))
        out[ids] = self._to_score(dist)
        return out

    def top(self, query: np.ndarray, m: int) -> tuple[np.ndarray, np.ndarray, float]:
        dist, ids = self.index.search(query, min(m, len(self)))
        best = self._to_score(dist[0])
        return ids[0].astype(np.int64), best, _bound(best, m, len(self))

    @property
    def error(self) -> float:
        return 1e-9

    def arrays(self) -> dict[str, np.ndarray]:
        assert self.shape is not None
        return {"codes": self.view()}

    def restore(self, arrays: Mapping[str, np.ndarray]) -> None:
        codes = arrays["codes"]
        self.add(DedupColumn(self.name, "bits", codes, bits_per_row=self.bits_per_row))


class _VectorStore(_FaissStore):
    kind = "vector"

    def _check_dim(self, d: int, what: str) -> None:
        if self.index is None:
            self.index = _faiss().IndexFlatIP(d)
        elif d != self.index.d:
            raise InputError(
                f"{what} {self.name!r} embedding has {d} values; this index holds {self.index.d}-d vectors; "
                "embed with the same model as the index"
            )

    def add(self, column: DedupColumn) -> None:
        data: np.ndarray = column.data  # type: ignore[assignment]
        self._check_dim(data.shape[1], "an added")
        self.index.add(_near_unit(data))

    def view(self) -> np.ndarray:
        """The stored vectors ``(n, d)``, without a copy (valid until the next add)."""
        return _faiss().rev_swig_ptr(self.index.get_xb(), len(self) * self.index.d).reshape(len(self), self.index.d)

    def take(self, positions: np.ndarray) -> np.ndarray:
        return self.view()[positions]

    def prepare(self, query: np.ndarray | None) -> np.ndarray:
        array = np.asarray(query)
        if query is None or array.dtype.kind != "f" or array.ndim != 1:
            raise InputError(f"the query's {self.name!r} embedding must be a 1-d float vector, got {_describe(query)}")
        self._check_dim(len(array), "the query's")
        return _near_unit(array[None, :])

    def all_scores(self, query: np.ndarray) -> np.ndarray:
        _, sims, ids = self.index.range_search(query, -3.0)  # every item: unit vectors have IP >= -1
        out = np.empty(len(self))
        out[ids] = sims
        return out

    def top(self, query: np.ndarray, m: int) -> tuple[np.ndarray, np.ndarray, float]:
        sims, ids = self.index.search(query, min(m, len(self)))
        best = sims[0].astype(np.float64)
        return ids[0].astype(np.int64), best, _bound(best, m, len(self))

    @property
    def error(self) -> float:
        # float32 dot product vs the float64 cosine, for norms within _UNIT_TOLERANCE of 1
        return (self.index.d if self.index is not None else 1) * 2.0**-23 + 2.5 * _UNIT_TOLERANCE

    def arrays(self) -> dict[str, np.ndarray]:
        return {"vectors": self.view()}

    def restore(self, arrays: Mapping[str, np.ndarray]) -> None:
        self.add(DedupColumn(self.name, "vector", arrays["vectors"]))


def _near_unit(rows: np.ndarray) -> np.ndarray:
    """float32 rows, L2-normalised where their norm is further than the tolerance from 1."""
    rows = np.asarray(rows, np.float32)
    norms = np.sqrt(np.einsum("ij,ij->i", rows.astype(np.float64), rows.astype(np.float64)))
    off = np.abs(norms - 1.0) > _UNIT_TOLERANCE
    if off.any():
        rows = rows.copy()
        rows[off] = l2_normalize(rows[off])
    return np.ascontiguousarray(rows)


class _VariantBitsStore(_Store):
    """Hashes of ``V`` variant groups (``plugin.bit_variants``): best-alignment scores.

    The score of query ``q`` and item ``x`` is ``max over v of max(m(q_v, x_0), m(q_0, x_v))``
    (see :attr:`DimensionPlugin.bit_variants`). Two flat binary indexes: ``base`` holds
    every item's group 0, ``rest`` its other groups. ``m(q_v, x_0)`` for all ``v`` is
    one faiss search of the ``V`` query groups in ``base``; ``m(q_0, x_v)`` one search of
    ``q_0`` in ``rest``. Candidates are then scored with the plugin's ``score``.
    """

    kind = "bit_variants"

    def __init__(self, plugin: DimensionPlugin) -> None:
        super().__init__(plugin)
        self.variants = int(plugin.bit_variants or 1)
        self.base = _BitsStore(plugin)
        self.rest = _BitsStore(plugin)

    def __len__(self) -> int:
        return len(self.base)

    def _groups(self, data: np.ndarray, what: str) -> np.ndarray:
        """``(n, V, K, nbytes)`` from ``(n, V * K, nbytes)``."""
        if data.dtype != np.uint8 or data.ndim != 3 or data.shape[1] % self.variants:
            raise InputError(
                f"{what} {self.name!r} embeddings must be uint8 arrays (rows, nbytes) with rows a multiple of "
                f"{self.variants} variants, got {_describe(data[0] if len(data) else data)}"
            )
        return data.reshape(len(data), self.variants, -1, data.shape[2])

    def add(self, column: DedupColumn) -> None:
        try:
            stacked = np.stack([np.asarray(e) for e in column.data])  # type: ignore[attr-defined]
        except ValueError as exc:
            raise InputError(f"the {self.name!r} embeddings differ in shape: {exc}") from None
        groups = self._groups(stacked, "added")
        n, v, rows, nbytes = groups.shape
        self.base.add(DedupColumn(self.name, "bits", groups[:, 0], bits_per_row=self.base.bits_per_row))
        rest = np.ascontiguousarray(groups[:, 1:]).reshape(n * (v - 1), rows, nbytes)
        try:
            self.rest.add(DedupColumn(self.name, "bits", rest, bits_per_row=self.base.bits_per_row))
        except InputError:
            self.base.truncate(len(self.base) - n)
            raise

    def truncate(self, n: int) -> None:
        self.base.truncate(n)
        self.rest.truncate(n * (self.variants - 1))

    def take(self, positions: np.ndarray) -> np.ndarray:
        base = self.base.take(positions)[:, None]
        if self.variants == 1:
            return base[:, 0]
        rest = self.rest.view().reshape(len(self), self.variants - 1, *base.shape[2:])[positions]
        return np.concatenate([base, rest], axis=1).reshape(len(positions), -1, base.shape[-1])

    def prepare(self, query: np.ndarray | None) -> np.ndarray:
        array = np.asarray(query)
        if query is None or array.ndim != 2:
            raise InputError(f"the query's {self.name!r} embedding must be a uint8 array (rows, nbytes), got {_describe(query)}")
        groups = self._groups(array[None], "the query's")[0]
        for store in (self.base, self.rest):
            store._check_shape(groups.shape[1:], "the query's")
        return np.ascontiguousarray(groups.reshape(self.variants, -1))

    def top(self, query: np.ndarray, m: int) -> tuple[np.ndarray, np.ndarray, float]:
        n = len(self)
        dist, ids = self.base.index.search(query, min(m, n))  # q_v against every x_0
        bounds = [float(self.base._to_score(dist[:, -1]).max()) if m < n else -np.inf]
        found = [ids.ravel()]
        if self.variants > 1:  # q_0 against every other group of every item
            dist, ids = self.rest.index.search(query[:1], min(m, len(self.rest)))
            bounds.append(float(self.base._to_score(dist[0, -1])) if m < len(self.rest) else -np.inf)
            found.append(ids.ravel() // (self.variants - 1))
        positions = np.unique(np.concatenate(found))
        return positions, self._alignment_scores(query, self.take(positions)), max(bounds)

    def _alignment_scores(self, query: np.ndarray, codes: np.ndarray) -> np.ndarray:
        """Best-alignment scores of the prepared query against stacked embeddings, vectorised."""
        groups = self._groups(codes, "stored")  # (c, V, K, nbytes)
        q = query.reshape(1, *groups.shape[1:])
        bits = self.base.bits_per_row

        def mean_similarity(a: np.ndarray, b: np.ndarray) -> np.ndarray:
            a, b = np.broadcast_arrays(a, b)
            return hamming_similarity(a, b, bits).mean(axis=-1)  # over the K rows of a group

        return np.maximum(mean_similarity(q, groups[:, :1]).max(axis=1), mean_similarity(q[:, :1], groups).max(axis=1))

    def all_scores(self, query: np.ndarray) -> np.ndarray:
        n, v = len(self), self.variants
        lims, dist, ids = self.base.index.range_search(query, query.shape[1] * 8 + 1)  # every item, per group
        scores = np.empty((v, n))
        scores[np.repeat(np.arange(v), np.diff(lims.astype(np.int64))), ids] = self.base._to_score(dist)
        best = scores.max(axis=0)
        if v > 1:
            best = np.maximum(best, self.rest.all_scores(query[:1]).reshape(n, v - 1).max(axis=1))
        return best

    @property
    def error(self) -> float:
        return 1e-9

    def arrays(self) -> dict[str, np.ndarray]:
        return {"codes": self.take(np.arange(len(self)))}

    def restore(self, arrays: Mapping[str, np.ndarray]) -> None:
        self.add(DedupColumn(self.name, "other", list(arrays["codes"]), score=self.plugin.score))


class _OtherStore(_Store):
    kind = "other"
    searchable = False

    def __init__(self, plugin: DimensionPlugin) -> None:
        super().__init__(plugin)
        self.items: list[np.ndarray | None] = []

    def __len__(self) -> int:
        return len(self.items)

    def add(self, column: DedupColumn) -> None:
        self.items.extend(column.data)  # type: ignore[arg-type]

    def truncate(self, n: int) -> None:
        del self.items[n:]

    def take(self, positions: np.ndarray) -> list[np.ndarray | None]:
        return [self.items[p] for p in positions.tolist()]

    def prepare(self, query: np.ndarray | None) -> np.ndarray | None:
        return query

    def all_scores(self, query: np.ndarray | None) -> np.ndarray:
        score = self.plugin.score
        return np.array([np.nan if (s := score(query, item)) is None else s for item in self.items], np.float64)

    def arrays(self) -> dict[str, np.ndarray]:
        """``counts`` (rows per item, -1 for ``None``) and ``rows``: every item's rows, concatenated."""
        present = [np.asarray(e) for e in self.items if e is not None]
        shapes = {e.shape[1:] for e in present if e.ndim >= 1}
        if len(shapes) > 1 or any(e.ndim < 1 for e in present) or len({e.dtype for e in present}) > 1:
            raise InputError(f"the {self.name!r} embeddings cannot be saved: they differ in shape or dtype")
        counts = np.array([-1 if e is None else len(e) for e in self.items], np.int64)
        rows = np.concatenate(present) if present else np.empty((0,), np.float32)
        return {"counts": counts, "rows": rows}

    def restore(self, arrays: Mapping[str, np.ndarray]) -> None:
        counts, rows = arrays["counts"], arrays["rows"]
        ends = np.cumsum(np.maximum(counts, 0))
        if len(rows) != (ends[-1] if len(ends) else 0):
            raise InputError(f"the {self.name!r} arrays are inconsistent: {len(rows)} rows for counts summing to {ends[-1]}")
        starts = ends - np.maximum(counts, 0)
        self.items.extend(None if c < 0 else rows[s:e] for c, s, e in zip(counts.tolist(), starts.tolist(), ends.tolist()))


_STORES: dict[str, type[_Store]] = {cls.kind: cls for cls in (_BitsStore, _VectorStore, _OtherStore)}


def _describe(value: object) -> str:
    if isinstance(value, np.ndarray):
        return f"{value.dtype} array of shape {value.shape}"
    return type(value).__name__


# -- the index ------------------------------------------------------------------------


class ImageIndex:
    """Embeddings of a catalogue of images, searchable by similarity to a query image.

    Args:
        prism: the :class:`~imageprism.ImagePrism` whose dimensions are indexed and
            which embeds added and query images (default: ``ImagePrism()``, hash only).

    One index may be shared by several threads: adds, searches and saves take a
    lock, so they run one at a time (embedding, outside the lock, overlaps).

    >>> import numpy as np
    >>> index = ImageIndex()
    >>> ramp = np.tile(np.arange(64, dtype=np.uint8) * 4, (64, 1))
    >>> index.add([ramp, ramp.T, 255 - ramp], ids=["ramp", "transposed", "inverted"])
    ()
    >>> [hit.id for hit in index.search(ramp, k=2)]
    ['ramp', 'transposed']
    """

    def __init__(self, prism: ImagePrism | None = None) -> None:
        self.prism = prism if prism is not None else ImagePrism()
        self._stores: dict[str, _Store] = {
            name: _store_class(plugin)(plugin) for name, plugin in self.prism.plugins.items()
        }
        self._ids: list[str] = []
        self._positions: dict[str, int] = {}
        self._lock = threading.RLock()  # searches read faiss' memory without a copy: no add meanwhile

    # -- building -------------------------------------------------------------------

    @classmethod
    def build(
        cls,
        images: Iterable[ImageInput],
        *,
        prism: ImagePrism | None = None,
        ids: Sequence[str] | None = None,
        fps: float = 1.0,
        on_error: OnError = "raise",
    ) -> ImageIndex:
        """A new index holding ``images`` (see :meth:`add`); failures raise unless ``on_error="skip"``."""
        index = cls(prism)
        index.add(images, ids=ids, fps=fps, on_error=on_error)
        return index

    def add(
        self,
        images: Iterable[ImageInput],
        *,
        ids: Sequence[str] | None = None,
        fps: float = 1.0,
        on_error: OnError = "raise",
    ) -> tuple[Failure, ...]:
        """Embed ``images`` and add them; returns the inputs that failed (``on_error="skip"``).

        Each item's id is ``ids[i]`` if given, else the path (``str`` or
        ``os.PathLike`` inputs); other inputs need ``ids``. Ids are unique within
        an index. A path with a video extension (see :mod:`imageprism._video`) adds
        its frames sampled at ``fps`` per second, with ids ``"<id>@<seconds>s"``
        (e.g. ``"clip.mp4@2.50s"``). Nothing is added if an error is raised.
        """
        if on_error not in ("raise", "skip"):
            raise InputError(f"on_error={on_error!r} is invalid; use 'raise' or 'skip'")
        items = list(images)
        if ids is not None:
            ids = list(ids)
            if len(ids) != len(items) or not all(isinstance(i, str) for i in ids):
                raise InputError(f"ids must be {len(items)} strings, one per input; got {len(ids)} values")
        names = [self._default_id(item, i, ids) for i, item in enumerate(items)]
        embedded = embed_inputs(self.prism, items, names, fps=fps, on_error=on_error)
        ok = [j for j, e in enumerate(embedded.embeddings) if e is not None]
        self.add_embeddings([embedded.embeddings[j] for j in ok], ids=[embedded.labels[j] for j in ok])  # type: ignore[misc]
        return tuple(dataclasses.replace(f, index=embedded.origins[f.index]) for f in embedded.failures)

    def _default_id(self, item: object, i: int, ids: Sequence[str] | None) -> str:
        if ids is not None:
            return ids[i]
        if isinstance(item, (str, os.PathLike)):
            return os.fspath(item)
        raise InputError(f"input {i} ({describe_input(item)}) has no path to serve as its id; pass ids=[...]")

    def add_embeddings(self, embeddings: Sequence[Embeddings], *, ids: Sequence[str]) -> None:
        """Add precomputed embeddings (from :meth:`ImagePrism.embed <imageprism.ImagePrism.embed>`
        of an ``ImagePrism`` configured like this index's), one mapping per item."""
        embeddings, ids = list(embeddings), list(ids)
        if len(embeddings) != len(ids):
            raise InputError(f"got {len(embeddings)} embeddings but {len(ids)} ids; give one id per embedding")
        with self._lock:
            self._add_embeddings(embeddings, ids)

    def _add_embeddings(self, embeddings: list[Embeddings], ids: list[str]) -> None:
        self._check_new_ids(ids)
        if not ids:
            return
        columns = {}
        for name, store in self._stores.items():
            values = [_entry(e, name, i) for i, e in enumerate(embeddings)]
            if store.kind != "other":
                missing = [ids[i] for i, v in enumerate(values) if v is None]
                if missing:
                    raise InputError(f"{len(missing)} items have no {name!r} embedding (first: {missing[0]!r})")
            columns[name] = _column(store, values)
        try:
            for name, store in self._stores.items():
                store.add(columns[name])
        except ImagePrismError:
            for store in self._stores.values():
                store.truncate(len(self._ids))
            raise
        self._positions.update((name, len(self._ids) + i) for i, name in enumerate(ids))
        self._ids.extend(ids)

    def _check_new_ids(self, ids: Sequence[str]) -> None:
        seen: set[str] = set()
        for name in ids:
            if not isinstance(name, str) or not name:
                raise InputError(f"ids must be non-empty strings, got {name!r}")
            if name in self._positions or name in seen:
                raise InputError(f"id {name!r} is already in the index; ids must be unique (pass ids=[...] to rename)")
            seen.add(name)

    # -- inspection -------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._ids)

    def __contains__(self, item_id: object) -> bool:
        return item_id in self._positions

    @property
    def ids(self) -> tuple[str, ...]:
        """Item ids, in insertion order."""
        return tuple(self._ids)

    @property
    def dimensions(self) -> tuple[str, ...]:
        """The indexed dimensions."""
        return tuple(self._stores)

    def embedding(self, item_id: str) -> dict[str, np.ndarray | None]:
        """The stored embeddings of one item (a vector not of unit length comes back normalised)."""
        with self._lock:
            if item_id not in self._positions:
                raise InputError(f"id {item_id!r} is not in this index of {len(self)} items")
            position = np.array([self._positions[item_id]])
            return {name: store.take(position)[0] for name, store in self._stores.items()}

    def __repr__(self) -> str:
        return f"ImageIndex({len(self)} items, dimensions={list(self._stores)}, weights={dict(self.prism.weights)})"

    # -- search -------------------------------------------------------------------------

    def search(
        self,
        image: ImageInput,
        *,
        k: int = 10,
        dimension: Dimension | str | None = None,
        weights: Mapping[Dimension | str, float] | None = None,
        profile: Profile | str | os.PathLike[str] | None = None,
    ) -> list[SearchHit]:
        """The ``k`` items most similar to ``image``, best first (exact; see the module doc).

        Ranked by the index's own weights, or by one ``dimension``, by other
        ``weights`` over the indexed dimensions, or by a ``profile`` (its weights
        and missing policy; its settings must match the index's). Every hit has
        the scores of all indexed dimensions.
        """
        if is_video(image):
            raise InputError(
                f"the query {describe_input(image)} is a video; search with one image, e.g. a frame from "
                "imageprism._video.sample_frames(path, fps=1)"
            )
        return self.search_embedding(
            self.prism.embed(image), k=k, dimension=dimension, weights=weights, profile=profile
        )

    def search_embedding(
        self,
        embedding: Embeddings,
        *,
        k: int = 10,
        dimension: Dimension | str | None = None,
        weights: Mapping[Dimension | str, float] | None = None,
        profile: Profile | str | os.PathLike[str] | None = None,
    ) -> list[SearchHit]:
        """Like :meth:`search`, for a query already embedded with this index's configuration."""
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ConfigError(f"k={k!r} is invalid; use a positive integer (the number of hits)")
        ranking, missing = self._ranking(dimension, weights, profile)
        query = {name: _entry(embedding, name, "query") for name in self._stores}
        with self._lock:
            if not len(self):
                return []
            fast = {name: self._stores[name].prepare(query[name]) for name in ranking}
            return self._exact_top(query, fast, k, ranking, missing)

    def _ranking(
        self,
        dimension: Dimension | str | None,
        weights: Mapping[Dimension | str, float] | None,
        profile: Profile | str | os.PathLike[str] | None,
    ) -> tuple[dict[str, float], str]:
        """The weights (positive only) and missing policy a query ranks by."""
        given = [name for name, v in (("dimension", dimension), ("weights", weights), ("profile", profile)) if v is not None]
        if len(given) > 1:
            raise ConfigError(f"give at most one of dimension=, weights= and profile=, not {' and '.join(given)}")
        missing = self.prism.missing
        if dimension is not None:
            chosen = {parse_dimension(dimension): 1.0}
        elif weights is not None:
            chosen = normalize_weights(cast("Mapping[object, object]", weights), source="search(weights=...)")
        elif profile is not None:
            query_prism = ImagePrism(profile=profile)
            self._check_compatible(query_prism, what=f"profile {query_prism.profile.name!r}")  # type: ignore[union-attr]
            chosen, missing = dict(query_prism.weights), query_prism.missing
        else:
            chosen = dict(self.prism.weights)
        absent = [name for name in chosen if name not in self._stores]
        if absent:
            raise ConfigError(
                f"dimension {absent[0]!r} is not in this index (indexed: {', '.join(self._stores)}); "
                "rank by indexed dimensions or build an index with it"
            )
        return {name: w for name, w in chosen.items() if w > 0}, missing

    def _exact_top(
        self,
        query: Mapping[str, np.ndarray | None],
        fast: Mapping[str, Any],
        k: int,
        weights: Mapping[str, float],
        missing: str,
    ) -> list[SearchHit]:
        n = len(self)
        k = min(k, n)
        stores = {name: self._stores[name] for name in weights}
        slack = 2 * max(store.error for store in stores.values()) + 1e-12
        if len(stores) == 1 and next(iter(stores.values())).searchable:
            (name, single), = stores.items()
            m = max(2 * k, k + 16)
            while True:  # grow m until no item left out can come within `slack` of the k-th
                positions, best, bound = single.top(fast[name], m)
                kth = float(np.sort(best)[::-1][k - 1])
                if bound < kth - slack:
                    break
                m *= 4
        else:
            all_fast = blend_scores({name: s.all_scores(fast[name]) for name, s in stores.items()}, weights, missing, n)
            kth = _top(all_fast, k)[1][-1]
            positions = np.flatnonzero(all_fast >= kth - slack)
            best = all_fast[positions]
        # Every item whose exact score reaches the k-th best exact score has a fast score
        # within `slack` of the k-th best fast score, so it is among the candidates.
        keep = best >= kth - slack
        positions = positions[keep]
        exact = blend_scores({name: s.exact(query[name], positions) for name, s in stores.items()}, weights, missing, len(positions))
        if np.any(np.abs(exact - best[keep]) > slack):  # a plugin whose embedding_kind misdescribes its score
            raise RuntimeError(f"fast and exact scores of {list(stores)} disagree beyond {slack:g}; check embedding_kind")
        order = np.lexsort((positions, -exact))[:k]
        hits = []
        for p, score in zip(positions[order].tolist(), exact[order].tolist()):
            scores = {name: store.plugin.score(query[name], store.take(np.array([p]))[0]) for name, store in self._stores.items()}
            hits.append(SearchHit(self._ids[p], blend(scores, weights, missing), scores, p))
        return hits

    # -- compatibility -------------------------------------------------------------------

    def _check_compatible(self, prism: ImagePrism, *, what: str) -> None:
        """Refuse a prism whose shared dimensions would embed differently from this index."""
        for name, plugin in prism.plugins.items():
            store = self._stores.get(name)
            if store is not None and store.plugin.cache_token != plugin.cache_token:
                raise ConfigError(
                    f"{what} configures {name!r} differently from this index: "
                    f"{plugin.cache_token!r} vs the index's {store.plugin.cache_token!r}; "
                    "query with the configuration the index was built with"
                )

    # -- files ----------------------------------------------------------------------------

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the index to the directory ``path`` (created; an older index there is replaced).

        Returns the directory. Refuses a non-empty directory that is not an index.
        """
        folder = Path(os.fspath(path))
        if folder.exists() and not folder.is_dir():
            raise InputError(f"cannot save the index to {str(folder)!r}: it is a file; give a directory path")
        if folder.is_dir() and any(folder.iterdir()) and not (folder / MANIFEST).is_file():
            raise InputError(f"cannot save the index to {str(folder)!r}: it is a non-empty directory without {MANIFEST}")
        folder.mkdir(parents=True, exist_ok=True)
        (folder / MANIFEST).unlink(missing_ok=True)  # an index without its manifest is never read half-written
        with self._lock:
            return self._write(folder)

    def _write(self, folder: Path) -> Path:
        dims = {}
        for name, store in self._stores.items():
            files = {}
            for key, array in (store.arrays() if len(store) else {}).items():
                filename = f"{name}.{key}.npy"
                np.save(folder / filename, np.ascontiguousarray(array), allow_pickle=False)
                files[key] = filename
            dims[name] = {"kind": store.kind, "cache_token": store.plugin.cache_token, "files": files}
        manifest = {
            "format": _FORMAT_NAME,
            "format_version": FORMAT_VERSION,
            "imageprism_version": __version__,
            "count": len(self),
            "dimensions": dims,
            "weights": dict(self.prism.weights),
            "missing": self.prism.missing,
            "profile": _profile_ref(self.prism),
            "ids": self._ids,
        }
        tmp = folder / (MANIFEST + ".tmp")
        tmp.write_text(json.dumps(manifest, indent=1), encoding="utf-8")
        tmp.replace(folder / MANIFEST)
        return folder

    @classmethod
    def load(cls, path: str | os.PathLike[str], *, prism: ImagePrism | None = None) -> ImageIndex:
        """Read an index written by :meth:`save`.

        Without ``prism``, the ``ImagePrism`` is rebuilt from the saved profile and
        weights (dimension configs given with ``config=`` are not saved: pass the
        same ``prism`` then). Either way, every dimension's ``cache_token`` must
        match the saved one.
        """
        folder = Path(os.fspath(path))
        manifest = _read_manifest(folder)
        if prism is None:
            prism = _prism_from_manifest(manifest, folder)
        index = cls(prism)
        saved = manifest["dimensions"]
        if sorted(saved) != sorted(index._stores):
            raise ConfigError(
                f"index {str(folder)!r} holds dimensions {sorted(saved)}; the given ImagePrism uses "
                f"{sorted(index._stores)}; pass an ImagePrism with the index's dimensions"
            )
        for name, store in index._stores.items():
            entry = saved[name]
            if entry.get("cache_token") != store.plugin.cache_token:
                raise ConfigError(
                    f"index {str(folder)!r} was built with {name!r} configured as {entry.get('cache_token')!r}, "
                    f"but this ImagePrism has {store.plugin.cache_token!r}; pass an ImagePrism configured like the index"
                )
        ids = manifest["ids"]
        count = manifest["count"]
        if not isinstance(ids, list) or len(ids) != count:
            raise InputError(f"index {str(folder)!r} is damaged: {MANIFEST} lists {len(ids)} ids for {count} items")
        for name, store in index._stores.items():
            files = saved[name].get("files", {})
            if count:
                store.restore({key: _load_array(folder / file) for key, file in files.items()})
            if len(store) != count:
                raise InputError(f"index {str(folder)!r} is damaged: {name!r} holds {len(store)} items, expected {count}")
        index._check_new_ids(ids)
        index._ids = list(ids)
        index._positions = {name: i for i, name in enumerate(ids)}
        return index


# -- helpers ----------------------------------------------------------------------------


def _store_class(plugin: DimensionPlugin) -> type[_Store]:
    """The store for a plugin's embeddings: by ``bit_variants`` (when above 1), else ``embedding_kind``."""
    if (plugin.bit_variants or 1) > 1:
        return _VariantBitsStore
    kind = plugin.embedding_kind
    if kind not in _STORES:
        raise ConfigError(f"dimension {plugin.name!r} declares embedding_kind={kind!r}; use one of {', '.join(_STORES)}")
    return _STORES[kind]


def bits_per_row(plugin: DimensionPlugin) -> int | None:
    """Meaningful bits per row of a ``"bits"`` plugin's embeddings (``None``: every bit of each byte)."""
    bits = plugin.bits_per_row
    return None if bits is None else int(bits)


def _entry(embedding: Embeddings, name: str, which: object) -> np.ndarray | None:
    if not isinstance(embedding, Mapping) or name not in embedding:
        have = ", ".join(embedding) if isinstance(embedding, Mapping) else type(embedding).__name__
        raise InputError(f"embedding {which} has no {name!r} entry (it has: {have}); embed it with the index's ImagePrism")
    return embedding[name]


def _column(store: _Store, values: list[np.ndarray | None] | np.ndarray) -> DedupColumn:
    """The store's embeddings as a dedup column (checked and stacked by the dedup's own helper)."""
    return columns_from_embeddings({store.name: values}, {store.name: store.plugin}, {store.name: 1.0})[0]


def _profile_ref(prism: ImagePrism) -> str | None:
    spec = prism.profile
    if spec is None:
        return None
    if spec.name in {p.value for p in Profile} and load_profile(spec.name).source == spec.source:
        return spec.name
    return str(spec.source.resolve())


def _read_manifest(folder: Path) -> dict[str, Any]:
    file = folder / MANIFEST
    if not file.is_file():
        hint = "" if folder.exists() else " (no such directory)"
        raise InputError(f"{str(folder)!r} is not an imageprism index{hint}: {MANIFEST} is missing; build one with ImageIndex.save")
    try:
        manifest = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"index {str(folder)!r}: {MANIFEST} cannot be read: {exc}") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != _FORMAT_NAME:
        raise InputError(f"{str(file)!r} is not an imageprism index manifest")
    version = manifest.get("format_version")
    if version != FORMAT_VERSION:
        raise InputError(
            f"index {str(folder)!r} has format version {version!r}; this imageprism {__version__} reads version "
            f"{FORMAT_VERSION}; rebuild the index with this version"
        )
    for key, kind in (("dimensions", dict), ("weights", dict), ("ids", list), ("count", int), ("missing", str)):
        if not isinstance(manifest.get(key), kind):
            raise InputError(f"index {str(folder)!r} is damaged: {MANIFEST} has no valid {key!r}")
    return manifest


def _prism_from_manifest(manifest: Mapping[str, Any], folder: Path) -> ImagePrism:
    profile = manifest.get("profile")
    try:
        if profile is not None:
            return ImagePrism(profile=profile, weights=manifest["weights"])
        return ImagePrism(weights=manifest["weights"])
    except ConfigError as exc:
        raise ConfigError(f"index {str(folder)!r}: cannot rebuild its ImagePrism ({exc}); pass prism=") from exc


def _load_array(file: Path) -> np.ndarray:
    try:
        return np.load(file, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise InputError(f"index file {str(file)!r} cannot be read: {exc}") from exc

