"""Search columns: one dimension's embeddings of every item, typed by layout.

A column is what dedup and the index both search. It holds the embeddings of
items ``0..n-1`` in arrays (appended block by block, truncated to undo a partial
add, compacted by :meth:`Column.keep` to remove items), owns the *exact* score of
its layout (:meth:`Column.pair_scores`), and exposes its arrays for persistence.
Searches over columns live beside it: :mod:`imageprism._search.range` (all pairs
within a threshold, for dedup) and :mod:`imageprism._search.topk` (the best items
for a query, for the index).

One class per :class:`~imageprism.dimensions.Layout` kind:

* :class:`BitsColumn` (``"bits"``): ``uint8`` codes ``(n, rows, nbytes)``, scored by
  :func:`~imageprism._math.best_alignment` (the plain mean over rows with one variant).
* :class:`VectorColumn` (``"vector"``): float vectors ``(n, d)``, scored by the cosine.
* :class:`PairwiseColumn` (``"pairwise"``): any embeddings (``None`` allowed), scored
  by the plugin's ``score`` one pair at a time.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Mapping, Sequence

import numpy as np

from imageprism._math import best_alignment, near_unit, row_norms
from imageprism.dimensions._base import DimensionPlugin, Layout
from imageprism.errors import InputError

__all__ = ["BitsColumn", "Column", "PairwiseColumn", "ScoreFn", "VectorColumn", "make_column", "plugin_column"]

#: a plugin's pair score (``None``: cannot score the pair)
ScoreFn = Callable[[np.ndarray | None, np.ndarray | None], "float | None"]
#: vectors whose norm is within this of 1 are stored as given by a ``unit`` column
UNIT_TOLERANCE = 1e-4


class _Rows:
    """A growable array of rows (amortised doubling); ``data`` is a view of the filled part."""

    def __init__(self) -> None:
        self._array: np.ndarray | None = None
        self.size = 0

    @property
    def data(self) -> np.ndarray | None:
        return None if self._array is None else self._array[: self.size]

    def append(self, rows: np.ndarray) -> None:
        if self._array is None or self.size == 0:
            self._array = np.ascontiguousarray(rows)  # adopt the first block without a copy
            self.size = len(rows)
            return
        need = self.size + len(rows)
        if need > len(self._array):
            grown = np.empty((max(need, 2 * len(self._array)), *self._array.shape[1:]), self._array.dtype)
            grown[: self.size] = self._array[: self.size]
            self._array = grown
        self._array[self.size : need] = rows
        self.size = need

    def truncate(self, n: int) -> None:
        self.size = min(self.size, n)

    def keep(self, mask: np.ndarray) -> None:
        if self._array is not None:
            kept = self._array[: self.size][mask]
            self._array, self.size = kept, len(kept)


def _describe(value: object) -> str:
    if isinstance(value, np.ndarray):
        return f"{value.dtype} array of shape {value.shape}"
    return type(value).__name__


class Column(abc.ABC):
    """One dimension's embeddings of items ``0..n-1``, with their exact pair score."""

    def __init__(self, name: str, layout: Layout, score: ScoreFn) -> None:
        self.name = name
        self.layout = layout
        self.score = score

    @property
    @abc.abstractmethod
    def kind(self) -> str:
        """The layout name written to index manifests: ``bits``, ``bit_variants``, ``vector`` or ``other``."""

    @abc.abstractmethod
    def __len__(self) -> int: ...

    @property
    def n(self) -> int:
        """The number of items."""
        return len(self)

    @abc.abstractmethod
    def append(self, values: Sequence[np.ndarray | None] | np.ndarray) -> None:
        """Append items (checked and stacked; nothing is appended when a check fails)."""

    @abc.abstractmethod
    def truncate(self, n: int) -> None:
        """Keep the first ``n`` items (undoes a partial add)."""

    @abc.abstractmethod
    def keep(self, mask: np.ndarray) -> None:
        """Keep the items where ``mask`` is true, in order (removes the others; positions shift)."""

    @abc.abstractmethod
    def take(self, positions: np.ndarray) -> np.ndarray | list[np.ndarray | None]:
        """The stored embeddings of these items."""

    @abc.abstractmethod
    def pair_scores(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """Exact scores of the item pairs ``(a[i], b[i])``, float64; NaN: cannot score."""

    @abc.abstractmethod
    def check_query(self, query: np.ndarray | None) -> np.ndarray | None:
        """The query in the column's stored form (checked against the stored shape)."""

    @abc.abstractmethod
    def query_scores(self, query: np.ndarray | None, positions: np.ndarray) -> np.ndarray:
        """Exact scores of a checked query against these items (the arithmetic of :meth:`pair_scores`)."""

    @abc.abstractmethod
    def arrays(self) -> dict[str, np.ndarray]:
        """The stored data as named arrays (for persistence; may be views)."""

    @abc.abstractmethod
    def restore(self, arrays: Mapping[str, np.ndarray]) -> None:
        """Append the items saved by :meth:`arrays`."""


class BitsColumn(Column):
    """Packed-bit codes ``(n, rows, nbytes)``, rows made of ``layout.variants`` groups."""

    def __init__(self, name: str, layout: Layout, score: ScoreFn) -> None:
        super().__init__(name, layout, score)
        self.variants = layout.variants
        self.bits_per_row = layout.bits_per_row
        self._rows = _Rows()
        self.shape: tuple[int, int] | None = None  # (rows, nbytes), fixed by the first item

    @property
    def kind(self) -> str:
        return "bits" if self.variants == 1 else "bit_variants"

    def __len__(self) -> int:
        return self._rows.size

    @property
    def data(self) -> np.ndarray:
        """The codes ``(n, rows, nbytes)`` (a view, valid until the next change)."""
        data = self._rows.data
        return np.zeros((0, *(self.shape or (self.variants, 1))), np.uint8) if data is None else data

    def _check_shape(self, shape: tuple[int, ...], what: str) -> None:
        if self.shape is not None and tuple(shape) != self.shape:
            raise InputError(
                f"{what} {self.name!r} embedding has shape {tuple(shape)}; this index holds {self.shape}; "
                "embed with the same configuration as the index"
            )

    def append(self, values: Sequence[np.ndarray | None] | np.ndarray) -> None:
        if len(values) == 0:
            return
        data = _stack(self.name, values)
        if data.dtype != np.uint8 or data.ndim != 3 or data.shape[1] % self.variants:
            raise InputError(
                f"{self.name!r} embeddings must stack to a uint8 array (n, rows, nbytes) with rows a multiple "
                f"of {self.variants} variants, got {data.dtype} {data.shape}"
            )
        if not len(data):
            return
        self._check_shape(data.shape[1:], "an added")
        self.shape = (int(data.shape[1]), int(data.shape[2]))
        self._rows.append(data)

    def truncate(self, n: int) -> None:
        self._rows.truncate(n)

    def keep(self, mask: np.ndarray) -> None:
        self._rows.keep(mask)

    def take(self, positions: np.ndarray) -> np.ndarray:
        return self.data[positions]

    def pair_scores(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        if len(a) == 0:
            return np.empty(0)
        data = self.data
        return best_alignment(data[a], data[b], self.variants, self.bits_per_row)

    def check_query(self, query: np.ndarray | None) -> np.ndarray:
        array = np.asarray(query)
        if query is None or array.dtype != np.uint8 or array.ndim != 2 or array.shape[0] % self.variants:
            raise InputError(
                f"the query's {self.name!r} embedding must be a uint8 array (rows, nbytes) with rows a multiple "
                f"of {self.variants} variants, got {_describe(query)}"
            )
        self._check_shape(array.shape, "the query's")
        return array

    def query_scores(self, query: np.ndarray | None, positions: np.ndarray) -> np.ndarray:
        if len(positions) == 0:
            return np.empty(0)
        codes = self.take(positions)
        return best_alignment(np.broadcast_to(np.asarray(query), codes.shape), codes, self.variants, self.bits_per_row)

    def arrays(self) -> dict[str, np.ndarray]:
        return {"codes": self.data}

    def restore(self, arrays: Mapping[str, np.ndarray]) -> None:
        self.append(arrays["codes"])


class VectorColumn(Column):
    """Float vectors ``(n, d)`` scored by their cosine.

    With ``unit=True`` (the index) vectors are stored as float32, L2-normalised
    first when their norm is further than :data:`UNIT_TOLERANCE` from 1, so an inner
    product is a cosine; otherwise (dedup) they are stored as given.
    """

    def __init__(self, name: str, layout: Layout, score: ScoreFn, *, unit: bool = False) -> None:
        super().__init__(name, layout, score)
        self.unit = unit
        self._rows = _Rows()
        self._norms = _Rows()

    @property
    def kind(self) -> str:
        return "vector"

    def __len__(self) -> int:
        return self._rows.size

    @property
    def d(self) -> int | None:
        """The vector length (``None`` while empty)."""
        data = self._rows.data
        return None if data is None else int(data.shape[1])

    @property
    def data(self) -> np.ndarray:
        """The vectors ``(n, d)`` (a view, valid until the next change)."""
        data = self._rows.data
        return np.zeros((0, 1), np.float32) if data is None else data

    @property
    def norms(self) -> np.ndarray:
        """Float64 L2 norm of each stored vector."""
        norms = self._norms.data
        return np.empty(0) if norms is None else norms

    def _check_dim(self, d: int, what: str) -> None:
        if self.d is not None and len(self) and d != self.d:
            raise InputError(
                f"{what} {self.name!r} embedding has {d} values; this index holds {self.d}-d vectors; "
                "embed with the same model as the index"
            )

    def append(self, values: Sequence[np.ndarray | None] | np.ndarray) -> None:
        if len(values) == 0:
            return
        data = _stack(self.name, values)
        if data.dtype.kind != "f" or data.ndim != 2:
            raise InputError(f"{self.name!r} embeddings must stack to a float array (n, d), got {data.dtype} {data.shape}")
        if not len(data):
            return
        self._check_dim(data.shape[1], "an added")
        if self.unit:
            data = near_unit(data, UNIT_TOLERANCE)
        self._rows.append(data)
        self._norms.append(row_norms(data))

    def truncate(self, n: int) -> None:
        self._rows.truncate(n)
        self._norms.truncate(n)

    def keep(self, mask: np.ndarray) -> None:
        self._rows.keep(mask)
        self._norms.keep(mask)

    def take(self, positions: np.ndarray) -> np.ndarray:
        return self.data[positions]

    def pair_scores(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """``dot / (|a| |b|)`` in float64, clipped: the formula of :func:`~imageprism._math.cosine`
        (summed in a different order, so it can differ from it in the last bit)."""
        if len(a) == 0:
            return np.empty(0)
        data = self.data
        dots = np.einsum("ij,ij->i", data[a].astype(np.float64), data[b].astype(np.float64))
        return _cosines(dots, self.norms[a] * self.norms[b])

    def check_query(self, query: np.ndarray | None) -> np.ndarray:
        array = np.asarray(query)
        if query is None or array.dtype.kind != "f" or array.ndim != 1:
            raise InputError(f"the query's {self.name!r} embedding must be a 1-d float vector, got {_describe(query)}")
        self._check_dim(len(array), "the query's")
        return near_unit(array[None, :], UNIT_TOLERANCE)[0] if self.unit else array

    def query_scores(self, query: np.ndarray | None, positions: np.ndarray) -> np.ndarray:
        rows = self.take(positions).astype(np.float64)
        q = np.broadcast_to(np.asarray(query, np.float64), rows.shape)
        dots = np.einsum("ij,ij->i", rows, q)  # the arithmetic of pair_scores
        return _cosines(dots, self.norms[positions] * row_norms(q[:1])[0])

    def arrays(self) -> dict[str, np.ndarray]:
        return {"vectors": self.data}

    def restore(self, arrays: Mapping[str, np.ndarray]) -> None:
        self.append(arrays["vectors"])


def _cosines(dots: np.ndarray, denom: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denom < 1e-12, 0.0, np.clip(dots / denom, -1.0, 1.0))


class PairwiseColumn(Column):
    """Embeddings only the plugin's ``score`` understands (``None`` allowed), scored one pair at a time."""

    def __init__(self, name: str, layout: Layout, score: ScoreFn) -> None:
        super().__init__(name, layout, score)
        self.items: list[np.ndarray | None] = []

    @property
    def kind(self) -> str:
        return "other"

    def __len__(self) -> int:
        return len(self.items)

    def append(self, values: Sequence[np.ndarray | None] | np.ndarray) -> None:
        self.items.extend(values)

    def truncate(self, n: int) -> None:
        del self.items[n:]

    def keep(self, mask: np.ndarray) -> None:
        self.items = [item for item, kept in zip(self.items, mask.tolist()) if kept]

    def take(self, positions: np.ndarray) -> list[np.ndarray | None]:
        return [self.items[p] for p in positions.tolist()]

    def pair_scores(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        out = np.empty(len(a))
        for i, (x, y) in enumerate(zip(a.tolist(), b.tolist())):
            s = self.score(self.items[x], self.items[y])
            out[i] = np.nan if s is None else s
        return out

    def check_query(self, query: np.ndarray | None) -> np.ndarray | None:
        return query

    def query_scores(self, query: np.ndarray | None, positions: np.ndarray) -> np.ndarray:
        scores = (self.score(query, self.items[p]) for p in positions.tolist())
        return np.array([np.nan if s is None else s for s in scores], np.float64)

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
        if counts.ndim != 1 or counts.dtype.kind not in "iu" or rows.ndim < 1:
            raise InputError(f"the {self.name!r} arrays must be 1-d integer counts and rows, got {_describe(counts)}, {_describe(rows)}")
        ends = np.cumsum(np.maximum(counts, 0))
        if len(rows) != (ends[-1] if len(ends) else 0):
            raise InputError(f"the {self.name!r} arrays are inconsistent: {len(rows)} rows for counts summing to {ends[-1]}")
        starts = ends - np.maximum(counts, 0)
        self.items.extend(None if c < 0 else rows[s:e] for c, s, e in zip(counts.tolist(), starts.tolist(), ends.tolist()))


def _stack(name: str, values: Sequence[np.ndarray | None] | np.ndarray) -> np.ndarray:
    """Per-item embeddings as one array (every item needs one)."""
    if isinstance(values, np.ndarray):
        return values
    values = list(values)
    bad = next((i for i, v in enumerate(values) if v is None), None)
    if bad is not None:
        raise InputError(f"embedding {bad} has no {name!r} value (None); every item needs one")
    try:
        return np.stack([np.asarray(v) for v in values])
    except ValueError as exc:
        raise InputError(f"the {name!r} embeddings differ in shape: {exc}") from None


def make_column(name: str, layout: Layout, score: ScoreFn, *, unit_vectors: bool = False) -> Column:
    """An empty column for a dimension's layout (``unit_vectors``: see :class:`VectorColumn`)."""
    if layout.kind == "bits":
        return BitsColumn(name, layout, score)
    if layout.kind == "vector":
        return VectorColumn(name, layout, score, unit=unit_vectors)
    return PairwiseColumn(name, layout, score)


def plugin_column(
    plugin: DimensionPlugin,
    values: Sequence[np.ndarray | None] | np.ndarray = (),
    *,
    name: str | None = None,
    unit_vectors: bool = False,
) -> Column:
    """A column for a plugin's declared layout and score, holding ``values``."""
    column = make_column(name or plugin.name, plugin.layout, plugin.score, unit_vectors=unit_vectors)
    column.append(values)
    return column
