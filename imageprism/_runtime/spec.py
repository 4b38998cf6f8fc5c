"""What a model file is: :class:`ModelSpec`, and how a config overrides the default.

Every model-backed dimension declares its default model(s) as frozen
:class:`ModelSpec` values next to its code (and lists them in the plugin's
``default_models`` class variable, which ``imageprism models list`` reads).
A user who brings their own model sets a local ONNX path or another Hub
repo/file/revision in the dimension's config; the dimension turns that into the
spec to load with :func:`resolve_spec`::

    CLIP = ModelSpec(
        repo="Xenova/clip-vit-base-patch32",
        filename="onnx/vision_model_quantized.onnx",
        revision="d15189d7028b43f1d3e65039190477f6af591c2a",
        sha256="583fd111...",
        size=89_117_001,
        license="MIT (upstream OpenAI CLIP code); none declared on the repo",
        inputs=("pixel_values",),
        outputs=("image_embeds",),
        dimension="semantic",
    )
    spec = resolve_spec(CLIP, path=config.model_path, repo=config.model_repo,
                        filename=config.model_file, revision=config.model_revision)
    model = runtime.model(spec)          # downloads/caches, opens one shared session
"""

from __future__ import annotations

import dataclasses
import os
import re
from pathlib import Path

from imageprism.errors import ConfigError

__all__ = ["COMMIT_RE", "ModelSpec", "resolve_spec"]

#: a pinned Hub revision: a full 40-hex commit hash
COMMIT_RE = re.compile(r"^[0-9a-f]{40}$")
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
# "org/name": the Hub allows letters, digits, '-', '_', '.' (no leading/trailing '.' or '-', no '--' or '..')
_REPO_PART = r"[A-Za-z0-9](?:[A-Za-z0-9._-]{0,94}[A-Za-z0-9])?"
_REPO_RE = re.compile(rf"^{_REPO_PART}/{_REPO_PART}$")
# a branch or tag name (git ref rules, simplified): no spaces, no '..', no leading '/' or '-'
_REF_RE = re.compile(r"^[A-Za-z0-9_.][A-Za-z0-9_./-]{0,199}$")


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """One ONNX model file: where it comes from and what it must look like.

    Hub location:

    - ``repo``: Hub repository id, ``"org/name"``.
    - ``filename``: path of the file inside the repository (``"onnx/model.onnx"``).
    - ``revision``: the pinned 40-hex commit. ``None`` means unpinned (the ``main``
      branch); it is resolved once, then the cached copy is used.

    Or a local file:

    - ``path``: a local ONNX file. When set, nothing is downloaded and the Hub
      fields only describe where the file came from (they may be empty).

    Integrity and provenance (``None``/empty when unknown):

    - ``sha256`` (64 lower-case hex) and ``size`` (bytes): checked after download;
      a mismatch removes the file from the cache and raises ``ModelDownloadError``.
    - ``license``: free text shown by ``imageprism models list``.

    Interface:

    - ``inputs`` / ``outputs``: tensor names the dimension feeds and reads. They
      are always checked against the session when it opens; a missing name raises
      ``ModelLoadError`` naming the expected and the actual names.
    - ``io_verified``: whether those names were confirmed against the real file
      (documentation only: the load-time check runs either way).
    - ``dimension``: the dimension whose default this is (``""`` for a user's own
      model). It lets error messages give the exact ``imageprism models download``
      command.
    - ``description``: one line for humans.
    """

    repo: str = ""
    filename: str = ""
    revision: str | None = None
    sha256: str | None = None
    size: int | None = None
    license: str = "unknown"
    inputs: tuple[str, ...] = ()
    outputs: tuple[str, ...] = ()
    io_verified: bool = False
    dimension: str = ""
    description: str = ""
    path: Path | None = None

    def __post_init__(self) -> None:
        if self.path is not None:
            if not isinstance(self.path, Path):
                object.__setattr__(self, "path", Path(os.path.expanduser(os.fspath(self.path))))
        elif not (self.repo and self.filename):
            raise ConfigError(f"a ModelSpec needs either path= or both repo= and filename= (got {self!r})")
        if self.sha256 is not None and not _SHA256_RE.match(self.sha256):
            raise ConfigError(f"sha256 must be 64 lower-case hex digits, got {self.sha256!r}")
        if self.size is not None and self.size <= 0:
            raise ConfigError(f"size must be a positive byte count, got {self.size!r}")
        object.__setattr__(self, "inputs", tuple(self.inputs))
        object.__setattr__(self, "outputs", tuple(self.outputs))

    @property
    def is_local(self) -> bool:
        """True when the spec points at a local file (nothing to download)."""
        return self.path is not None

    @property
    def is_pinned(self) -> bool:
        """True when the revision is a full commit hash (cached loads make no request)."""
        return self.revision is not None and bool(COMMIT_RE.match(self.revision))

    @property
    def location(self) -> str:
        """Human-readable origin: ``repo@revision/filename`` or the local path."""
        if self.path is not None:
            return str(self.path)
        return f"{self.repo}@{self.revision or 'main'}/{self.filename}"

    @property
    def identity(self) -> str:
        """A string that changes whenever the model bytes may change (for cache keys).

        Cheap: no file hashing. Hub files: location plus sha256 when known. Local
        files: path plus size and modification time.
        """
        if self.path is not None:
            try:
                st = self.path.stat()
                return f"file:{self.path.resolve()}:{st.st_size}:{st.st_mtime_ns}"
            except OSError:
                return f"file:{self.path}"
        return f"hub:{self.location}#{self.sha256 or 'unknown'}"


def _check_revision(revision: str) -> None:
    if COMMIT_RE.match(revision) or (_REF_RE.match(revision) and ".." not in revision):
        return
    raise ConfigError(
        f"invalid model revision {revision!r}: use a 40-hex commit hash (recommended: downloads are "
        "verifiable and cached loads make no network request) or a branch/tag name such as 'main'"
    )


def resolve_spec(
    default: ModelSpec,
    *,
    path: str | os.PathLike[str] | None = None,
    repo: str | None = None,
    filename: str | None = None,
    revision: str | None = None,
) -> ModelSpec:
    """The spec to load: ``default``, or a user override of it, validated.

    - ``path``: a local ONNX file to use instead of the Hub file. It must exist
      (``ConfigError`` naming the path otherwise) and excludes the Hub fields.
    - ``repo`` / ``filename`` / ``revision``: another Hub file. Missing parts are
      taken from ``default`` (so ``revision=`` alone re-pins the default repo).
      ``revision`` must be a 40-hex commit or a branch/tag name; a different repo
      without a revision uses ``main`` (unpinned).

    An override keeps the default's expected tensor names (the dimension still
    feeds and reads them; they are checked when the session opens) but drops what
    no longer applies: checksum, size, licence, ``io_verified`` and ``dimension``.
    With no override, ``default`` is returned unchanged.
    """
    hub_override = any(v is not None for v in (repo, filename, revision))
    if path is not None:
        if hub_override:
            raise ConfigError(
                f"give either a local model path ({os.fspath(path)!r}) or a Hub repo/file/revision, not both"
            )
        local = Path(os.path.expanduser(os.fspath(path)))
        if not local.is_file():
            what = "is a directory, not a file" if local.is_dir() else "does not exist"
            raise ConfigError(f"model path {os.fspath(path)!r} {what}; give the path of an existing .onnx file")
        return _user_provided(default, repo=default.repo, filename=default.filename, revision=default.revision, path=local)
    if not hub_override:
        return default
    new_repo = default.repo if repo is None else repo.strip()
    if not _REPO_RE.match(new_repo) or "--" in new_repo or ".." in new_repo:
        raise ConfigError(f"invalid Hub repository {new_repo!r}: expected 'org/name', e.g. 'Xenova/dinov2-small'")
    new_file = default.filename if filename is None else filename.strip().lstrip("/")
    if not new_file or ".." in Path(new_file).parts or new_file.endswith("/"):
        raise ConfigError(f"invalid model filename {filename!r}: expected a file path inside the repo, e.g. 'model.onnx'")
    if revision is not None:
        _check_revision(revision)
        new_rev: str | None = revision
    else:
        new_rev = default.revision if new_repo == default.repo else None
    if (new_repo, new_file, new_rev) == (default.repo, default.filename, default.revision):
        return default
    return _user_provided(default, repo=new_repo, filename=new_file, revision=new_rev, path=None)


def _user_provided(default: ModelSpec, *, repo: str, filename: str, revision: str | None, path: Path | None) -> ModelSpec:
    """``default`` at another location, minus the facts that described the default file."""
    return dataclasses.replace(
        default, repo=repo, filename=filename, revision=revision, path=path,
        sha256=None, size=None, license="user-provided", io_verified=False, dimension="",
    )
