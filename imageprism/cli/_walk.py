"""The folder walk of the commands that take PATH...: image and video files below folders."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path

from PIL import Image

from imageprism._video import VIDEO_EXTENSIONS
from imageprism.errors import InputError

__all__ = ["image_files"]


def image_files(paths: Sequence[str]) -> list[str]:
    """Files as given; folders replaced by the image and video files below them (recursive, sorted).

    Symlinked folders are followed once; a loop (a link back to a folder already
    walked) and a dangling symlink are skipped with a warning line on stderr.
    """
    wanted = set(Image.registered_extensions()) | set(VIDEO_EXTENSIONS)
    out: list[str] = []
    for path in paths:
        if not os.path.isdir(path):
            out.append(path)
            continue
        found = sorted(_walk(path, wanted))
        if not found:
            raise InputError(
                f"folder {path!r} holds no image files (looked for .jpg, .png, .webp and the other Pillow "
                "formats) and no video files (.mp4, .mov, .mkv, .webm and the other video extensions)"
            )
        out.extend(found)
    return out


def _walk(root: str, wanted: set[str]) -> list[str]:
    seen = {os.path.realpath(root)}
    found = []
    for folder, dirs, files in os.walk(root, followlinks=True):
        for name in list(dirs):
            link = os.path.join(folder, name)
            real = os.path.realpath(link)
            if real in seen:  # a symlink loop, or a second way into a folder already walked
                dirs.remove(name)
                _warn(f"skipped {link!r}: a symlink to {real!r}, which this walk already covers (a loop)")
            seen.add(real)
        for name in files:
            file = os.path.join(folder, name)
            if Path(name).suffix.lower() not in wanted:
                continue
            if os.path.islink(file) and not os.path.exists(file):
                _warn(f"skipped {file!r}: a dangling symlink (its target {os.readlink(file)!r} does not exist)")
            elif os.path.isfile(file):
                found.append(file)
    return found


def _warn(message: str) -> None:
    sys.stderr.write(f"imageprism: warning: {message}\n")
