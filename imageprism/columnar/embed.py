"""``ArrowEmbedder``: an Arrow batch of image paths (or bytes) in, an embedding table out.

The per-partition work of every engine (Ray Data's ``map_batches``, Spark's
``mapInArrow``, a plain loop over Parquet row groups): no engine is imported here.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from imageprism._image import DEFAULT_MAX_PIXELS
from imageprism._prism import ImagePrism
from imageprism._results import Failure
from imageprism._types import Dimension, Profile
from imageprism._workers import Outcome
from imageprism.columnar.schema import (
    BASE_COLUMNS,
    ERROR_COLUMN,
    DimensionField,
    check_version,
    column_to_numpy,
    embedding_schema,
    numpy_to_column,
    pyarrow,
)
from imageprism.errors import InputError

if TYPE_CHECKING:
    import pyarrow as pa

__all__ = ["ArrowEmbedder", "TableEmbeddings", "embeddings_from_table"]

#: a small synthetic image, embedded once per worker to learn each dimension's embedding shape
_PROBE = np.kron(np.arange(64, dtype=np.uint8).reshape(8, 8) * 4, np.ones((8, 8), np.uint8))


class ArrowEmbedder:
    """Embed the images named in an Arrow batch; returns a table with the embedding schema.

    Args:
        dimensions, weights, config, profile: as for :class:`~imageprism.ImagePrism`.
        column: the input column: ``string`` (file paths) or ``binary`` (image bytes; a
            ``path`` column beside it, as Ray's ``read_binary_files(include_paths=True)``
            makes, fills the ``path`` output column).
        max_pixels, batch_size: as for :class:`~imageprism.ImagePrism`.

    Calling it on a ``pyarrow.RecordBatch`` or ``Table`` returns a ``pyarrow.Table``: the
    input's other columns (image bytes dropped), then the columns of
    :mod:`imageprism.columnar.schema` (path, file size, mtime, pixel key, width,
    height, one column per dimension, error). One row per input row, in order; an
    input that cannot be loaded is a row with ``error`` set, never dropped.

    The :class:`ImagePrism` is built on first use, once per process, so an embedder
    pickles cheaply to engine workers (before and after use). Embeddings are those of
    :meth:`ImagePrism.embed_batch` bit for bit.

    >>> import pyarrow as pa
    >>> embedder = ArrowEmbedder(column="bytes")
    >>> embedder(pa.table({"bytes": [b"not an image"]})).column("error")[0].as_py()[:14]
    'ImageLoadError'
    """

    def __init__(
        self,
        dimensions: Iterable[Dimension | str] | None = None,
        *,
        weights: Mapping[Dimension | str, float] | None = None,
        config: Mapping[Dimension | str, object] | None = None,
        profile: Profile | str | os.PathLike[str] | None = None,
        column: str = "path",
        max_pixels: int = DEFAULT_MAX_PIXELS,
        batch_size: int = 16,
    ) -> None:
        if not isinstance(column, str) or not column:
            raise InputError(f"column={column!r} is invalid; give the name of the path or bytes column")
        self.column = column
        self._options: dict[str, Any] = dict(
            dimensions=None if dimensions is None else list(dimensions) if not isinstance(dimensions, str) else [dimensions],
            weights=None if weights is None else dict(weights),
            config=None if config is None else dict(config),
            profile=profile,
            max_pixels=max_pixels,
            batch_size=batch_size,
        )
        ImagePrism(**self._options)  # validate now (cheap: no model loads), build for real on first use
        self._prism: ImagePrism | None = None
        self._fields: tuple[DimensionField, ...] | None = None

    @classmethod
    def from_prism(cls, prism: ImagePrism, *, column: str = "path") -> ArrowEmbedder:
        """An embedder doing its work with ``prism`` (its configuration, limits and cache) in this process.

        For :func:`~imageprism.columnar.parquet.write_parquet` (``imageprism embed --out``),
        whose worker processes are built from the prism's own settings; sent to another
        process (an engine), it rebuilds a prism from the dimensions, weights and pixel limit only.
        """
        embedder = cls(list(prism.plugins), weights=prism.weights, column=column, max_pixels=prism.max_pixels,
                       batch_size=prism.batch_size)
        embedder._prism = prism
        return embedder

    @property
    def constructor_kwargs(self) -> dict[str, Any]:
        """The keyword arguments that build an equal embedder (what engine workers receive)."""
        return dict(self._options, column=self.column)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_prism"] = None  # rebuilt in the worker; models and caches never travel
        return state

    @property
    def prism(self) -> ImagePrism:
        """The :class:`ImagePrism` doing the work (built on first use in this process)."""
        if self._prism is None:
            self._prism = ImagePrism(**self._options)
        return self._prism

    @property
    def fields(self) -> tuple[DimensionField, ...]:
        """One :class:`DimensionField` per dimension (shapes learnt by embedding a small probe image once)."""
        if self._fields is None:
            prism = self.prism
            probe = prism.embed(_PROBE)
            fields = []
            for name, plugin in prism.plugins.items():
                value = probe[name]
                layout = plugin.layout
                if layout.kind == "bits":
                    assert value is not None
                    fields.append(DimensionField(name, "bits", tuple(np.shape(value)), layout.bits_per_row,
                                                 layout.variants, plugin.cache_token))
                else:
                    shape = () if value is None else (int(np.size(value)),)
                    fields.append(DimensionField(name, "vector", shape, token=plugin.cache_token))
            self._fields = tuple(fields)
        return self._fields

    @property
    def schema(self) -> pa.Schema:
        """The embedding columns' schema (without pass-through input columns)."""
        return embedding_schema(self.fields, self.prism.weights)

    def __call__(self, batch: pa.RecordBatch | pa.Table) -> pa.Table:
        pa = pyarrow()
        table = pa.Table.from_batches([batch]) if isinstance(batch, pa.RecordBatch) else batch
        if not isinstance(table, pa.Table):
            raise InputError(f"ArrowEmbedder takes a pyarrow RecordBatch or Table, got {type(batch).__name__}")
        if self.column not in table.column_names:
            raise InputError(
                f"the batch has no column {self.column!r} (it has: {', '.join(table.column_names)}); "
                "pass column= naming the path or bytes column"
            )
        source = table.column(self.column)
        if pa.types.is_string(source.type) or pa.types.is_large_string(source.type):
            items: list[Any] = source.to_pylist()
            paths = items
        elif pa.types.is_binary(source.type) or pa.types.is_large_binary(source.type):
            items = source.to_pylist()
            paths = _string_column(table, "path")
        else:
            raise InputError(
                f"column {self.column!r} has type {source.type}; it must hold file paths (string) or image bytes (binary)"
            )
        schema = self.schema
        columns = self._embed(items, paths)
        keep = [name for name in table.column_names
                if name not in schema.names and not (name == self.column and items is not paths)]
        out = pa.table([*(table.column(name) for name in keep), *(columns[name] for name in schema.names)],
                       schema=pa.schema([*(table.schema.field(name) for name in keep), *schema], metadata=schema.metadata))
        return out

    def _embed(self, items: list[Any], paths: list[str | None]) -> dict[str, pa.Array]:
        outcomes = self.prism._embed_chunk(items, 0)  # the per-chunk step of ImagePrism.embed_batch, in this process
        return self._columns(items, paths, [outcome for _, outcome in outcomes])

    def _columns(self, items: Sequence[Any], paths: Sequence[str | None], outcomes: Sequence[Outcome]) -> dict[str, pa.Array]:
        """The embedding columns of ``items`` (``paths`` fill the path column) from their ``outcomes``, one each."""
        pa = pyarrow()
        prism = self.prism
        n = len(items)
        first = next(iter(prism.plugins))
        sizes: list[int | None] = [None] * n
        mtimes: list[int | None] = [None] * n
        keys: list[str | None] = [None] * n
        widths: list[int | None] = [None] * n
        heights: list[int | None] = [None] * n
        errors: list[str | None] = [None] * n
        embedded: dict[str, list[np.ndarray | None]] = {f.name: [None] * n for f in self.fields}
        for i, (item, outcome) in enumerate(zip(items, outcomes, strict=True)):
            if isinstance(item, (bytes, bytearray)):
                sizes[i] = len(item)
            elif isinstance(item, str):
                try:
                    st = os.stat(item)
                    sizes[i], mtimes[i] = st.st_size, st.st_mtime_ns
                except (OSError, ValueError):
                    pass  # the load failed with a message naming the path
            if isinstance(outcome, Failure):
                errors[i] = f"{type(outcome.error).__name__}: {outcome.error}"
                continue
            widths[i], heights[i] = outcome.size
            keys[i] = outcome.pixel_keys[first]
            for name, value in outcome.embeddings.items():
                embedded[name][i] = value
        return {
            "path": pa.array(paths, pa.string()),
            "file_size": pa.array(sizes, pa.int64()),
            "mtime": pa.array(mtimes, pa.timestamp("ns", tz="UTC")),
            "pixel_key": pa.array(keys, pa.string()),
            "width": pa.array(widths, pa.int32()),
            "height": pa.array(heights, pa.int32()),
            **{f.name: numpy_to_column(embedded[f.name], f) for f in self.fields},
            ERROR_COLUMN: pa.array(errors, pa.string()),
        }

    def _table(self, paths: Sequence[str], outcomes: Sequence[Outcome]) -> pa.Table:
        """The embedding table of files ``paths`` from their outcomes (what :func:`~imageprism.columnar.parquet.write_parquet` writes)."""
        pa = pyarrow()
        schema = self.schema
        columns = self._columns(paths, paths, outcomes)
        return pa.table([columns[name] for name in schema.names], schema=schema)


def _string_column(table: pa.Table, name: str) -> list[str | None]:
    pa = pyarrow()
    if name in table.column_names and pa.types.is_string(table.schema.field(name).type):
        return table.column(name).to_pylist()
    return [None] * table.num_rows


class TableEmbeddings:
    """Embeddings read back from an embedding table: the rows without an error, stacked per dimension.

    ``rows``: positions (in the table) of the embedded rows; ``embeddings``: dimension
    -> array ``(len(rows), *shape)`` (or an object array of vectors / ``None`` for a
    dimension that can be missing, e.g. face); ``fields``: the layouts; ``errors``:
    position -> error text of every failed row. ``embeddings`` is what
    :meth:`ImagePrism.dedup_embeddings` and the index take.
    """

    def __init__(self, rows: np.ndarray, embeddings: Mapping[str, np.ndarray], fields: Sequence[DimensionField],
                 errors: Mapping[int, str]) -> None:
        self.rows = rows
        self.embeddings = dict(embeddings)
        self.fields = tuple(fields)
        self.errors = dict(errors)

    def __len__(self) -> int:
        return len(self.rows)

    def __repr__(self) -> str:
        return f"TableEmbeddings({len(self.rows)} rows embedded, {len(self.errors)} failed, dimensions={list(self.embeddings)})"


def embeddings_from_table(table: pa.Table) -> TableEmbeddings:
    """Read the embeddings of a table written by :class:`ArrowEmbedder` (e.g. from Parquet).

    >>> import numpy as np, pyarrow as pa
    >>> embedder = ArrowEmbedder(config={"hash": __import__("imageprism").HashConfig.plain()}, column="bytes")
    >>> back = embeddings_from_table(embedder(pa.table({"bytes": [b"junk"]})))
    >>> len(back), list(back.errors)
    (0, [0])
    """
    pa = pyarrow()
    if not isinstance(table, pa.Table):
        raise InputError(f"embeddings_from_table takes a pyarrow Table, got {type(table).__name__}")
    check_version(table.schema)
    missing = [c for c in (*BASE_COLUMNS, ERROR_COLUMN) if c not in table.column_names]
    if missing:
        raise InputError(f"the table lacks the embedding-table columns {missing}; make it with ArrowEmbedder")
    fields = [DimensionField.from_arrow(f) for f in table.schema
              if (f.metadata or {}).get(b"imageprism.kind") is not None]
    errors_col = table.column(ERROR_COLUMN).to_pylist()
    errors = {i: e for i, e in enumerate(errors_col) if e is not None}
    rows = np.array([i for i, e in enumerate(errors_col) if e is None], dtype=np.int64)
    embeddings = {}
    for field in fields:
        values, valid = column_to_numpy(table.column(field.name), field)
        values, valid = values[rows], valid[rows]
        if not valid.all():  # a dimension that could not describe some images (no face)
            boxed = np.empty(len(rows), object)
            for k in range(len(rows)):
                boxed[k] = values[k] if valid[k] else None
            values = boxed
        embeddings[field.name] = values
    return TableEmbeddings(rows, embeddings, fields, errors)
