"""The files of a saved index: the manifest's format and reading arrays back, bounded and checked."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from imageprism._version import __version__
from imageprism.errors import InputError

__all__ = ["FORMAT_NAME", "FORMAT_VERSION", "MANIFEST", "load_array", "read_manifest"]

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
