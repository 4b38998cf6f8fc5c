"""The files of a saved index: the manifest's format and reading arrays back, bounded and checked."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from imageprism._prism import ImagePrism
from imageprism._profiles import load_profile
from imageprism._types import Profile
from imageprism._version import __version__
from imageprism.errors import ConfigError, InputError

__all__ = [
    "FORMAT_NAME", "FORMAT_VERSION", "MANIFEST", "load_array", "load_arrays", "prism_from_manifest", "profile_ref",
    "read_manifest", "save_arrays",
]

#: version of the on-disk layout written by :meth:`ImageIndex.save <imageprism.ImageIndex.save>`
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
FORMAT_NAME = "imageprism-index"


def read_manifest(folder: Path) -> dict[str, Any]:
    file = folder / MANIFEST
    if not file.is_file():
        hint = "" if folder.exists() else " (no such directory)"
        raise InputError(f"{str(folder)!r} is not an imageprism index{hint}: {MANIFEST} is missing; build one with ImageIndex.save")
    try:
        manifest = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"index {str(folder)!r}: {MANIFEST} cannot be read: {exc}") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT_NAME:
        raise InputError(f"{str(file)!r} is not an imageprism index manifest")
    version = manifest.get("format_version")
    if version != FORMAT_VERSION:
        raise InputError(
            f"index {str(folder)!r} has format version {version!r}; this imageprism {__version__} reads version "
            f"{FORMAT_VERSION}; rebuild the index with this version"
        )
    for key, kind in (("dimensions", dict), ("weights", dict), ("ids", list), ("count", int), ("missing", str)):
        if not isinstance(manifest.get(key), kind):
            raise InputError(f"index {str(folder)!r} is damaged: {MANIFEST} has no valid {key!r}")
    return manifest


def load_array(file: Path) -> np.ndarray:
    try:
        return np.load(file, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise InputError(f"index file {str(file)!r} cannot be read: {exc}") from exc


def save_arrays(folder: Path, stem: str, arrays: dict[str, np.ndarray]) -> dict[str, str]:
    """Write each array to ``<stem>.<key>.npy`` in ``folder``; returns key -> file name (for the manifest)."""
    files = {}
    for key, array in arrays.items():
        files[key] = f"{stem}.{key}.npy"
        np.save(folder / files[key], np.ascontiguousarray(array), allow_pickle=False)
    return files


def load_arrays(folder: Path, files: object) -> dict[str, np.ndarray]:
    """Read back what :func:`save_arrays` wrote, from the manifest's ``files`` entry."""
    if not isinstance(files, dict) or not all(isinstance(f, str) and "/" not in f and "\\" not in f for f in files.values()):
        raise InputError(f"index {str(folder)!r} is damaged: {MANIFEST} lists invalid array files {files!r}")
    return {key: load_array(folder / file) for key, file in files.items()}


def profile_ref(prism: ImagePrism) -> str | None:
    """The manifest's ``profile``: a built-in profile's name, else the profile file's absolute path."""
    spec = prism.profile
    if spec is None:
        return None
    if spec.name in {p.value for p in Profile} and load_profile(spec.name).source == spec.source:
        return spec.name
    return str(spec.source.resolve())


def prism_from_manifest(manifest: Mapping[str, Any], folder: Path) -> ImagePrism:
    """The ``ImagePrism`` an index was saved with, from the manifest's profile and weights."""
    profile = manifest.get("profile")
    try:
        if profile is not None:
            return ImagePrism(profile=profile, weights=manifest["weights"])
        return ImagePrism(weights=manifest["weights"])
    except ConfigError as exc:
        raise ConfigError(f"index {str(folder)!r}: cannot rebuild its ImagePrism ({exc}); pass prism=") from exc
