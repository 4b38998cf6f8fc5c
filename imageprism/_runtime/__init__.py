"""Model runtime: where model files come from and how ONNX sessions are run.

Holds the settings every model-backed dimension shares. Constructing it is cheap:
nothing is downloaded, onnxruntime is not imported and no session is opened until
a dimension asks for a model. A dimension does::

    from imageprism._runtime import ModelRuntime, ModelSpec, resolve_spec, run_batched

    spec = resolve_spec(DEFAULT_SPEC, path=cfg.model_path, repo=cfg.model_repo,
                        filename=cfg.model_file, revision=cfg.model_revision)
    model = self.runtime.model(spec)     # cached file or download, one shared session
    (embeds,) = run_batched(model, batch, output_names=["image_embeds"])

Modules: :mod:`~imageprism._runtime.spec` (``ModelSpec``, ``resolve_spec``),
:mod:`~imageprism._runtime.hub` (download, cache, offline, checksums),
:mod:`~imageprism._runtime.session` (``OnnxModel``, shared sessions),
:mod:`~imageprism._runtime.batching` (``run_batched``, ``prefetch``, ``progress_bar``).
"""

from __future__ import annotations

import dataclasses
import os
import threading
from collections.abc import Sequence
from pathlib import Path

from imageprism._runtime.batching import prefetch, progress_bar, run_batched
from imageprism._runtime.hub import HubSettings, download_command, fetch, find_cached
from imageprism._runtime.session import OnnxModel, open_model, resolve_providers
from imageprism._runtime.spec import COMMIT_RE, ModelSpec, resolve_spec
from imageprism.errors import ConfigError, ModelDownloadError, ModelNotCachedError

__all__ = [
    "CACHE_DIR_ENV",
    "COMMIT_RE",
    "DEFAULT_ENDPOINT",
    "ModelRuntime",
    "ModelSpec",
    "OnnxModel",
    "default_cache_dir",
    "prefetch",
    "progress_bar",
    "resolve_spec",
    "run_batched",
]

#: environment variable overriding the model cache directory
CACHE_DIR_ENV = "IMAGEPRISM_CACHE_DIR"
DEFAULT_ENDPOINT = "https://huggingface.co"
_TRUE = {"1", "true", "yes", "on"}


def default_cache_dir() -> Path:
    """``$IMAGEPRISM_CACHE_DIR``, else ``<platformdirs user cache>/imageprism/models``."""
    env = os.environ.get(CACHE_DIR_ENV)
    if env:
        return Path(os.path.expanduser(env))
    import platformdirs

    return Path(platformdirs.user_cache_dir("imageprism", appauthor=False)) / "models"


@dataclasses.dataclass
class ModelRuntime:
    """Settings shared by the model-backed dimensions of one ``ImagePrism``.

    - ``cache_dir``: where downloaded models live. Default: ``$IMAGEPRISM_CACHE_DIR``,
      else the platform's user cache (``platformdirs.user_cache_dir("imageprism")/models``).
    - ``offline``: use the local cache only and make no network request. ``None``
      follows the ``HF_HUB_OFFLINE`` environment variable (read when a model is
      first needed).
    - ``providers``: onnxruntime execution providers, in priority order (default:
      CPU). Unavailable ones are dropped with a warning.
    - ``threads``: intra-op threads per session (default: onnxruntime's choice).
    - ``endpoint``: the Hub URL. ``None`` follows ``HF_ENDPOINT``, else
      ``https://huggingface.co`` (tests point it at a loopback server).
    - ``retries``: extra attempts when the Hub is unreachable or answers 5xx
      before a download (back-off 0.5 s, 1 s, ...); ``timeout``: seconds per request.

    Thread-safe: dimensions may call :meth:`model` from several threads.
    """

    cache_dir: str | Path | None = None
    offline: bool | None = None
    providers: Sequence[str] | None = None
    threads: int | None = None
    endpoint: str | None = None
    retries: int = 2
    timeout: float = 10.0
    _opened: dict[ModelSpec, OnnxModel] = dataclasses.field(default_factory=dict, init=False, repr=False, compare=False)
    _lock: threading.Lock = dataclasses.field(default_factory=threading.Lock, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.threads is not None and (
            isinstance(self.threads, bool) or not isinstance(self.threads, int) or self.threads < 1
        ):
            raise ConfigError(f"threads must be a positive integer or None, got {self.threads!r}")
        if self.providers is not None and (
            isinstance(self.providers, str) or not all(isinstance(p, str) for p in self.providers)
        ):
            raise ConfigError(
                f"providers must be a list of onnxruntime provider names such as ['CPUExecutionProvider'], "
                f"got {self.providers!r}"
            )
        if self.retries < 0:
            raise ConfigError(f"retries must be >= 0, got {self.retries!r}")
        if self.timeout <= 0:
            raise ConfigError(f"timeout must be > 0 seconds, got {self.timeout!r}")

    @property
    def cache_path(self) -> Path:
        """The model cache directory in use (see ``cache_dir``)."""
        if self.cache_dir is not None:
            return Path(os.path.expanduser(os.fspath(self.cache_dir)))
        return default_cache_dir()

    @property
    def is_offline(self) -> bool:
        """Whether downloads are disabled (``offline``, else ``HF_HUB_OFFLINE``)."""
        if self.offline is not None:
            return self.offline
        return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in _TRUE

    @property
    def hub(self) -> HubSettings:
        """The resolved download settings."""
        endpoint = self.endpoint or os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT
        return HubSettings(
            cache_dir=self.cache_path,
            endpoint=endpoint.rstrip("/"),
            offline=self.is_offline,
            retries=self.retries,
            timeout=self.timeout,
            explicit_cache_dir=self.cache_dir is not None,
        )

    def is_cached(self, spec: ModelSpec) -> bool:
        """True when ``spec``'s file is available locally (no network request)."""
        if spec.path is not None:
            return spec.path.is_file()
        return find_cached(spec, self.hub) is not None

    def fetch(self, spec: ModelSpec, *, force: bool = False) -> Path:
        """The local path of ``spec``'s file: cached, or downloaded and verified.

        Raises ``ModelNotCachedError`` offline when it is missing, and
        ``ModelDownloadError`` when the download fails or the checksum differs.
        ``force=True`` downloads again even when cached.
        """
        return fetch(spec, self.hub, force=force)

    def _fetch_for_dimension(self, spec: ModelSpec) -> Path:
        """:meth:`fetch`, with an error that names the dimension and both ways to provide its model."""
        try:
            return self.fetch(spec)
        except (ModelDownloadError, ModelNotCachedError) as exc:
            if not spec.dimension or spec.path is not None:
                raise
            dim = spec.dimension
            config = "FaceConfig(embed_path=...)" if dim == "face" else f"{dim.capitalize()}Config(model_path=...)"
            raise type(exc)(
                f"the {dim!r} dimension's model is not available: {exc}. Fetch it with "
                f"'{self.download_command(spec)}', or use a local ONNX file: {config} for the {dim} dimension"
            ) from exc

    def download_command(self, spec: ModelSpec) -> str:
        """The shell command that fetches ``spec`` into this runtime's cache."""
        return download_command(spec, self.hub)

    def model(self, spec: ModelSpec) -> OnnxModel:
        """The opened model for ``spec`` (fetches the file and opens a session on first call).

        One session per (file, providers, threads) is shared by every caller in
        the process; repeated calls with the same spec return at once. The spec's
        ``inputs``/``outputs`` are checked (``ModelLoadError`` if missing).
        """
        opened = self._opened.get(spec)
        if opened is not None:
            return opened
        with self._lock:
            opened = self._opened.get(spec)
            if opened is None:
                path = self._fetch_for_dimension(spec)
                redownload = None if spec.path is not None else f"{self.download_command(spec)} --force"
                opened = open_model(
                    path, spec, providers=resolve_providers(self.providers), threads=self.threads, redownload=redownload
                )
                self._opened[spec] = opened
        return opened
