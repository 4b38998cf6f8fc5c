"""Video files as input: frames sampled at a fixed rate, with their timestamps.

Needs PyAV (``pip install imageprism[video]``), imported on first use only.

A path is treated as a video when its extension is in :data:`VIDEO_EXTENSIONS`
(case-insensitive); everything else goes to the image loader. Deciding by name
keeps the choice predictable and costs nothing (no file is opened twice); an
animated GIF or WebP stays an image (its first frame), as everywhere else.

Sampling: frames are decoded in order and the first frame at or after each
sampling instant ``0, 1/fps, 2/fps, ...`` (on the stream's own clock, starting
at its first frame) is kept; its real presentation time is reported. A
sampling rate above the video's frame rate keeps every frame once.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from PIL import Image

from imageprism._image import SourceImage
from imageprism.errors import ConfigError, ImageLoadError

__all__ = ["VIDEO_EXTENSIONS", "VideoFrame", "is_video", "sample_frames"]

#: file extensions read as video (lower case, with the dot)
VIDEO_EXTENSIONS: tuple[str, ...] = (
    ".3gp", ".avi", ".flv", ".m4v", ".mkv", ".mov", ".mp4", ".mpeg", ".mpg", ".mts", ".ogv", ".ts", ".webm", ".wmv",
)

_INSTALL_HINT = "reading video needs PyAV: pip install imageprism[video]"


@dataclasses.dataclass(frozen=True)
class VideoFrame:
    """One sampled frame: the video it came from, its time in seconds, its RGB pixels."""

    video: str
    time: float
    image: Image.Image = dataclasses.field(repr=False)

    @property
    def label(self) -> str:
        """``"clip.mp4@12.50s"``: the file name and the frame's time."""
        return frame_label(self.video, self.time)

    def source(self) -> SourceImage:
        """The frame as an input of :class:`~imageprism.ImagePrism` (errors name :attr:`label`)."""
        return SourceImage(self.label, image=self.image)


def frame_label(video: str | os.PathLike[str], time: float) -> str:
    """The label of the frame of ``video`` at ``time`` seconds, e.g. ``"clip.mp4@12.50s"``."""
    return f"{os.fspath(video)}@{time:.2f}s"


def is_video(source: object) -> bool:
    """Whether ``source`` is a path (``str`` or ``os.PathLike``) with a video extension."""
    return isinstance(source, (str, os.PathLike)) and Path(os.fspath(source)).suffix.lower() in VIDEO_EXTENSIONS


def check_fps(fps: float) -> float:
    """Validate a sampling rate (frames per second)."""
    if isinstance(fps, bool) or not isinstance(fps, (int, float)) or not math.isfinite(fps) or fps <= 0:
        raise ConfigError(f"fps={fps!r} is invalid; use a positive number of frames per second to sample (e.g. 1 or 2)")
    return float(fps)


def _av() -> Any:
    try:
        import av
    except ImportError as exc:
        raise ImportError(f"{_INSTALL_HINT} ({exc})") from exc
    return av


def sample_frames(path: str | os.PathLike[str], *, fps: float) -> Iterator[VideoFrame]:
    """Decode ``path`` and yield its frames sampled at ``fps`` frames per second, in order.

    Raises :class:`~imageprism.errors.ImageLoadError` naming the file when it is
    missing, not a video, or fails to decode; :class:`ImportError` (with the
    install command) when PyAV is missing.
    """
    fps = check_fps(fps)
    av = _av()
    name = os.fspath(path)
    if not Path(name).is_file():
        raise ImageLoadError(f"video file not found: {name!r}")
    try:
        container = av.open(name)
    except av.FFmpegError as exc:
        raise ImageLoadError(f"{name!r} could not be opened as a video: {exc}") from exc
    with container:
        if not container.streams.video:
            raise ImageLoadError(f"{name!r} has no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        step = 1.0 / fps
        start: float | None = None
        due = 0.0
        count = 0
        try:
            for frame in container.decode(stream):
                when = frame.time if frame.time is not None else count / float(stream.average_rate or 1)
                count += 1
                if start is None:
                    start = when
                elapsed = when - start
                if elapsed + 1e-6 < due:
                    continue
                yield VideoFrame(name, round(when, 6), frame.to_image())
                due = (math.floor((elapsed + 1e-6) / step) + 1) * step
        except av.FFmpegError as exc:
            raise ImageLoadError(f"{name!r} could not be decoded after {count} frames: {exc}") from exc
    if count == 0:
        raise ImageLoadError(f"{name!r} has no decodable video frames")
