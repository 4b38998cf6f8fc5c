"""Engine-free columnar core: the embedding table, the Arrow embedder, the distributed dedup kernels.

Numpy and pyarrow only (pyarrow imported on first use: ``pip install ".[parquet]"`` from the checkout).
Engine adapters run these per partition: :mod:`imageprism.ray`, and the Spark recipe in
the README (``mapInArrow``). Modules: :mod:`~imageprism.columnar.schema` (the versioned
table schema), :mod:`~imageprism.columnar.embed` (:class:`ArrowEmbedder`, read-back),
:mod:`~imageprism.columnar.dedup` (band plan, keys, verification, greedy labels on numpy
arrays), :mod:`~imageprism.columnar.tables` (the same steps on Arrow tables) and
:mod:`~imageprism.columnar.parquet` (tables as Parquet files: chunked atomic writes, checked reads).
"""

from imageprism.columnar.dedup import (
    BandPlan,
    CodeLayout,
    band_keys,
    check_distinct,
    collapse_identical,
    dedup_codes,
    greedy_from_edges,
    labels_from_edges,
    partition_edges,
    plan_bands,
)
from imageprism.columnar.embed import (
    ArrowEmbedder,
    TableEmbeddings,
    embeddings_from_table,
)
from imageprism.columnar.schema import SCHEMA_VERSION, DimensionField, embedding_schema
from imageprism.columnar.tables import (
    attach_representatives,
    edge_rows,
    hash_layout,
    key_rows,
    portable,
)

__all__ = [
    "SCHEMA_VERSION",
    "ArrowEmbedder",
    "BandPlan",
    "CodeLayout",
    "DimensionField",
    "TableEmbeddings",
    "attach_representatives",
    "band_keys",
    "check_distinct",
    "collapse_identical",
    "dedup_codes",
    "edge_rows",
    "embedding_schema",
    "embeddings_from_table",
    "greedy_from_edges",
    "hash_layout",
    "key_rows",
    "labels_from_edges",
    "partition_edges",
    "plan_bands",
    "portable",
]
