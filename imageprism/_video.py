"""Video files as input: frames sampled at a fixed rate, with their timestamps.

Needs PyAV (``pip install ".[video]"`` from the checkout), imported on first use only.

A path is treated as a video when its extension is in :data:`VIDEO_EXTENSIONS`
(case-insensitive); everything else goes to the image loader. Deciding by name
keeps the choice predictable and costs nothing (no file is opened twice); an
animated GIF or WebP stays an image (its first frame), as everywhere else.

Sampling: frames are decoded in order and the first frame at or after each
sampling instant ``0, 1/fps, 2/fps, ...`` (on the stream's own clock, starting
at its first frame) is kept; its real presentation time is reported. A
sampling rate above the video's frame rate keeps every frame once. Sampling is
deterministic, so a second pass (:func:`write_frames`) finds the same frames.

Frames are embedded as they are decoded, a chunk at a time (:func:`embed_inputs`):
only embeddings are kept, so a long video does not fill memory with pixels. A chunk
holds at most :data:`CHUNK` frames and :data:`CHUNK_PIXELS` pixels, so frames of any
size are held a few at a time. ``max_pixels`` applies to frames as to images, from the
stream's declared size, before any frame is decoded (and again to every decoded frame).
Only regular files are opened (a FIFO or device is refused at once).
"""

from __future__ import annotations

import dataclasses
import io
import math
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol, TypeGuard

import numpy as np
from PIL import Image

from imageprism._blend import Blend
from imageprism._dedup import DedupResult, dedup_embeddings, default_threshold
from imageprism._files import atomic_write
from imageprism._image import DEFAULT_MAX_PIXELS, SourceImage, describe_input, file_kind
from imageprism._results import BatchEmbedding, Failure
from imageprism._search.ann import Exact
from imageprism._search.components import DEFAULT_MAX_HOPS, Linkage
from imageprism._types import Embeddings, OnError
from imageprism.dimensions import DimensionPlugin
from imageprism.errors import ConfigError, DecompressionBombError, ImageLoadError, InputError, MissingDependencyError


class Embedder(Protocol):
    """What the video jobs use of an :class:`~imageprism.ImagePrism` (declared here, so this
    module never imports the facade above it)."""

    max_pixels: int

    @property
    def blend(self) -> Blend: ...

    @property
    def plugins(self) -> Mapping[str, DimensionPlugin]: ...

    def embed_batch(
        self, images: Sequence[Any], *, on_error: OnError = ..., progress: bool | None = ..., workers: int | None = ...
    ) -> BatchEmbedding: ...

__all__ = [
    "VIDEO_EXTENSIONS",
    "EmbeddedInputs",
    "VideoDedup",
    "VideoFrame",
    "dedup_inputs",
    "dedup_video",
    "embed_inputs",
    "is_video",
    "sample_frames",
    "write_frames",
]

#: inputs embedded per call while streaming (bounds the decoded frames held at once)
CHUNK = 64
#: pixels of decoded frames held at once while streaming (about 96 MB of RGB); a larger frame goes alone
CHUNK_PIXELS = 32_000_000
#: image inputs (paths, bytes...) embedded per call: large enough to keep every worker busy
PATH_CHUNK = 4096

#: file extensions read as video (lower case, with the dot)
VIDEO_EXTENSIONS: tuple[str, ...] = (
    ".3gp", ".avi", ".flv", ".m4v", ".mkv", ".mov", ".mp4", ".mpeg", ".mpg", ".mts", ".ogv", ".ts", ".webm", ".wmv",
)

_INSTALL_HINT = 'reading video needs PyAV: pip install ".[video]" from the imageprism checkout (or pip install av)'


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

    def source(self, max_pixels: int = DEFAULT_MAX_PIXELS) -> SourceImage:
        """The frame as an input of :class:`~imageprism.ImagePrism` (errors name :attr:`label`)."""
        return SourceImage(self.label, image=self.image, max_pixels=max_pixels)


def frame_label(video: str | os.PathLike[str], time: float) -> str:
    """The label of the frame of ``video`` at ``time`` seconds, e.g. ``"clip.mp4@12.50s"``."""
    return f"{os.fspath(video)}@{time:.2f}s"


def is_video(source: object) -> TypeGuard[str | os.PathLike[str]]:
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
        raise MissingDependencyError(f"{_INSTALL_HINT} ({exc})") from exc
    return av


def sample_frames(
    path: str | os.PathLike[str], *, fps: float, max_pixels: int = DEFAULT_MAX_PIXELS
) -> Iterator[VideoFrame]:
    """Decode ``path`` and yield its frames sampled at ``fps`` frames per second, in order.

    Raises :class:`~imageprism.errors.ImageLoadError` naming the file when it is
    missing, not a regular file, not a video, or fails to decode;
    :class:`~imageprism.errors.DecompressionBombError` before decoding when its frames
    are larger than ``max_pixels``; :class:`ImportError` (with the install command)
    when PyAV is missing.
    """
    fps = check_fps(fps)
    av = _av()
    name = os.fspath(path)
    try:
        kind = file_kind(os.stat(name).st_mode)
    except (OSError, ValueError):
        raise ImageLoadError(f"video file not found: {name!r}") from None
    if kind is not None:
        raise ImageLoadError(f"{name!r} is {kind}, not a video file")
    try:
        # skip_frame: the probe that reads the stream's size must not decode a frame (it would, for H.264)
        container = av.open(name, options={"skip_frame": "all"})
    except av.FFmpegError as exc:
        raise ImageLoadError(f"{name!r} could not be opened as a video: {exc}") from exc
    with container:
        if not container.streams.video:
            raise ImageLoadError(f"{name!r} has no video stream")
        stream = container.streams.video[0]
        _check_frame_size(name, stream.codec_context.width, stream.codec_context.height, max_pixels)
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
                _check_frame_size(name, frame.width, frame.height, max_pixels)  # the size may change mid-stream
                yield VideoFrame(name, round(when, 6), frame.to_image())
                due = (math.floor((elapsed + 1e-6) / step) + 1) * step
        except av.FFmpegError as exc:
            raise ImageLoadError(f"{name!r} could not be decoded after {count} frames: {exc}") from exc
    if count == 0:
        raise ImageLoadError(f"{name!r} has no decodable video frames")


def _check_frame_size(name: str, width: int, height: int, max_pixels: int) -> None:
    if width * height > max_pixels:
        raise DecompressionBombError(
            f"{name!r} has frames of {width}x{height} = {width * height:,} pixels, above the limit of "
            f"{max_pixels:,} pixels; if the video is trusted, raise the limit with ImagePrism(max_pixels=...)"
        )


def write_frames(
    video: str | os.PathLike[str], times: Sequence[float], folder: str | os.PathLike[str], *, fps: float,
    stem: str | None = None, overwrite: bool = False,
) -> list[Path]:
    """Decode ``video`` again and save its sampled frames at ``times`` as PNG files in ``folder``.

    Files are named ``<stem>@<seconds>s.png`` (``stem``: the video's file stem by
    default), each written atomically; an existing file is refused unless
    ``overwrite``. ``times`` must come from :func:`sample_frames` with the same
    ``fps``. Returns the files written, in time order.
    """
    out = Path(os.fspath(folder))
    out.mkdir(parents=True, exist_ok=True)
    wanted = {round(float(t), 6) for t in times}
    written = []
    for frame in sample_frames(video, fps=fps):
        if frame.time in wanted:
            path = out / f"{stem or Path(frame.video).stem}@{frame.time:.2f}s.png"
            data = io.BytesIO()
            frame.image.save(data, format="PNG")
            atomic_write(path, data.getvalue(), overwrite=overwrite)
            written.append(path)
    return written


# -- embedding inputs with videos expanded ------------------------------------------------


@dataclasses.dataclass(frozen=True)
class EmbeddedInputs:
    """Inputs embedded in order, each video replaced by its sampled frames (one entry each).

    ``labels[j]`` names entry ``j`` (the input's name, ``"name@12.50s"`` for a frame);
    ``origins[j]`` is the input it came from; ``times[j]`` a frame's time in seconds
    (``None`` for an image); ``embeddings[j]`` is ``None`` for an entry that failed,
    and every failure (``index``: the entry) is in ``failures``. A video that cannot
    be opened is one failed entry.
    """

    labels: tuple[str, ...]
    origins: tuple[int, ...]
    times: tuple[float | None, ...]
    embeddings: tuple[Embeddings | None, ...]
    failures: tuple[Failure, ...]


def embed_inputs(
    prism: Embedder,
    items: Sequence[object],
    names: Sequence[str],
    *,
    fps: float,
    on_error: OnError = "raise",
    workers: int | None = 1,
) -> EmbeddedInputs:
    """Embed ``items`` with ``prism``, expanding video paths (:func:`is_video`) into frames.

    ``names[i]`` labels input ``i``. Frames are decoded and embedded ``CHUNK`` at a
    time. With ``on_error="skip"``, unreadable inputs and videos become failed
    entries; with ``"raise"`` the first one raises. ``workers``: as for ``embed_batch``.
    """
    fps = check_fps(fps)
    labels: list[str] = []
    origins: list[int] = []
    times: list[float | None] = []
    embeddings: list[Embeddings | None] = []
    failures: list[Failure] = []
    chunk: list[Any] = []
    held = frames = 0  # pixels and number of the decoded frames in ``chunk``

    def flush() -> None:
        nonlocal held, frames
        held = frames = 0
        if not chunk:
            return
        start = len(embeddings) - len(chunk)
        batch = prism.embed_batch(chunk, on_error=on_error, progress=False, workers=workers)
        embeddings[start:] = batch.embeddings
        failures.extend(dataclasses.replace(f, index=start + f.index) for f in batch.failures)
        chunk.clear()

    def entry(i: int, label: str, time: float | None, item: Any, pixels: int = 0) -> None:
        nonlocal held, frames
        labels.append(label)
        origins.append(i)
        times.append(time)
        embeddings.append(None)
        chunk.append(item)
        held += pixels
        frames += time is not None
        # decoded frames are held in memory (CHUNK of them, CHUNK_PIXELS at most); paths are cheap and feed the workers
        if len(chunk) >= PATH_CHUNK or frames >= CHUNK or held >= CHUNK_PIXELS:
            flush()

    for i, (item, name) in enumerate(zip(items, names)):
        if not is_video(item):
            entry(i, name, None, item)
            continue
        try:
            for frame in sample_frames(item, fps=fps, max_pixels=prism.max_pixels):
                size = frame.image.size
                entry(i, frame_label(name, frame.time), frame.time, frame.source(prism.max_pixels), size[0] * size[1])
                del frame  # the chunk holds it now; not kept while the next frame decodes
        except ImageLoadError as exc:
            if on_error == "raise":
                raise
            flush()
            labels.append(name)
            origins.append(i)
            times.append(None)
            embeddings.append(None)
            failures.append(Failure(len(labels) - 1, describe_input(item), exc))
    flush()
    return EmbeddedInputs(tuple(labels), tuple(origins), tuple(times), tuple(embeddings), tuple(failures))


# -- dedup ---------------------------------------------------------------------------------


def dedup_inputs(
    prism: Embedder,
    items: Sequence[object],
    threshold: float | None = None,
    *,
    fps: float,
    on_error: OnError = "skip",
    progress: bool | None = None,
    linkage: Linkage = "representative",
    max_hops: int | None = DEFAULT_MAX_HOPS,
    workers: int | None = 1,
    exact: Exact = True,
) -> tuple[EmbeddedInputs, DedupResult]:
    """:meth:`ImagePrism.dedup <imageprism.ImagePrism.dedup>` over images and the sampled frames of
    videos together; the result's indices refer to the entries of the returned
    :class:`EmbeddedInputs` (frames are inputs labelled ``"clip.mp4@12.50s"``)."""
    names = [os.fspath(x) if isinstance(x, (str, os.PathLike)) else describe_input(x) for x in items]
    embedded = embed_inputs(prism, items, names, fps=fps, on_error=on_error, workers=workers)
    threshold = default_threshold(prism.blend, prism.plugins) if threshold is None else threshold
    result = dedup_embeddings(
        list(embedded.embeddings), plugins=prism.plugins, blend=prism.blend,
        threshold=threshold, failures=embedded.failures, progress=progress, linkage=linkage, max_hops=max_hops,
        exact=exact,
    )
    return embedded, result


@dataclasses.dataclass(frozen=True)
class VideoDedup:
    """The distinct frames of a video (from :meth:`ImagePrism.dedup_video <imageprism.ImagePrism.dedup_video>`).

    Attributes:
        video: the video file.
        fps: the sampling rate used.
        times: the time in seconds of every sampled frame, in order.
        result: the grouping of the sampled frames (indices into ``times``).
    """

    video: str
    fps: float
    times: np.ndarray
    result: DedupResult

    @property
    def distinct_times(self) -> list[float]:
        """Times of the distinct frames (one per group, its first frame), in order."""
        return [float(self.times[i]) for i in self.result.unique]

    @property
    def labels(self) -> list[str]:
        """``"clip.mp4@12.50s"`` for every sampled frame."""
        return [frame_label(self.video, float(t)) for t in self.times]

    def save_frames(self, folder: str | os.PathLike[str], *, overwrite: bool = False) -> list[Path]:
        """Write the distinct frames as PNG files (decodes the video again); returns the files.

        Each file is written atomically; an existing one is refused unless ``overwrite``.
        """
        return write_frames(self.video, self.distinct_times, folder, fps=self.fps, overwrite=overwrite)

    def to_dict(self) -> dict[str, object]:
        """A JSON-ready dictionary: each distinct frame's time with the times of its group."""
        return {
            "video": self.video,
            "fps": self.fps,
            "frames": len(self.times),
            "distinct": [
                {"time": float(self.times[rep]), "members": [float(self.times[i]) for i in members]}
                for rep, members in self.result.groups.items()
            ],
        }

    def __repr__(self) -> str:
        shown = ", ".join(f"{t:.2f}s" for t in self.distinct_times[:8])
        more = ", ..." if len(self.result.unique) > 8 else ""
        return f"VideoDedup({self.video!r}: {len(self.times)} frames at {self.fps:g} fps, {len(self.result.unique)} distinct at [{shown}{more}])"


def dedup_video(
    prism: Embedder,
    video: str | os.PathLike[str],
    threshold: float | None = None,
    *,
    fps: float = 1.0,
    progress: bool | None = None,
) -> VideoDedup:
    """The distinct frames of ``video`` sampled at ``fps`` (see :class:`VideoDedup`)."""
    if not is_video(video):
        raise InputError(f"{video!r} is not a video path; video files end in one of: {', '.join(VIDEO_EXTENSIONS)}")
    embedded, result = dedup_inputs(prism, [video], threshold, fps=fps, on_error="raise", progress=progress)
    return VideoDedup(os.fspath(video), check_fps(fps), np.array(embedded.times, dtype=np.float64), result)
