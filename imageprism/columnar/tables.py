"""The dedup kernels on Arrow tables: what each engine task runs, whatever the engine.

A distributed dedup of an embedding table's hash column is one shuffle (Ray's
``imageprism.ray.dedup_dataset`` and the README's Spark recipe both run exactly these):

1. the plan (:func:`~imageprism.columnar.dedup.plan_bands`) for the number of rows;
2. :func:`key_rows` (per batch): ``key``, ``kind``, ``order``, ``code``, ``part``: the
   band keys of every row with a code, and one row per item keyed by its order value
   (which checks the order values are distinct);
3. group by ``part``, :func:`edge_rows` (per group, any set of whole parts): verified
   edges ``a < b`` and twin edges (identical codes); collect them (few: about one per
   near copy) and :func:`~imageprism.columnar.dedup.labels_from_edges` on the driver;
4. :func:`attach_representatives` (per batch, no shuffle): the labels of the items that
   are not their own representative travel with the task.

Codes may arrive as fixed-size binary (Ray, Parquet) or plain binary (Spark).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from imageprism.columnar.dedup import (
    BandPlan,
    CodeLayout,
    band_keys,
    check_distinct,
    code_hash,
    partition_edges,
)
from imageprism.columnar.schema import DimensionField, pyarrow
from imageprism.errors import ConfigError, InputError

if TYPE_CHECKING:
    import pyarrow as pa

__all__ = ["attach_representatives", "edge_rows", "hash_layout", "key_rows", "portable"]

#: ``kind`` of a key row: a band's base key, a probe key, the item's order check
BASE, PROBE, ORDER = 0, 1, 2


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


def key_rows(batch: pa.Table, *, plan: BandPlan, order_by: str, column: str, parts: int) -> pa.Table:
    """The key rows of a batch of an embedding table (rows without a code have none).

    ``key`` (int64), ``kind`` (int8: :data:`BASE`, :data:`PROBE`, :data:`ORDER`), ``order``
    (int64), ``code`` (the row's whole code, for verification), ``part`` (int32: the key
    modulo ``parts``; group by it). Per item: its band keys, and one row keyed by its
    order value, so repeated order values meet in one group.
    """
    pa = pyarrow()
    valid = batch.filter(batch.column(column).is_valid())
    orders = valid.column(order_by)
    if orders.null_count:
        raise InputError(f"the order column {order_by!r} has null values; give every row an order")
    layout = plan.layout
    codes = valid.column(column)
    keys, item, base = band_keys(_codes(valid, column, layout.rows * layout.nbytes), plan)
    order_values = np.asarray(orders.cast(pa.int64()).to_numpy(), np.int64)
    keys = np.concatenate([keys, code_hash(order_values.view(np.uint8).reshape(-1, 8))])
    take = np.concatenate([item, np.arange(len(order_values))])
    kind = np.concatenate([np.where(base, BASE, PROBE), np.full(len(order_values), ORDER)]).astype(np.int8)
    return pa.table({
        "key": pa.array(keys, pa.int64()),
        "kind": pa.array(kind, pa.int8()),
        "order": pa.array(order_values[take], pa.int64()),
        "code": codes.take(pa.array(take)),
        "part": pa.array(keys % parts, pa.int32()),
    })


def edge_rows(group: pa.Table, *, layout: CodeLayout, threshold: float) -> pa.Table:
    """Edges ``a < b`` (order values) and ``twin`` (identical codes) among the key rows of whole parts."""
    pa = pyarrow()
    kind = group.column("kind").to_numpy()
    orders = group.column("order").to_numpy()
    check_distinct(orders[kind == ORDER])
    band = np.flatnonzero(kind != ORDER)
    a, b, twin = partition_edges(
        group.column("key").to_numpy()[band], orders[band], kind[band] == BASE,
        _codes(group, "code", layout.rows * layout.nbytes)[band], layout, threshold,
    )
    return pa.table({"a": pa.array(a, pa.int64()), "b": pa.array(b, pa.int64()), "twin": pa.array(twin, pa.bool_())})


def attach_representatives(
    batch: pa.Table, *, order_by: str, column: str, items: np.ndarray, reps: np.ndarray,
) -> pa.Table:
    """``batch`` plus ``representative``: ``reps`` for the ``items`` (sorted order values), the
    row's own order value for every other row with a code, null without one."""
    pa = pyarrow()
    valid = batch.column(column).is_valid().to_numpy(zero_copy_only=False)
    values = batch.column(order_by).cast(pa.int64()).fill_null(0).to_numpy()
    rep = values.copy()
    if len(items):
        at = np.minimum(np.searchsorted(items, values), len(items) - 1)
        moved = items[at] == values
        rep[moved] = reps[at[moved]]
    return batch.append_column("representative", pa.array(rep, pa.int64(), mask=~valid))
