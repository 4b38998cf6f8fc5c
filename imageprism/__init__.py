"""imageprism: how similar are these two images, along several dimensions at once.

>>> from imageprism import ImagePrism
>>> prism = ImagePrism()                 # hash only: no downloads
>>> prism.dimensions
('hash',)

Everything public is importable from this package; its submodules are private.
"""

from imageprism._cache import CacheStats, EmbeddingCache
from imageprism._image import DEFAULT_MAX_PIXELS
from imageprism._index import ImageIndex, SearchHit
from imageprism._prism import ImagePrism
from imageprism._profiles import ProfileSpec, list_profiles, load_profile
from imageprism._results import BatchEmbedding, CompareResult, Failure
from imageprism._runtime import ModelRuntime
from imageprism._types import Dimension, Profile
from imageprism._version import __version__
from imageprism._video import VideoDedup
from imageprism.dimensions.hash import HashConfig
from imageprism.errors import (
    ConfigError,
    DecompressionBombError,
    DimensionUnavailableError,
    ImageLoadError,
    ImagePrismError,
    InputError,
    ModelDownloadError,
    ModelError,
    ModelLoadError,
    ModelNotCachedError,
    ProfileError,
)

__all__ = [
    "BatchEmbedding",
    "CacheStats",
    "CompareResult",
    "ConfigError",
    "DEFAULT_MAX_PIXELS",
    "DecompressionBombError",
    "Dimension",
    "DimensionUnavailableError",
    "EmbeddingCache",
    "Failure",
    "HashConfig",
    "ImageIndex",
    "ImageLoadError",
    "ImagePrism",
    "ImagePrismError",
    "InputError",
    "ModelDownloadError",
    "ModelError",
    "ModelLoadError",
    "ModelNotCachedError",
    "ModelRuntime",
    "Profile",
    "ProfileError",
    "ProfileSpec",
    "SearchHit",
    "VideoDedup",
    "__version__",
    "list_profiles",
    "load_profile",
]
