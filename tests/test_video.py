"""Video files as input: frame sampling, indexing frames, and the missing-PyAV error.

The videos are built here with PyAV from the dev photos (nothing is downloaded).
"""

from __future__ import annotations

import json
import re
import shutil
import sys
from pathlib import Path

import pytest
from PIL import Image

from imageprism import (
    ConfigError,
    ImageIndex,
    ImageLoadError,
    ImagePrism,
    InputError,
    MissingDependencyError,
)
from imageprism._video import VIDEO_EXTENSIONS, is_video, sample_frames
from imageprism.cli import main

RATE = 10  # frames per second of the generated videos
HOLD = 10  # frames each scene is held: one second


def _scenes(dev_images: list[Path], count: int) -> list[Image.Image]:
    return [Image.open(path).convert("RGB").resize((160, 112)) for path in dev_images[:count]]


def write_video(path: Path, scenes: list[Image.Image], order: list[int], *, codec: str = "mpeg4") -> Path:
    """A ``RATE`` fps video showing ``scenes[i]`` for ``HOLD`` frames, for each ``i`` in ``order``."""
    av = pytest.importorskip("av", reason='PyAV is not installed (pip install ".[video]")')
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=RATE)
        stream.width, stream.height = scenes[0].size
        stream.pix_fmt = "yuv420p"
        for scene in order:
            for _ in range(HOLD):
                for packet in stream.encode(av.VideoFrame.from_image(scenes[scene])):
                    container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


@pytest.fixture(scope="module")
def clip(dev_images: list[Path], tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Image.Image]]:
    """Scenes 0, 1, 2, then scene 0 again: four seconds."""
    scenes = _scenes(dev_images, 3)
    path = write_video(tmp_path_factory.mktemp("video") / "clip.mp4", scenes, [0, 1, 2, 0])
    return path, scenes


def test_frames_are_sampled_at_the_given_rate(clip) -> None:
    path, _ = clip
    frames = list(sample_frames(path, fps=2))
    assert [f.time for f in frames] == pytest.approx([0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5])
    assert frames[3].label == f"{path}@1.50s"
    assert frames[0].image.size == (160, 112) and frames[0].image.mode == "RGB"
    assert len(list(sample_frames(path, fps=0.5))) == 2  # t = 0 and 2
    assert len(list(sample_frames(path, fps=1000))) == 4 * HOLD  # never more than every frame


def test_index_holds_frames_with_timestamps(clip, dev_images) -> None:
    path, scenes = clip
    index = ImageIndex.build([path, *dev_images[3:8]], fps=2)
    assert index.ids[:8] == tuple(f"{path}@{t:.2f}s" for t in (0, 0.5, 1, 1.5, 2, 2.5, 3, 3.5))
    hits = index.search(scenes[1], k=2)
    assert {h.id for h in hits} == {f"{path}@1.00s", f"{path}@1.50s"}
    assert hits[0].score > 0.9
    with pytest.raises(InputError, match="is a video"):
        index.search(path)


def test_unreadable_video_is_reported(tmp_path, dev_images) -> None:
    pytest.importorskip("av", reason='PyAV is not installed (pip install ".[video]")')
    fake = tmp_path / "fake.mp4"
    fake.write_bytes(b"\x00" * 1000)
    with pytest.raises(ImageLoadError, match="fake.mp4"):
        list(sample_frames(fake, fps=1))
    with pytest.raises(ImageLoadError, match="not found"):
        list(sample_frames(tmp_path / "none.mp4", fps=1))
    index = ImageIndex()
    failures = index.add([fake, dev_images[0]], on_error="skip")
    assert [f.index for f in failures] == [0] and index.ids == (str(dev_images[0]),)


def test_video_paths_are_recognised_by_extension() -> None:
    assert is_video("a/clip.MP4") and is_video(Path("x.webm")) and ".mkv" in VIDEO_EXTENSIONS
    assert not is_video("anim.gif") and not is_video(b"clip.mp4") and not is_video("clip")


def test_bad_rate_is_refused() -> None:
    for fps in (0, -1, float("nan"), "2", True):
        with pytest.raises(ConfigError, match="fps="):
            list(sample_frames("clip.mp4", fps=fps))


def test_missing_pyav_names_the_extra(monkeypatch, tmp_path) -> None:
    monkeypatch.setitem(sys.modules, "av", None)  # makes "import av" fail
    (tmp_path / "clip.mp4").write_bytes(b"")
    with pytest.raises(MissingDependencyError, match=r"pip install \"\.\[video\]\"") as info:
        list(sample_frames(tmp_path / "clip.mp4", fps=1))
    assert isinstance(info.value, ImportError)  # still an ImportError for code that expects one


def test_cli_reports_missing_pyav_in_one_line(tmp_path) -> None:
    import subprocess

    (tmp_path / "clip.mp4").write_bytes(b"")
    code = "import sys; sys.modules['av'] = None; from imageprism.cli import main; sys.exit(main(sys.argv[1:]))"
    out = subprocess.run([sys.executable, "-c", code, "dedup", str(tmp_path / "clip.mp4")], capture_output=True, text=True, timeout=120)
    assert out.returncode == 1
    assert 'pip install ".[video]"' in out.stderr and "Traceback" not in out.stderr


# -- dedup ------------------------------------------------------------------------------------


def test_repeated_scenes_dedup_to_the_distinct_frames(clip, tmp_path) -> None:
    path, scenes = clip
    found = ImagePrism().dedup_video(path, fps=2)
    assert found.times.tolist() == pytest.approx([0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5])
    assert found.result.labels.tolist() == [0, 0, 2, 2, 4, 4, 0, 0]  # scene 0 comes back at 3 s
    assert found.distinct_times == pytest.approx([0.0, 1.0, 2.0])
    assert found.labels[2] == f"{path}@1.00s"
    assert found.to_dict()["distinct"][0] == {"time": 0.0, "members": [0.0, 0.5, 3.0, 3.5]}

    files = found.save_frames(tmp_path / "frames")
    assert [f.name for f in files] == ["clip@0.00s.png", "clip@1.00s.png", "clip@2.00s.png"]
    prism = ImagePrism()
    for file, scene in zip(files, scenes):
        assert prism.compare(file, scene).scores["hash"] > 0.9
    with pytest.raises(InputError, match="already exists"):
        found.save_frames(tmp_path / "frames")  # never replaces a file silently
    assert found.save_frames(tmp_path / "frames", overwrite=True) == files


def test_the_sampling_rate_decides_what_is_seen(dev_images, tmp_path) -> None:
    scenes = _scenes(dev_images, 3)
    path = write_video(tmp_path / "quick.mkv", scenes, [0, 1, 0, 1, 2], codec="ffv1")  # 1 s per scene
    prism = ImagePrism()
    assert prism.dedup_video(path, fps=1).distinct_times == pytest.approx([0.0, 1.0, 4.0])
    assert prism.dedup_video(path, fps=0.5).distinct_times == pytest.approx([0.0, 4.0])  # scenes 0, 0, 2: 1 is missed
    with pytest.raises(InputError, match="not a video path"):
        prism.dedup_video(dev_images[0], fps=1)


def test_cli_dedup_writes_the_distinct_frames(clip, dev_images, tmp_path, capsys) -> None:
    path, scenes = clip
    out = tmp_path / "frames"
    assert main(["dedup", str(path), "--fps", "2", "--out", str(out), "--json"]) == 0
    captured = capsys.readouterr()
    groups = json.loads(captured.out)["groups"]
    assert [g["representative"] for g in groups] == [f"{path}@{t:.2f}s" for t in (0, 1, 2)]
    assert sorted(p.name for p in out.iterdir()) == ["clip@0.00s.png", "clip@1.00s.png", "clip@2.00s.png"]
    assert "3 distinct frames written" in captured.err

    still = tmp_path / "still.png"
    scenes[1].save(still)
    assert main(["dedup", str(still), str(path), "--fps", "1", "--csv"]) == 0
    rows = capsys.readouterr().out.splitlines()[1:]
    # the frame joins the image given first (group ids count from 1, as in the text output), with its score
    assert re.fullmatch(rf"{re.escape(f'{path}@1.00s,{still},1,false,')}(0\.9\d+|1\.0+),\1", rows[2]), rows[2]

    assert main(["dedup", str(still), "--out", str(out)]) == 1
    assert "no input is a video" in capsys.readouterr().err
    assert main(["dedup", str(path), "--contact-sheet", str(tmp_path / "s.png")]) == 1
    assert "--frames DIR" in capsys.readouterr().err


def test_cli_frames_of_videos_with_one_name_never_collide_or_overwrite(clip, dev_images, tmp_path, capsys) -> None:
    path, _ = clip
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    shutil.copy(path, tmp_path / "a" / "clip.mp4")
    write_video(tmp_path / "b" / "clip.mp4", _scenes(dev_images, 6)[3:], [0, 1])  # other scenes, same name
    out = tmp_path / "frames"
    args = ["dedup", str(tmp_path / "a"), str(tmp_path / "b"), "--fps", "1", "--frames", str(out)]
    assert main(args) == 0
    assert "5 distinct frames written" in capsys.readouterr().err
    names = sorted(p.name for p in out.iterdir())
    assert names == ["clip-2@0.00s.png", "clip-2@1.00s.png", "clip@0.00s.png", "clip@1.00s.png", "clip@2.00s.png"]
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    assert main(args) == 1  # the frames exist: refused, nothing replaced
    assert "already exists; refusing to overwrite" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert main([*args, "--force"]) == 0
    assert sorted(p.name for p in out.iterdir()) == names
