"""The exception tree of imageprism.

Every error raised on purpose by imageprism derives from :class:`ImagePrismError`.
Errors caused by the caller (a bad argument, an unreadable image, a malformed
profile) also derive from :class:`ValueError`, so ``except ValueError`` keeps
working in code that does not know about imageprism::

    ImagePrismError
    ├── InputError (ValueError)              the caller passed something unusable
    │   ├── ImageLoadError                   an input could not be read as an image
    │   │   ├── DecompressionBombError       declared pixel count above the limit
    │   │   ├── InputTooLargeError           file size or JPEG scan count above the limit
    │   │   └── WorkerCrashError             the input stopped the worker process embedding it
    │   ├── ConfigError                      unknown dimension, bad weights, bad config
    │   │   ├── ProfileError                 a profile (YAML) is missing or malformed
    │   │   └── DedupBudgetError             a distributed dedup plan is past its budget
    │   ├── DimensionUnavailableError        a dimension this build does not provide
    │   ├── IndexFormatError                 a saved index is missing, damaged or not one
    │   └── UnknownIdError                   an item id that is not in the index
    ├── CacheError                           the persistent cache file is foreign, damaged or unwritable
    ├── IndexWriteError                      an index could not be saved (disk full, read-only)
    │   └── IndexConflictError               another writer is saving it, or saved it since it was loaded
    ├── MissingDependencyError (ImportError) an optional extra is not installed
    └── ModelError                           a model could not be obtained or run
        ├── ModelDownloadError               download failed or checksum mismatch
        ├── ModelNotCachedError              offline and the file is not in the cache
        └── ModelLoadError                   the file is not a usable ONNX model

Messages name the bad value, what is allowed, and how to fix it.
"""

from __future__ import annotations

__all__ = [
    "CacheError",
    "ConfigError",
    "DecompressionBombError",
    "DedupBudgetError",
    "DimensionUnavailableError",
    "ImageLoadError",
    "ImagePrismError",
    "IndexConflictError",
    "IndexFormatError",
    "IndexWriteError",
    "InputError",
    "InputTooLargeError",
    "MissingDependencyError",
    "ModelDownloadError",
    "ModelError",
    "ModelLoadError",
    "ModelNotCachedError",
    "ProfileError",
    "UnknownIdError",
    "WorkerCrashError",
]


class ImagePrismError(Exception):
    """Root of every error imageprism raises on purpose."""


class InputError(ImagePrismError, ValueError):
    """The caller passed a value imageprism cannot use."""


class ImageLoadError(InputError):
    """An input could not be read as an image. The message names the input."""


class DecompressionBombError(ImageLoadError):
    """An image declares more pixels than the configured ``max_pixels`` limit."""


class InputTooLargeError(ImageLoadError):
    """An input is larger than the configured ``max_bytes``, or a JPEG has more scans than allowed."""


class WorkerCrashError(ImageLoadError):
    """An input stopped the worker process embedding it, alone in a fresh process: a crash in a
    decoder or a model, or the system ending the process (for lack of memory, say). The input is
    reported as failed; the batch goes on without it."""


class ConfigError(InputError):
    """Unknown dimension or profile, bad weights, or a config of the wrong type."""


class ProfileError(ConfigError):
    """A profile is missing or malformed. The message names the file and the key."""


class DedupBudgetError(ConfigError):
    """An exact distributed dedup would verify more candidate pairs than its budget allows."""


class DimensionUnavailableError(InputError):
    """The requested dimension is not provided by this installation."""


class CacheError(ImagePrismError):
    """The persistent embedding cache file cannot be used: another application's file, damaged, or
    unwritable. :attr:`path` is the file."""

    def __init__(self, message: str, path: str) -> None:
        super().__init__(message)
        self.path = path


class IndexFormatError(InputError):
    """A saved index cannot be read: missing, damaged, tampered with, or of another format version.

    The message names the index directory and the file or field at fault."""


class IndexWriteError(ImagePrismError):
    """An index could not be saved (disk full, no permission); the last saved state is kept."""


class IndexConflictError(IndexWriteError):
    """Another writer holds the index's lock, or committed to it after this index was loaded."""


class MissingDependencyError(ImagePrismError, ImportError):
    """An optional dependency (an extra) is not installed; the message names the pip command."""


class ModelError(ImagePrismError):
    """A model file could not be obtained or run."""


class ModelDownloadError(ModelError):
    """A model download failed, or the downloaded file has the wrong checksum."""


class ModelNotCachedError(ModelError):
    """Offline mode is on and the model file is not in the local cache."""


class ModelLoadError(ModelError):
    """A model file exists but is not a usable ONNX model for its dimension."""


class UnknownIdError(InputError):
    """An item id that is not in the index (the service answers 404). The message names the id."""
