"""Ray Data: embed a dataset of images, deduplicate a dataset of hashes, on a Ray cluster.

``pip install 'imageprism[ray]'``. The work per partition is the engine-free columnar
core (:class:`~imageprism.ArrowEmbedder`, :mod:`imageprism._columnar.dedup`); this
module only wires it into Ray Data with stable operations (``map_batches`` and
``groupby().map_groups``; no experimental join).

>>> import ray, imageprism.ray as ipr                               # doctest: +SKIP
>>> ds = ray.data.from_items([{"path": p, "order": i} for i, p in enumerate(paths)])  # doctest: +SKIP
>>> emb = ipr.embed_dataset(ds)                                     # doctest: +SKIP
>>> out = ipr.dedup_dataset(emb, threshold=0.9, order_by="order")   # doctest: +SKIP

``dedup_dataset``'s ``representative`` column holds, for each row, the ``order_by``
value of the row it was grouped under: with ``order_by`` the input position, exactly
``ImagePrism.dedup(...).labels``.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from imageprism._columnar.dedup import (
    DEFAULT_BUDGET,
    CodeLayout,
    band_keys,
    code_hash,
    collapse_identical,
    partition_edges,
    plan_bands,
    representatives,
)
from imageprism._columnar.embed import ArrowEmbedder
from imageprism._columnar.schema import DimensionField, pyarrow
from imageprism._dedup import check_threshold
from imageprism._types import Dimension, Profile
from imageprism.errors import ConfigError, InputError, MissingDependencyError

if TYPE_CHECKING:
    import pyarrow as pa
    from ray.data import Dataset

__all__ = ["dedup_dataset", "embed_dataset"]


def _ray() -> Any:
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise MissingDependencyError("imageprism.ray needs Ray Data; install it with: pip install 'imageprism[ray]'") from None
    return ray


def _cluster_cpus() -> float:
    ray = _ray()
    if not ray.is_initialized():
        ray.init()
    return float(ray.cluster_resources().get("CPU", 1.0))


def embed_dataset(
    ds: Dataset,
    *,
    column: str = "path",
    dimensions: Iterable[Dimension | str] | None = None,
    weights: Mapping[Dimension | str, float] | None = None,
    config: Mapping[Dimension | str, object] | None = None,
    profile: Profile | str | os.PathLike[str] | None = None,
    embedder: ArrowEmbedder | None = None,
    batch_size: int = 64,
    concurrency: int | None = None,
    reserved_cpus: float = 1.0,
) -> Dataset:
    """A dataset of images (paths or bytes in ``column``) in, the embedding table out (lazy).

    Each row becomes a row of the embedding schema (see :class:`~imageprism.ArrowEmbedder`;
    other columns pass through, image bytes are dropped); failed inputs are rows with
    ``error`` set. A pool of ``concurrency`` actors (default: one per cluster CPU) each
    builds one ``ImagePrism`` and embeds batches of ``batch_size``. Their CPU share
    leaves ``reserved_cpus`` of the cluster's logical CPUs to the tasks that read the
    input, so reading never starves (the actors still use whole cores). Ray restarts a
    killed actor and retries its batch.

    ``embedder``: an :class:`~imageprism.ArrowEmbedder` (or subclass) to run instead of
    one built from ``dimensions``/``weights``/``config``/``profile``/``column``; each
    actor builds its own from the same arguments.
    """
    if embedder is None:
        embedder = ArrowEmbedder(dimensions, weights=weights, config=config, profile=profile, column=column)  # validates now
    elif any(v is not None for v in (dimensions, weights, config, profile)) or column != "path":
        raise ConfigError("give either embedder= or dimensions/weights/config/profile/column, not both")
    for name, value in (("batch_size", batch_size), ("concurrency", concurrency)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise ConfigError(f"{name}={value!r} is invalid; use a positive integer")
    total = _cluster_cpus()
    concurrency = concurrency or max(1, int(total))
    reserve = min(max(float(reserved_cpus), 0.0), total / 2)
    share = max(0.01, round((total - reserve) / concurrency, 2))
    return ds.map_batches(
        type(embedder),
        fn_constructor_kwargs=embedder.constructor_kwargs,
        batch_size=batch_size,
        batch_format="pyarrow",
        compute=_ray().data.ActorPoolStrategy(size=concurrency),
        num_cpus=share,
    )


# -- dedup ------------------------------------------------------------------------------


def _layout(schema: Any, column: str) -> CodeLayout:
    pa = pyarrow()
    arrow_schema = schema if isinstance(schema, pa.Schema) else getattr(schema, "base_schema", None)
    if arrow_schema is None or column not in arrow_schema.names:
        names = list(arrow_schema.names) if arrow_schema is not None else []
        raise InputError(f"the dataset has no column {column!r} (it has: {', '.join(names)}); pass column=")
    field = DimensionField.from_arrow(arrow_schema.field(column))
    if field.kind != "bits":
        raise ConfigError(
            f"dedup_dataset works on packed hash columns; {column!r} holds {field.kind}s. "
            "Dedup vectors with ImagePrism.dedup_embeddings on one machine"
        )
    rows, nbytes = field.shape
    return CodeLayout(rows, nbytes, field.bits_per_row or 8 * nbytes, field.variants)


def _codes(batch: pa.Table, *, order_by: str, column: str, parts: int) -> pa.Table:
    """Rows with a code: ``order`` (int64), ``code``, ``part`` (hash of the code: identical codes meet)."""
    pa = pyarrow()
    valid = batch.filter(batch.column(column).is_valid())
    orders = valid.column(order_by)
    if orders.null_count:
        raise InputError(f"the order column {order_by!r} has null values; give every row an order")
    codes = _code_array(valid, column)
    return pa.table({
        "order": orders.cast(pa.int64()),
        "code": valid.column(column),
        "part": pa.array(np.abs(code_hash(codes) % parts), pa.int64()),
    })


def _code_array(table: pa.Table, name: str = "code") -> np.ndarray:
    array = table.column(name).combine_chunks()
    width = array.type.byte_width
    if not len(array):
        return np.empty((0, width), np.uint8)
    raw = np.frombuffer(array.buffers()[1], np.uint8)
    return raw[array.offset * width : (array.offset + len(array)) * width].reshape(len(array), width)


def _collapse(group: pa.Table) -> pa.Table:
    pa = pyarrow()
    orders = group.column("order").to_numpy()
    canon = collapse_identical(_code_array(group), orders)
    return pa.table({"order": group.column("order"), "canon": pa.array(canon, pa.int64()), "code": group.column("code")})


def _keys(batch: pa.Table, *, plan: Any, parts: int) -> pa.Table:
    pa = pyarrow()
    orders = batch.column("order").to_numpy()
    first = np.flatnonzero(orders == batch.column("canon").to_numpy())
    codes = _code_array(batch)[first]
    keys, item, base = band_keys(codes, plan)
    take = pa.array(first[item])
    return pa.table({
        "key": pa.array(keys, pa.int64()),
        "part": pa.array(np.abs(keys % parts), pa.int64()),
        "order": batch.column("order").take(take),
        "base": pa.array(base),
        "code": batch.column("code").take(take),
    })


def _edges(group: pa.Table, *, layout: CodeLayout, threshold: float) -> pa.Table:
    pa = pyarrow()
    a, b = partition_edges(
        group.column("key").to_numpy(), group.column("order").to_numpy(), group.column("base").to_numpy(),
        _code_array(group), layout, threshold,
    )
    return pa.table({"a": pa.array(a, pa.int64()), "b": pa.array(b, pa.int64())})


def _attach(batch: pa.Table, *, order_by: str, column: str, orders: np.ndarray, reps: np.ndarray) -> pa.Table:
    pa = pyarrow()
    valid = batch.column(column).is_valid().to_numpy(zero_copy_only=False)
    values = batch.column(order_by).cast(pa.int64()).fill_null(np.iinfo(np.int64).min).to_numpy()
    at = np.minimum(np.searchsorted(orders, values), max(len(orders) - 1, 0))
    found = valid & (len(orders) > 0) & (orders[at] == values) if len(orders) else np.zeros(len(values), bool)
    rep = pa.array(np.where(found, reps[at] if len(reps) else 0, 0), pa.int64(), mask=~found)
    return batch.append_column("representative", rep)


def _collect(ds: Dataset, names: list[str]) -> list[np.ndarray]:
    pa = pyarrow()
    tables = list(ds.select_columns(names).iter_batches(batch_size=None, batch_format="pyarrow"))
    table = pa.concat_tables(tables) if tables else None
    return [np.asarray(table.column(n).to_numpy() if table is not None else np.empty(0), np.int64) for n in names]


def dedup_dataset(
    ds: Dataset,
    *,
    threshold: float = 0.9,
    order_by: str,
    column: str = "hash",
    budget: float = DEFAULT_BUDGET,
    partitions: int | None = None,
) -> Dataset:
    """``ds`` with a ``representative`` column: the exact greedy dedup of its hashes, distributed.

    Rows are visited in the order of ``order_by`` (an integer column with distinct
    values; a distributed table has no order of its own); each joins the first
    representative whose hash score reaches ``threshold``, as :meth:`ImagePrism.dedup`
    does. ``representative`` is that row's ``order_by`` value (its own for a
    representative; null for rows without a hash, e.g. errors). ``column``: a hash
    column of an embedding table (from :func:`embed_dataset`, or Parquet written from
    one), plain or robust.

    Steps (module :mod:`imageprism._columnar.dedup`): identical codes grouped
    (``groupby``), band keys (``map_batches``), candidates verified per key partition
    (``groupby().map_groups``), then the greedy pass over the edges on the driver and
    the labels attached (``map_batches``). ``budget``: expected candidate pairs per
    item the band plan may cost (the part that grows with the number of rows); past it,
    :class:`~imageprism.DedupBudgetError`. ``ds`` is materialised (it is read twice).
    """
    _ray()
    threshold = check_threshold(threshold)
    if threshold <= 0:
        raise ConfigError("threshold=0 groups everything; use a threshold in (0, 1]")
    if isinstance(partitions, bool) or (partitions is not None and (not isinstance(partitions, int) or partitions < 1)):
        raise ConfigError(f"partitions={partitions!r} is invalid; use a positive integer")
    ds = ds.materialize()
    schema = ds.schema()
    layout = _layout(schema, column)
    names = list(schema.names)
    if order_by not in names:
        raise InputError(f"the dataset has no order column {order_by!r} (it has: {', '.join(names)}); pass order_by=")
    parts = partitions or max(2, 2 * int(_cluster_cpus()))
    codes = ds.select_columns([order_by, column]).map_batches(
        _codes, fn_kwargs=dict(order_by=order_by, column=column, parts=parts), batch_format="pyarrow")
    collapsed = codes.groupby("part", num_partitions=parts).map_groups(_collapse, batch_format="pyarrow").materialize()
    orders, canon = _collect(collapsed, ["order", "canon"])
    plan = plan_bands(layout, threshold, int(np.count_nonzero(orders == canon)), budget=budget)
    keyed = collapsed.map_batches(_keys, fn_kwargs=dict(plan=plan, parts=parts), batch_format="pyarrow")
    edges = keyed.groupby("part", num_partitions=parts).map_groups(_edges, fn_kwargs=dict(layout=layout, threshold=threshold), batch_format="pyarrow")
    a, b = _collect(edges, ["a", "b"])
    reps = representatives(orders, canon, a, b)
    by_order = np.argsort(orders)
    return ds.map_batches(
        _attach,
        fn_kwargs=dict(order_by=order_by, column=column, orders=orders[by_order], reps=reps[by_order]),
        batch_format="pyarrow",
    )
