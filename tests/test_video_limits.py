"""Video frames obey max_pixels before decoding and are streamed a few at a time.

The videos are generated here with PyAV (libx264, tiny bitrate); each run is measured in a
fresh process (peak resident memory of that process alone, wall time)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
from bounded import python_code, run_bounded

from imageprism import ImagePrism
from imageprism._video import CHUNK_PIXELS, sample_frames
from imageprism.errors import DecompressionBombError, ImageLoadError

av = pytest.importorskip("av", reason="PyAV is not installed (pip install imageprism[video])")


def write_video(path: Path, side: int, frames: int, rate: int = 25) -> Path:
    """A gray ``side`` x ``side`` H.264 video whose top band changes every frame."""
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=rate)
        stream.width = stream.height = side
        stream.pix_fmt = "yuv420p"
        stream.options = {"preset": "ultrafast", "crf": "51", "tune": "zerolatency"}
        planes = np.full((side * 3 // 2, side), 128, np.uint8)
        for i in range(frames):
            planes[: side // 10] = (i * 37) % 256
            frame = av.VideoFrame.from_ndarray(planes, format="yuv420p")
            frame.pts = i
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


@pytest.fixture(scope="module")
def huge_video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One 10000 x 10000 frame in about 300 KB (about 5 s to encode)."""
    return write_video(tmp_path_factory.mktemp("video") / "huge.mp4", 10_000, 1)


def remux(video: Path, suffix: str) -> Path:
    """The same stream in another container (no re-encoding)."""
    target = video.with_suffix(suffix)
    with av.open(str(video)) as source, av.open(str(target), "w") as out:
        stream = source.streams.video[0]
        copy = out.add_stream_from_template(stream)
        for packet in source.demux(stream):
            if packet.dts is not None:
                packet.stream = copy
                out.mux(packet)
    return target


_EMBED = """
import json, resource, sys, time
from imageprism import ImagePrism, ImagePrismError
from imageprism._video import embed_inputs
path, fps = sys.argv[1], float(sys.argv[2])
prism = ImagePrism()
start = time.perf_counter()
try:
    out = embed_inputs(prism, [path], [path], fps=fps)
    outcome = f"{len(out.labels)} frames"
except ImagePrismError as exc:
    outcome = type(exc).__name__ + ": " + str(exc)
print(json.dumps([outcome, time.perf_counter() - start]))
"""


@pytest.mark.parametrize("container", [".mp4", ".mkv", ".ts"])
def test_huge_frames_are_refused_from_the_stream_size_before_decoding(huge_video: Path, container: str) -> None:
    video = huge_video if container == ".mp4" else remux(huge_video, container)
    assert video.stat().st_size < 1_000_000
    outcome = run_bounded(python_code(_EMBED) + [str(video), "1"], timeout=120)
    outcome.assert_clean()
    message, seconds = json.loads(outcome.stdout)
    assert message.startswith("DecompressionBombError: ") and "10000x10000 = 100,000,000 pixels" in message
    assert "ImagePrism(max_pixels=...)" in message
    assert seconds < 2.0, f"took {seconds:.1f} s"
    # one decoded 10000 x 10000 frame alone is 150 MB (YUV) and 300 MB (RGB)
    assert outcome.peak_mib < 150, f"peak {outcome.peak_mib:.0f} MiB: a frame was decoded"


def test_huge_frames_in_the_cli_are_a_one_line_error(huge_video: Path) -> None:
    outcome = run_bounded([sys.executable, "-m", "imageprism", "dedup", str(huge_video)], timeout=120)
    outcome.assert_clean()
    assert outcome.returncode != 0 and "above the limit of 89,478,485 pixels" in outcome.stderr
    assert outcome.peak_mib < 200


def test_the_limit_applies_to_sample_frames_too(huge_video: Path) -> None:
    with pytest.raises(DecompressionBombError, match="huge.mp4"):
        next(sample_frames(huge_video, fps=1))
    assert ImagePrism(max_pixels=10**8).max_pixels == 10**8  # trusted: raise the limit (not decoded here: 1.4 GB)


def test_frames_are_streamed_with_a_bounded_number_held(tmp_path: Path) -> None:
    """64 frames of 2000 x 2000 (12 MB each as RGB): sampling all 64 must cost about what 8 cost."""
    video = write_video(tmp_path / "long.mp4", 2000, 64)
    peaks = {}
    for fps in (3, 25):  # 8 frames, then all 64
        outcome = run_bounded(python_code(_EMBED) + [str(video), str(fps)], timeout=180)
        outcome.assert_clean()
        message, _ = json.loads(outcome.stdout)
        assert message == ("8 frames" if fps == 3 else "64 frames"), message
        peaks[fps] = outcome.peak_mib
    frame_mib = 2000 * 2000 * 3 / 2**20
    assert peaks[25] - peaks[3] < 16 * frame_mib, peaks  # holding all 64 would add ~640 MiB
    assert peaks[25] < 150 + (CHUNK_PIXELS / 4_000_000 + 4) * 3 * frame_mib, peaks


def test_a_fifo_named_like_a_video_is_refused_at_once(tmp_path: Path) -> None:
    fifo = tmp_path / "clip.mp4"
    os.mkfifo(fifo)
    with pytest.raises(ImageLoadError, match="is a FIFO"):
        next(sample_frames(fifo, fps=1))
