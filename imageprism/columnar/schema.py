"""The Arrow schema of an embedding table (version 1), and conversions to and from numpy.

One row per input. Columns, in order:

==============  ===============================  ==============================================
column          Arrow type                       meaning
==============  ===============================  ==============================================
``path``        ``string``                       the input's path (null for in-memory bytes)
``file_size``   ``int64``                        bytes read (file size, or length of the bytes)
``mtime``       ``timestamp[ns, UTC]``           file modification time (null for bytes)
``pixel_key``   ``string``                       BLAKE2b key of the pixels the first dimension
                                                 embedded (the embedding cache's key)
``width``       ``int32``                        image width as displayed (EXIF orientation
                                                 applied)
``height``      ``int32``                        image height as displayed
one per         ``fixed_size_binary[rows*nbytes]``  packed hash bits, row-major
dimension       ``fixed_size_list<float32>[d]``     an embedding vector
                ``list<float32>``                   a vector whose size the model does not fix
``error``       ``string``                       ``"ErrorType: message"`` for an input that
                                                 failed (its other columns are null), else null
==============  ===============================  ==============================================

Nothing is dropped: a failed input is a row with an ``error``. A dimension that
cannot describe an image (no face) leaves its cell null with no error.

Metadata: the schema carries ``imageprism.schema_version`` (:data:`SCHEMA_VERSION`),
the package version and the weights; each dimension field carries its layout
(``imageprism.kind``: ``bits`` or ``vector``; ``imageprism.shape``; for bits
``imageprism.bits_per_row`` and ``imageprism.variants``) and the dimension's cache
token, so a reader can rebuild the numpy embeddings and check they come from the
same configuration. Readers refuse a table whose major version they do not know.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from imageprism.errors import InputError, MissingDependencyError

if TYPE_CHECKING:
    import pyarrow as pa

__all__ = [
    "BASE_COLUMNS",
    "SCHEMA_VERSION",
    "DimensionField",
    "column_to_numpy",
    "embedding_schema",
    "numpy_to_column",
    "pyarrow",
]

#: bumped when a column changes meaning or type; readers check it
SCHEMA_VERSION = "1"
VERSION_KEY = b"imageprism.schema_version"
#: the columns before the dimension columns, then ``error`` last
BASE_COLUMNS: tuple[str, ...] = ("path", "file_size", "mtime", "pixel_key", "width", "height")
ERROR_COLUMN = "error"


def pyarrow() -> Any:
    """pyarrow, imported on first use (an optional extra)."""
    try:
        import pyarrow as pa
    except ImportError:
        raise MissingDependencyError(
            'embedding tables need pyarrow: pip install ".[parquet]" from the imageprism checkout (or pip install pyarrow)'
        ) from None
    return pa


@dataclasses.dataclass(frozen=True)
class DimensionField:
    """How one dimension's embeddings are stored in a table column.

    ``kind``: ``"bits"`` (packed ``uint8`` of ``shape`` (rows, nbytes), stored as fixed-size
    binary) or ``"vector"`` (float32 of ``shape`` (d,), or ``()`` when the size is not fixed).
    """

    name: str
    kind: str
    shape: tuple[int, ...]
    bits_per_row: int | None = None
    variants: int = 1
    token: str = ""

    def arrow_type(self) -> pa.DataType:
        pa = pyarrow()
        if self.kind == "bits":
            return pa.binary(math.prod(self.shape))
        if self.shape:
            return pa.list_(pa.float32(), self.shape[0])
        return pa.list_(pa.float32())

    def arrow_field(self) -> pa.Field:
        pa = pyarrow()
        meta = {"imageprism.kind": self.kind, "imageprism.shape": ",".join(map(str, self.shape)), "imageprism.token": self.token}
        if self.kind == "bits":
            meta["imageprism.bits_per_row"] = str(self.bits_per_row or 8 * self.shape[-1])
            meta["imageprism.variants"] = str(self.variants)
        return pa.field(self.name, self.arrow_type(), nullable=True, metadata=meta)

    @classmethod
    def from_arrow(cls, field: pa.Field) -> DimensionField:
        """Read a field written by :meth:`arrow_field` (its metadata must be present)."""
        meta = {k.decode(): v.decode() for k, v in (field.metadata or {}).items()}
        kind = meta.get("imageprism.kind")
        if kind not in ("bits", "vector"):
            raise InputError(
                f"column {field.name!r} has no imageprism layout metadata (imageprism.kind); "
                "make the table with ArrowEmbedder (or imageprism.ray.embed_dataset)"
            )
        shape = tuple(int(x) for x in meta.get("imageprism.shape", "").split(",") if x)
        if kind == "bits":
            return cls(field.name, kind, shape, int(meta["imageprism.bits_per_row"]), int(meta["imageprism.variants"]),
                       meta.get("imageprism.token", ""))
        return cls(field.name, kind, shape, token=meta.get("imageprism.token", ""))


def embedding_schema(fields: Sequence[DimensionField], weights: Mapping[str, float] | None = None) -> pa.Schema:
    """The table schema for these dimension fields (see the module docstring)."""
    pa = pyarrow()
    from imageprism._version import __version__

    base = [
        pa.field("path", pa.string()),
        pa.field("file_size", pa.int64()),
        pa.field("mtime", pa.timestamp("ns", tz="UTC")),
        pa.field("pixel_key", pa.string()),
        pa.field("width", pa.int32()),
        pa.field("height", pa.int32()),
    ]
    meta = {VERSION_KEY: SCHEMA_VERSION.encode(), b"imageprism.version": __version__.encode()}
    if weights is not None:
        meta[b"imageprism.weights"] = json.dumps(dict(weights)).encode()
    return pa.schema([*base, *(f.arrow_field() for f in fields), pa.field(ERROR_COLUMN, pa.string())], metadata=meta)


def check_version(schema: pa.Schema) -> None:
    """Refuse a table written with an unknown major schema version (a missing version is accepted)."""
    found = (schema.metadata or {}).get(VERSION_KEY)
    if found is not None and found.decode().split(".")[0] != SCHEMA_VERSION.split(".")[0]:
        raise InputError(
            f"the table has imageprism schema version {found.decode()}, this imageprism reads version "
            f"{SCHEMA_VERSION}; re-embed it or upgrade imageprism"
        )


def numpy_to_column(values: Sequence[np.ndarray | None], field: DimensionField) -> pa.Array:
    """One Arrow array from per-row embeddings (``None``: a null cell)."""
    pa = pyarrow()
    n = len(values)
    valid = np.array([v is not None for v in values], dtype=bool)
    if field.kind == "bits":
        width = math.prod(field.shape)
        data = np.zeros((n, width), np.uint8)
        for i, v in enumerate(values):
            if v is not None:
                data[i] = np.asarray(v, np.uint8).reshape(-1)
        return pa.FixedSizeBinaryArray.from_buffers(
            pa.binary(width), n, [_validity(valid), pa.py_buffer(data.tobytes())]
        )
    if field.shape:
        d = field.shape[0]
        flat = np.zeros((n, d), np.float32)
        for i, v in enumerate(values):
            if v is not None:
                flat[i] = np.asarray(v, np.float32).reshape(-1)
        return pa.FixedSizeListArray.from_arrays(pa.array(flat.reshape(-1)), d, mask=pa.array(~valid))
    return pa.array([None if v is None else np.asarray(v, np.float32).reshape(-1) for v in values], pa.list_(pa.float32()))


def _validity(valid: np.ndarray) -> pa.Buffer | None:
    pa = pyarrow()
    if valid.all():
        return None
    return pa.py_buffer(np.packbits(valid, bitorder="little").tobytes())


def column_to_numpy(column: pa.Array | pa.ChunkedArray, field: DimensionField) -> tuple[np.ndarray, np.ndarray]:
    """``(values, valid)``: the embeddings stacked as ``(n, *shape)`` (zeros where null) and the valid mask.

    A vector column without a fixed size returns an object array of vectors (``None`` where null).
    """
    pa = pyarrow()
    array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    n = len(array)
    valid = ~np.asarray(array.is_null().to_numpy(zero_copy_only=False), dtype=bool) if n else np.zeros(0, bool)
    if field.kind == "bits":
        width = math.prod(field.shape)
        if array.type != pa.binary(width):
            raise InputError(f"column {field.name!r} has type {array.type}, expected {pa.binary(width)} for shape {field.shape}")
        buffer = array.buffers()[1]
        raw = np.frombuffer(buffer, np.uint8, count=(array.offset + n) * width) if n else np.zeros(0, np.uint8)
        values = raw[array.offset * width :].reshape(n, *field.shape)
        return values, valid
    if field.shape:
        d = field.shape[0]
        flat = array.values.slice(array.offset * d, n * d).to_numpy(zero_copy_only=False)
        return np.asarray(flat, np.float32).reshape(n, d), valid
    out = np.empty(n, object)
    for i, v in enumerate(array.to_pylist()):
        out[i] = None if v is None else np.asarray(v, np.float32)
    return out, valid
