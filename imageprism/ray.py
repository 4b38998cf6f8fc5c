"""Ray Data: embed a dataset of images, deduplicate a dataset of hashes, on a Ray cluster.

``pip install ".[ray]"`` from the checkout. The work per partition is the engine-free columnar
core (:class:`~imageprism.ArrowEmbedder`, :mod:`imageprism.columnar.dedup`); this
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

from imageprism._dedup import check_threshold
from imageprism._types import Dimension, Profile
from imageprism.columnar.dedup import DEFAULT_BUDGET, labels_from_edges, plan_bands
from imageprism.columnar.embed import ArrowEmbedder
from imageprism.columnar.schema import pyarrow
from imageprism.columnar.tables import attach_representatives, edge_rows, hash_layout, key_rows
from imageprism.errors import ConfigError, InputError, MissingDependencyError

if TYPE_CHECKING:
    from ray.data import Dataset

__all__ = ["dedup_dataset", "embed_dataset"]


def _ray() -> Any:
    try:
        import ray
        import ray.data
    except ImportError:
        raise MissingDependencyError('imageprism.ray needs Ray Data: pip install ".[ray]" from the imageprism checkout (or pip install "ray[data]" pyarrow)') from None
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


#: part values per shuffle partition (each ``map_groups`` call verifies one part; more parts balance the partitions)
_PARTS_PER_PARTITION = 8
#: rows per ``key_rows`` call (each emits about ``keys_per_item + 1`` rows per row)
_KEY_BATCH = 65536


def _collect(ds: Dataset, names: list[str]) -> list[np.ndarray]:
    pa = pyarrow()
    tables = [t for t in ds.iter_batches(batch_size=None, batch_format="pyarrow")]
    table = pa.concat_tables(tables) if tables else None
    return [np.empty(0) if table is None else table.column(n).to_numpy(zero_copy_only=False) for n in names]


def _shuffle_strategy(value: str | None) -> Any:
    if value is None:
        return None
    strategies = _ray().data.context.ShuffleStrategy
    try:
        return strategies(value)
    except ValueError:
        raise ConfigError(f"shuffle_strategy={value!r} is unknown; use one of {', '.join(s.value for s in strategies)} or None") from None


def dedup_dataset(
    ds: Dataset,
    *,
    threshold: float = 0.9,
    order_by: str,
    column: str = "hash",
    budget: float = DEFAULT_BUDGET,
    partitions: int | None = None,
    shuffle_strategy: str | None = "sort_shuffle_pull_based",
) -> Dataset:
    """``ds`` with a ``representative`` column: the exact greedy dedup of its hashes, distributed.

    Rows are visited in the order of ``order_by`` (an integer column with distinct
    values; a distributed table has no order of its own); each joins the first
    representative whose hash score reaches ``threshold``, as :meth:`ImagePrism.dedup`
    does. ``representative`` is that row's ``order_by`` value (its own for a
    representative; null for rows without a hash, e.g. errors). ``column``: a hash
    column of an embedding table (from :func:`embed_dataset`, or Parquet written from
    one), plain or robust.

    One shuffle (module :mod:`imageprism.columnar.tables`): band key rows
    (``map_batches``), grouped by part into ``partitions`` (default: twice the cluster's
    CPUs) where identical codes collapse and candidates are verified
    (``groupby().map_groups``); the edges (about one per near copy) come to the driver
    for the greedy pass, and the labels of the rows that are not their own
    representative travel with the tasks that attach them (``map_batches``). ``budget``:
    expected candidate pairs per item the band plan may cost (the part that grows with
    the number of rows); past it, :class:`~imageprism.DedupBudgetError`. ``ds`` is
    materialised (it is read twice).

    ``shuffle_strategy``: the Ray Data shuffle of the group-by (a
    ``ray.data.context.ShuffleStrategy`` value), set on the dataset's context while the
    edges are computed and restored after; ``None`` keeps the context's. The default, the
    sort-based shuffle run by tasks, measured several times faster than Ray's default
    hash shuffle on a small cluster, whose aggregator actors start anew for every job
    (``benchmarks/README.md``).
    """
    _ray()
    threshold = check_threshold(threshold)
    if threshold <= 0:
        raise ConfigError("threshold=0 groups everything; use a threshold in (0, 1]")
    if isinstance(partitions, bool) or (partitions is not None and (not isinstance(partitions, int) or partitions < 1)):
        raise ConfigError(f"partitions={partitions!r} is invalid; use a positive integer")
    ds = ds.materialize()
    schema = ds.schema()
    arrow_schema = schema if isinstance(schema, pyarrow().Schema) else getattr(schema, "base_schema", None)
    names = list(schema.names)
    if arrow_schema is None:
        raise InputError(f"the dataset's schema is not an Arrow schema ({type(schema).__name__}); make it with embed_dataset")
    layout = hash_layout(arrow_schema, column)
    if order_by not in names:
        raise InputError(f"the dataset has no order column {order_by!r} (it has: {', '.join(names)}); pass order_by=")
    plan = plan_bands(layout, threshold, ds.count(), budget=budget)  # rows without a code counted: an upper bound
    partitions = partitions or max(2, 2 * int(_cluster_cpus()))
    strategy = _shuffle_strategy(shuffle_strategy)
    keyed = ds.select_columns([order_by, column]).map_batches(
        key_rows, fn_kwargs=dict(plan=plan, order_by=order_by, column=column, parts=_PARTS_PER_PARTITION * partitions),
        batch_size=_KEY_BATCH, batch_format="pyarrow")
    context = keyed.context
    saved = context.shuffle_strategy
    context.shuffle_strategy = strategy or saved
    try:
        edges = keyed.groupby("part", num_partitions=partitions).map_groups(
            edge_rows, fn_kwargs=dict(layout=layout, threshold=threshold), batch_format="pyarrow")
        a, b, twin = _collect(edges, ["a", "b", "twin"])
    finally:
        context.shuffle_strategy = saved
    items, reps = labels_from_edges(a, b, twin)
    return ds.map_batches(
        attach_representatives,
        fn_kwargs=dict(order_by=order_by, column=column, items=items, reps=reps),
        batch_size=None, batch_format="pyarrow",
    )
