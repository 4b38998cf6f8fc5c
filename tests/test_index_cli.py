"""``imageprism index build|add`` and ``imageprism search``."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest
from PIL import Image

from imageprism import ImageIndex
from imageprism.cli import main


@pytest.fixture()
def photos(dev_images: list[Path], tmp_path: Path) -> Path:
    """A folder (with a subfolder) of six dev photos and a text file to ignore."""
    folder = tmp_path / "photos"
    (folder / "more").mkdir(parents=True)
    for path in dev_images[:4]:
        shutil.copy(path, folder / path.name)
    for path in dev_images[4:6]:
        shutil.copy(path, folder / "more" / path.name)
    (folder / "notes.txt").write_text("not an image")
    return folder


def test_build_add_and_search(photos, dev_images, tmp_path, capsys) -> None:
    index_dir = tmp_path / "idx"
    assert main(["index", "build", str(photos), "--out", str(index_dir)]) == 0
    assert "indexed 6 items" in capsys.readouterr().out
    assert len(ImageIndex.load(index_dir)) == 6

    assert main(["index", "add", str(index_dir), str(dev_images[6]), str(tmp_path / "missing.png")]) == 1
    captured = capsys.readouterr()
    assert "added 1 items" in captured.out and "missing.png" in captured.err
    assert ImageIndex.load(index_dir).ids[-1] == str(dev_images[6])

    query = tmp_path / "query.jpg"
    Image.open(dev_images[2]).convert("RGB").resize((300, 200)).save(query, quality=80)
    assert main(["search", str(index_dir), str(query), "-k", "3", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert Path(result["hits"][0]["id"]).name == dev_images[2].name
    assert len(result["hits"]) == 3 and set(result["hits"][0]["scores"]) == {"hash"}

    assert main(["search", str(index_dir), str(query), "-k", "1", "--dimension", "hash"]) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith("1  ") and dev_images[2].name in line and "hash=" in line


def test_build_with_dimensions_is_remembered(photos, tmp_path, capsys) -> None:
    index_dir = tmp_path / "idx"
    profile = tmp_path / "big.yaml"
    profile.write_text("weights: {hash: 1}\nsettings: {hash: {hash_size: 16}}\n")
    assert main(["index", "build", str(photos), "--out", str(index_dir), "--profile", str(profile)]) == 0
    loaded = ImageIndex.load(index_dir)
    assert loaded.prism.plugins["hash"].config.hash_size == 16
    assert main(["search", str(index_dir), str(next(photos.glob("*.png"))), "--profile", "dedup"]) == 1
    assert "configures 'hash' differently" in capsys.readouterr().err


def test_errors_are_one_line(photos, tmp_path, capsys) -> None:
    index_dir = tmp_path / "idx"
    assert main(["index", "build", str(photos), "--out", str(index_dir)]) == 0
    assert main(["index", "build", str(photos), "--out", str(index_dir)]) == 1
    assert "already holds an index" in capsys.readouterr().err
    assert main(["search", str(index_dir), str(photos / "notes.txt")]) == 1
    assert "notes.txt" in capsys.readouterr().err
    assert main(["search", str(index_dir), str(next(photos.glob("*.png"))), "--weights", "hash:1"]) == 1
    assert "DIM=WEIGHT" in capsys.readouterr().err
    assert main(["search", str(tmp_path / "nothing"), str(next(photos.glob("*.png")))]) == 1
    assert "not an imageprism index" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["index", "build", str(empty), "--out", str(tmp_path / "idx2")]) == 1
    assert "holds no image files" in capsys.readouterr().err


def test_video_without_pyav_names_the_extra(photos, tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.setitem(sys.modules, "av", None)
    clip = tmp_path / "clip.mp4"
    clip.write_bytes(b"\x00" * 10)
    assert main(["index", "build", str(clip), "--out", str(tmp_path / "idx")]) == 1
    assert 'pip install ".[video]"' in capsys.readouterr().err
    assert not (tmp_path / "idx").exists()
