"""imageprism: how similar are these two images, along several dimensions at once.

>>> from imageprism import ImagePrism
>>> prism = ImagePrism()                 # hash only: no downloads
>>> prism.dimensions
('hash',)

Everything public is importable from this package; its submodules are private.
"""

from imageprism._cache import CacheStats, CacheWarning, EmbeddingCache, PersistentCache
from imageprism._dedup import DedupResult
from imageprism._image import DEFAULT_MAX_PIXELS
from imageprism._index import ImageIndex, SearchHit
from imageprism._match import InputMatches, match
from imageprism._prism import ImagePrism
from imageprism._profiles import ProfileSpec, list_profiles, load_profile
from imageprism._results import BatchEmbedding, CompareResult, EmbeddedImage, Failure
from imageprism._runtime import ModelRuntime
from imageprism._types import Dimension, Profile
from imageprism._version import __version__
from imageprism._video import VideoDedup
from imageprism.columnar import ArrowEmbedder, TableEmbeddings, embeddings_from_table
from imageprism.dimensions.face import FaceConfig
from imageprism.dimensions.hash import HashConfig
from imageprism.dimensions.instance import InstanceConfig
from imageprism.dimensions.semantic import SemanticConfig
from imageprism.dimensions.style import StyleConfig
from imageprism.errors import (
    CacheError,
    ConfigError,
    DecompressionBombError,
    DedupBudgetError,
    DimensionUnavailableError,
    ImageLoadError,
    ImagePrismError,
    IndexConflictError,
    IndexFormatError,
    IndexWriteError,
    InputError,
    InputTooLargeError,
    MissingDependencyError,
    ModelDownloadError,
    ModelError,
    ModelLoadError,
    ModelNotCachedError,
    ProfileError,
    UnknownIdError,
    WorkerCrashError,
)

__all__ = [
    "ArrowEmbedder",
    "BatchEmbedding",
    "CacheError",
    "CacheStats",
    "CacheWarning",
    "CompareResult",
    "ConfigError",
    "DEFAULT_MAX_PIXELS",
    "DecompressionBombError",
    "DedupBudgetError",
    "DedupResult",
    "Dimension",
    "DimensionUnavailableError",
    "EmbeddedImage",
    "EmbeddingCache",
    "FaceConfig",
    "Failure",
    "HashConfig",
    "ImageIndex",
    "ImageLoadError",
    "ImagePrism",
    "ImagePrismError",
    "IndexConflictError",
    "IndexFormatError",
    "IndexWriteError",
    "InputError",
    "InputMatches",
    "InputTooLargeError",
    "InstanceConfig",
    "MissingDependencyError",
    "ModelDownloadError",
    "ModelError",
    "ModelLoadError",
    "ModelNotCachedError",
    "ModelRuntime",
    "PersistentCache",
    "Profile",
    "ProfileError",
    "ProfileSpec",
    "SearchHit",
    "SemanticConfig",
    "StyleConfig",
    "TableEmbeddings",
    "UnknownIdError",
    "VideoDedup",
    "WorkerCrashError",
    "__version__",
    "embeddings_from_table",
    "list_profiles",
    "load_profile",
    "match",
]
