"""Engine-free columnar core: the embedding table schema, the Arrow embedder, dedup kernels.

Numpy and pyarrow only (pyarrow imported on first use: the ``[parquet]`` extra). Engine
adapters (``imageprism.ray``, the Spark recipe in the README) run these per partition.
"""

from imageprism._columnar.embed import ArrowEmbedder, TableEmbeddings, embeddings_from_table
from imageprism._columnar.schema import SCHEMA_VERSION, DimensionField, embedding_schema

__all__ = ["SCHEMA_VERSION", "ArrowEmbedder", "DimensionField", "TableEmbeddings", "embedding_schema", "embeddings_from_table"]
