"""Getting model files: Hugging Face Hub download, local cache, offline mode, checksums.

One file at a time with :func:`huggingface_hub.hf_hub_download`, into the
imageprism cache directory (Hub cache layout: ``models--org--name/...``).

The order of operations for a Hub :class:`~imageprism._runtime.spec.ModelSpec`:

1. Look in the cache with ``local_files_only=True`` (no network request at all).
   For a pinned 40-hex revision this finds exactly that commit's file.
2. If it is missing and offline mode is on: :class:`ModelNotCachedError` naming
   the file and the one command that fetches it.
3. Otherwise probe the file with one HEAD request under a short, bounded retry
   policy of our own. (``hf_hub_download`` itself retries a dead server for about
   23 s: 1+2+4+8+8 s of back-off.) Unknown repo/revision/file become a
   :class:`ModelDownloadError` saying which one.
4. Download with ``hf_hub_download`` and verify size and sha256 when the spec
   knows them. A mismatch removes the file from the cache and raises.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import importlib
import inspect
import os
import time
from pathlib import Path
from typing import Any

from imageprism._runtime.spec import ModelSpec
from imageprism.errors import ModelDownloadError, ModelNotCachedError

__all__ = ["HubSettings", "download_command", "fetch", "find_cached", "remove_cached", "sha256_of"]

_CHUNK = 1 << 20


@dataclasses.dataclass(frozen=True)
class HubSettings:
    """Resolved download settings (see :class:`~imageprism._runtime.ModelRuntime`)."""

    cache_dir: Path
    endpoint: str
    offline: bool
    retries: int = 2
    timeout: float = 10.0
    retry_wait: float = 0.5
    explicit_cache_dir: bool = False


def sha256_of(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def download_command(spec: ModelSpec, settings: HubSettings) -> str:
    """The one shell command that puts ``spec``'s file into the cache."""
    if spec.dimension:
        cmd = f"imageprism models download {spec.dimension}"
    else:
        cmd = f"imageprism models download --repo {spec.repo} --file {spec.filename}"
        if spec.revision:
            cmd += f" --revision {spec.revision}"
    if settings.explicit_cache_dir:
        cmd += f" --cache-dir {settings.cache_dir}"
    return cmd


def find_cached(spec: ModelSpec, settings: HubSettings) -> Path | None:
    """The cached file for a Hub spec, or ``None``. Pure filesystem: makes no network request.

    Uses ``try_to_load_from_cache`` rather than ``hf_hub_download(local_files_only=True)``:
    in huggingface_hub 2.x the latter builds request headers, whose telemetry part
    fetches ``https://huggingface.co/api/agent-harnesses`` once a day, even offline.
    """
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(spec.repo, spec.filename, cache_dir=settings.cache_dir, revision=spec.revision)
    if isinstance(found, str) and os.path.isfile(found):
        return Path(found)
    return None  # not cached, or cached as "does not exist" (then the download reports it)


def remove_cached(path: Path) -> None:
    """Delete a cached file: the snapshot entry and the blob it points to."""
    blob = path.resolve()
    for p in {path, blob}:
        try:
            p.unlink()
        except FileNotFoundError:
            pass


def fetch(spec: ModelSpec, settings: HubSettings, *, force: bool = False) -> Path:
    """The local path of ``spec``'s file, downloading it when needed (see the module doc).

    ``force`` re-downloads even when cached (not allowed offline). A local spec
    (``spec.path``) is returned as is.
    """
    if spec.path is not None:
        return spec.path
    if not force:
        cached = find_cached(spec, settings)
        if cached is not None:
            _verify(spec, cached, downloaded=False)
            return cached
    if settings.offline:
        state = "is not in the cache" if not force else "cannot be re-downloaded"
        raise ModelNotCachedError(
            f"model file {spec.filename!r} from {spec.repo}@{spec.revision or 'main'} {state} "
            f"({settings.cache_dir}) and offline mode is on (offline=True or HF_HUB_OFFLINE=1). "
            f"Fetch it while online with: {download_command(spec, settings)}"
        )
    _probe(spec, settings)
    path = _download(spec, settings, force=force)
    _verify(spec, path, downloaded=True)
    return path


def _where(spec: ModelSpec, settings: HubSettings) -> str:
    return f"{spec.filename!r} from {spec.repo}@{spec.revision or 'main'} at {settings.endpoint}"


def _probe(spec: ModelSpec, settings: HubSettings) -> None:
    """One HEAD request per attempt, bounded retries: typed errors, and a dead server fails fast.

    The request goes through huggingface_hub's own HTTP session (its proxy, token,
    user-agent and offline handling) but not through its back-off helpers, which
    retry a refused connection for about 23 s in every version checked (0.36, 2.4).
    """
    from huggingface_hub import errors as hf_errors
    from huggingface_hub import hf_hub_url
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        OfflineModeIsEnabled,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )
    from huggingface_hub.utils import build_hf_headers, get_session, hf_raise_for_status

    # huggingface_hub >= 1.0 names the HTTP 404 "RemoteEntryNotFoundError"; 0.x calls it EntryNotFoundError
    remote_entry_not_found: type[Exception] = getattr(
        hf_errors, "RemoteEntryNotFoundError", hf_errors.EntryNotFoundError
    )
    url = hf_hub_url(spec.repo, spec.filename, revision=spec.revision, endpoint=settings.endpoint)
    headers = build_hf_headers(library_name="imageprism")
    retryable: tuple[type[BaseException], ...] = (*_transport_errors(), HfHubHTTPError, OSError)
    attempt = 0
    while True:
        attempt += 1
        try:
            session = get_session()
            response = session.head(url, headers=headers, timeout=settings.timeout, **_no_redirects(session))
            hf_raise_for_status(response)
            if "X-Repo-Commit" not in response.headers:
                raise ModelDownloadError(
                    f"cannot download {_where(spec, settings)}: the server answered HTTP {response.status_code} "
                    "without the X-Repo-Commit header, so it is not a Hugging Face Hub endpoint. Check HF_ENDPOINT "
                    "and proxy settings"
                )
            return
        except GatedRepoError as exc:
            raise ModelDownloadError(
                f"cannot download {_where(spec, settings)}: the repository is gated; accept its terms on the Hub "
                "and set HF_TOKEN, or point the dimension's config at another model"
            ) from exc
        except RepositoryNotFoundError as exc:
            raise ModelDownloadError(
                f"cannot download {_where(spec, settings)}: repository {spec.repo!r} not found (or private: set "
                "HF_TOKEN). Check the repo id in the dimension's config"
            ) from exc
        except RevisionNotFoundError as exc:
            raise ModelDownloadError(
                f"cannot download {_where(spec, settings)}: revision {spec.revision!r} not found in {spec.repo}. "
                "Use an existing commit hash or branch"
            ) from exc
        except remote_entry_not_found as exc:
            raise ModelDownloadError(
                f"cannot download {_where(spec, settings)}: file {spec.filename!r} not found in "
                f"{spec.repo}@{spec.revision or 'main'}. Check the file path in the dimension's config"
            ) from exc
        except OfflineModeIsEnabled as exc:
            raise ModelNotCachedError(
                f"model file {_where(spec, settings)} is not cached and huggingface_hub is in offline mode "
                f"(HF_HUB_OFFLINE was set when it was imported). Fetch it while online with: "
                f"{download_command(spec, settings)}"
            ) from exc
        except retryable as exc:
            status = getattr(getattr(exc, "response", None), "status_code", None)
            transient = status is None or status in (408, 429) or status >= 500
            if not transient or attempt > settings.retries:
                tries = f" after {attempt} attempts" if attempt > 1 else ""
                reason = f"HTTP {status}" if status is not None else f"{type(exc).__name__}: {exc}"
                raise ModelDownloadError(
                    f"cannot download {_where(spec, settings)}{tries} ({reason}). Check the network connection "
                    "(and HF_ENDPOINT / proxy settings), or run offline with a cached copy"
                ) from exc
        time.sleep(settings.retry_wait * 2 ** (attempt - 1))


@functools.cache
def _transport_errors() -> tuple[type[Exception], ...]:
    """Connection/timeout errors of the HTTP client huggingface_hub uses (httpx2 in 2.x, httpx in 1.x, requests in 0.x)."""
    found: list[type[Exception]] = []
    for module, attr in (("httpx2", "TransportError"), ("httpx", "TransportError"), ("requests", "RequestException")):
        try:
            found.append(getattr(importlib.import_module(module), attr))
        except (ImportError, AttributeError):
            continue
    return tuple(found)


def _no_redirects(session: Any) -> dict[str, Any]:
    """Keyword that keeps a HEAD from following redirects (httpx clients follow them by default here)."""
    if "follow_redirects" in inspect.signature(session.head).parameters:
        return {"follow_redirects": False}  # httpx / httpx2
    return {"allow_redirects": False}  # requests


def _download(spec: ModelSpec, settings: HubSettings, *, force: bool) -> Path:
    """``hf_hub_download``, with the probe's bounded retries when the file request answers 408/429/5xx.

    (huggingface_hub resumes a body cut off mid-transfer by itself, but gives up at once on
    an HTTP error status for the file itself, e.g. a CDN answering 500.)
    """
    from huggingface_hub import hf_hub_download

    attempt = 0
    while True:
        attempt += 1
        try:
            return Path(
                hf_hub_download(
                    spec.repo,
                    spec.filename,
                    revision=spec.revision,
                    cache_dir=settings.cache_dir,
                    endpoint=settings.endpoint,
                    etag_timeout=settings.timeout,
                    force_download=force,
                    library_name="imageprism",
                )
            )
        except Exception as exc:  # the probe succeeded a moment ago: whatever failed here, say so with context
            status = _http_status(exc)
            if status is not None and (status in (408, 429) or status >= 500) and attempt <= settings.retries:
                time.sleep(settings.retry_wait * 2 ** (attempt - 1))
                continue
            tries = f" after {attempt} attempts" if attempt > 1 else ""
            raise ModelDownloadError(
                f"downloading {_where(spec, settings)} failed{tries}: {type(exc).__name__}: {exc}"
            ) from exc


def _http_status(exc: BaseException | None) -> int | None:
    """The HTTP status behind an error, looking through its causes (``None`` when there is none)."""
    seen = 0
    while exc is not None and seen < 8:
        status = getattr(getattr(exc, "response", None), "status_code", None)
        if isinstance(status, int):
            return status
        exc = exc.__cause__ or exc.__context__
        seen += 1
    return None


def _verify(spec: ModelSpec, path: Path, *, downloaded: bool) -> None:
    """Check size and sha256 when known; on mismatch remove the file and raise."""
    if spec.sha256 is None and spec.size is None:
        return
    actual_size = path.stat().st_size
    problem = None
    if spec.size is not None and actual_size != spec.size:
        problem = f"expected {spec.size} bytes, got {actual_size}"
    elif spec.sha256 is not None:
        # A Hub blob is named after its etag, which is the sha256 for LFS/Xet files: when it
        # matches, the cached file was verified when it was stored and needs no re-hashing.
        needs_hashing = downloaded or path.resolve().name != spec.sha256
        if needs_hashing and (actual := sha256_of(path)) != spec.sha256:
            problem = f"expected sha256 {spec.sha256}, got {actual}"
    if problem is None:
        return
    remove_cached(path)
    origin = "downloaded" if downloaded else "cached"
    raise ModelDownloadError(
        f"checksum mismatch for {spec.filename!r} from {spec.repo}@{spec.revision or 'main'}: {problem}. "
        f"The {origin} file was removed from the cache; download it again, and if this repeats the file "
        "on the Hub differs from the pinned one (pin another revision/sha256 or report it)"
    )
