"""The dedup kernels on Arrow tables: what each engine task runs, whatever the engine.

A distributed dedup of an embedding table's hash column, in four table steps (Ray's
``imageprism.ray.dedup_dataset`` and the README's Spark recipe both run exactly these):

1. :func:`code_rows` (per batch): ``order``, ``code``, ``part`` (identical codes share a part);
2. group by ``part``, :func:`collapse_rows` (per part): adds ``canon``, the smallest
   order among identical codes; collect ``order`` and ``canon`` on the driver and make the
   plan (:func:`~imageprism.columnar.dedup.plan_bands`);
3. :func:`key_rows` (per batch): band key rows ``key``, ``part``, ``order``, ``base``, ``code``;
4. group by ``part``, :func:`edge_rows` (per part): verified edges ``a < b``; collect them,
   :func:`~imageprism.columnar.dedup.representatives` on the driver, and
   :func:`attach_representatives` (per batch).

Codes may arrive as fixed-size binary (Ray, Parquet) or plain binary (Spark).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from imageprism.columnar.dedup import (
    BandPlan,
    CodeLayout,
    band_keys,
    code_hash,
    collapse_identical,
    partition_edges,
)
from imageprism.columnar.schema import DimensionField, pyarrow
from imageprism.errors import ConfigError, InputError

if TYPE_CHECKING:
    import pyarrow as pa

__all__ = ["attach_representatives", "code_rows", "collapse_rows", "edge_rows", "hash_layout", "key_rows", "portable"]


def hash_layout(schema: pa.Schema, column: str = "hash") -> CodeLayout:
    """The code layout of a hash column of an embedding table (from its field metadata)."""
    if column not in schema.names:
        raise InputError(f"the table has no column {column!r} (it has: {', '.join(schema.names)}); pass column=")
    field = DimensionField.from_arrow(schema.field(column))
    if field.kind != "bits":
        raise ConfigError(
            f"distributed dedup works on packed hash columns; {column!r} holds {field.kind}s. "
            "Dedup vectors with ImagePrism.dedup_embeddings on one machine"
        )
    rows, nbytes = field.shape
    return CodeLayout(rows, nbytes, field.bits_per_row or 8 * nbytes, field.variants)


def portable(table: pa.Table) -> pa.Table:
    """The table with types every engine reads (Spark's Arrow bridge has no fixed-size binary).

    Fixed-size binary becomes binary, fixed-size lists lists, nanosecond timestamps
    microseconds; field metadata is kept where the engine keeps it.
    """
    pa = pyarrow()
    fields = []
    for field in table.schema:
        t = field.type
        if pa.types.is_fixed_size_binary(t):
            t = pa.binary()
        elif pa.types.is_fixed_size_list(t):
            t = pa.list_(t.value_type)
        elif pa.types.is_timestamp(t) and t.unit == "ns":
            t = pa.timestamp("us", tz=t.tz)
        fields.append(field.with_type(t))
    return table.cast(pa.schema(fields, metadata=table.schema.metadata), safe=False)


def _codes(table: pa.Table, name: str, width: int | None = None) -> np.ndarray:
    """A binary column as a uint8 matrix ``(rows, width)``."""
    pa = pyarrow()
    array = table.column(name).combine_chunks()
    if not pa.types.is_fixed_size_binary(array.type):
        if width is None:
            lengths = pa.compute.binary_length(array).to_numpy(zero_copy_only=False)
            width = int(lengths[0]) if len(lengths) else 0
        array = array.cast(pa.binary(width))
    width = array.type.byte_width
    if not len(array):
        return np.empty((0, width), np.uint8)
    raw = np.frombuffer(array.buffers()[1], np.uint8)
    return raw[array.offset * width : (array.offset + len(array)) * width].reshape(len(array), width)


def code_rows(batch: pa.Table, *, order_by: str, column: str, parts: int) -> pa.Table:
    """Rows that have a code: ``order`` (int64), ``code``, ``part`` (a hash of the code modulo ``parts``)."""
    pa = pyarrow()
    valid = batch.filter(batch.column(column).is_valid())
    orders = valid.column(order_by)
    if orders.null_count:
        raise InputError(f"the order column {order_by!r} has null values; give every row an order")
    return pa.table({
        "order": orders.cast(pa.int64()),
        "code": valid.column(column),
        "part": pa.array(np.abs(code_hash(_codes(valid, column)) % parts), pa.int64()),
    })


def collapse_rows(group: pa.Table) -> pa.Table:
    """``order``, ``canon`` (smallest order with an identical code), ``code`` for one part's rows."""
    pa = pyarrow()
    canon = collapse_identical(_codes(group, "code"), group.column("order").to_numpy())
    return pa.table({"order": group.column("order"), "canon": pa.array(canon, pa.int64()), "code": group.column("code")})


def key_rows(batch: pa.Table, *, plan: BandPlan, parts: int) -> pa.Table:
    """Band key rows of the canonical codes of a batch of :func:`collapse_rows` output."""
    pa = pyarrow()
    layout = plan.layout
    first = np.flatnonzero(batch.column("order").to_numpy() == batch.column("canon").to_numpy())
    codes = _codes(batch, "code", layout.rows * layout.nbytes)[first]
    keys, item, base = band_keys(codes, plan)
    take = pa.array(first[item])
    return pa.table({
        "key": pa.array(keys, pa.int64()),
        "part": pa.array(np.abs(keys % parts), pa.int64()),
        "order": batch.column("order").take(take),
        "base": pa.array(base),
        "code": batch.column("code").take(take),
    })


def edge_rows(group: pa.Table, *, layout: CodeLayout, threshold: float) -> pa.Table:
    """Verified edges ``a < b`` (order values) among all key rows of one part."""
    pa = pyarrow()
    a, b = partition_edges(
        group.column("key").to_numpy(), group.column("order").to_numpy(),
        group.column("base").to_numpy(zero_copy_only=False), _codes(group, "code", layout.rows * layout.nbytes),
        layout, threshold,
    )
    return pa.table({"a": pa.array(a, pa.int64()), "b": pa.array(b, pa.int64())})


def attach_representatives(
    batch: pa.Table, *, order_by: str, column: str, orders: np.ndarray, reps: np.ndarray,
) -> pa.Table:
    """``batch`` plus ``representative`` (``orders`` sorted, ``reps`` aligned; null without a code)."""
    pa = pyarrow()
    valid = batch.column(column).is_valid().to_numpy(zero_copy_only=False)
    values = batch.column(order_by).cast(pa.int64()).fill_null(np.iinfo(np.int64).min).to_numpy()
    if not len(orders):
        return batch.append_column("representative", pa.nulls(batch.num_rows, pa.int64()))
    at = np.minimum(np.searchsorted(orders, values), len(orders) - 1)
    found = valid & (orders[at] == values)
    rep = pa.array(np.where(found, reps[at], 0), pa.int64(), mask=~found)
    return batch.append_column("representative", rep)
