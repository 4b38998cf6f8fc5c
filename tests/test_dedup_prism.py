"""ImagePrism.dedup, dedup_embeddings, the ``imageprism dedup`` command and contact sheets."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageEnhance

from imageprism import ImageLoadError, ImagePrism
from imageprism._dedup import DedupResult
from imageprism.cli import main
from imageprism.cli._contact_sheet import contact_sheet
from imageprism.errors import ConfigError, InputError


def scene(seed: int, size: int = 96) -> Image.Image:
    """A smooth random picture (blocky noise, blurred): hashes are stable under small edits."""
    rng = np.random.default_rng(seed)
    small = Image.fromarray(rng.integers(0, 256, (6, 6, 3), dtype=np.uint8))
    return small.resize((size, size), Image.Resampling.BICUBIC)


@pytest.fixture
def planted(tmp_path: Path) -> tuple[Path, dict[str, set[str]]]:
    """5 originals; 0..2 have a brighter PNG and a half-size JPEG copy (in a subfolder); one broken file."""
    (tmp_path / "copies").mkdir()
    groups: dict[str, set[str]] = {}
    for i in range(5):
        original = scene(i)
        name = tmp_path / f"photo{i}.png"
        original.save(name)
        groups[str(name)] = {str(name)}
        if i < 3:
            bright = tmp_path / "copies" / f"photo{i}_bright.png"
            ImageEnhance.Brightness(original).enhance(1.08).save(bright)
            small = tmp_path / "copies" / f"photo{i}_small.jpg"
            original.resize((48, 48)).save(small, quality=85)
            groups[str(name)] |= {str(bright), str(small)}
    (tmp_path / "broken.jpg").write_bytes(b"not an image at all")
    return tmp_path, groups


def test_dedup_groups_planted_copies(planted: tuple[Path, dict[str, set[str]]]) -> None:
    folder, groups = planted
    files = sorted(str(p) for p in folder.rglob("*.png")) + sorted(str(p) for p in folder.rglob("*.jpg"))
    files = [f for f in files if not f.endswith("broken.jpg")]
    result = ImagePrism().dedup(files)
    found = [{files[i] for i in members} for members in result.groups.values()]
    assert sorted(map(sorted, found)) == sorted(map(sorted, groups.values()))
    # each input's label is the first input (in input order) of its planted group
    first = {f: min(files.index(m) for m in g) for g in groups.values() for f in g}
    assert result.labels.tolist() == [first[f] for f in files]


def test_failures_are_accounted_for(planted: tuple[Path, dict[str, set[str]]]) -> None:
    folder, _ = planted
    files = [str(folder / "photo0.png"), str(folder / "broken.jpg"), str(folder / "copies" / "photo0_bright.png")]
    with pytest.raises(ImageLoadError, match="broken.jpg"):
        ImagePrism().dedup(files)
    result = ImagePrism().dedup(files, on_error="skip")
    assert result.labels.tolist() == [0, -1, 0]
    assert [f.index for f in result.failures] == [1] and result.unique.tolist() == [0]
    assert result.groups == {0: (0, 2)}


def test_dedup_embeddings_from_a_store_equals_dedup() -> None:
    images = [np.asarray(scene(i % 4)) for i in range(10)]
    images[5] = np.clip(images[1].astype(int) + 6, 0, 255).astype(np.uint8)
    prism = ImagePrism()
    direct = prism.dedup(images, 0.85)
    rows = [prism.embed(image) for image in images]
    from_rows = prism.dedup_embeddings(rows, 0.85)
    stacked = prism.dedup_embeddings({"hash": np.stack([r["hash"] for r in rows])}, 0.85)
    assert direct.labels.tolist() == from_rows.labels.tolist() == stacked.labels.tolist()
    assert direct.labels[5] == 1 and direct.labels[4] == 0  # a planted near copy and an exact one


def test_thresholds_and_defaults() -> None:
    prism = ImagePrism()
    assert prism.dedup([np.asarray(scene(0))]).threshold == 0.9
    assert ImagePrism(profile="dedup").threshold == 0.9
    with pytest.raises(ConfigError, match="needs threshold="):
        ImagePrism(dimensions=["semantic"]).dedup([np.asarray(scene(0))])  # no model is loaded first
    with pytest.raises(ConfigError, match="threshold"):
        prism.dedup([np.asarray(scene(0))], threshold=1.5)
    empty = prism.dedup([])
    assert isinstance(empty, DedupResult) and len(empty) == 0 and empty.groups == {}


def test_cli_text_json_csv_and_contact_sheet(
    planted: tuple[Path, dict[str, set[str]]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder, groups = planted
    sheet = tmp_path / "groups.png"
    assert main(["dedup", str(folder), "--json", "--contact-sheet", str(sheet)]) == 1  # the broken file
    out, err = capsys.readouterr()
    report = json.loads(out)
    assert report["count"] == 12 and report["unique"] == 5
    assert sorted(sorted(g["members"]) for g in report["groups"]) == sorted(map(sorted, groups.values()))
    assert all(g["representative"] == g["members"][0] for g in report["groups"])
    assert [f["path"] for f in report["failures"]] == [str(folder / "broken.jpg")]
    assert "broken.jpg" in err and "contact sheet of 3 groups" in err
    with Image.open(sheet) as image:
        assert image.format == "PNG" and image.width > 3 * 160 and 3 * 160 < image.height < 4 * 200

    assert main(["dedup", str(folder / "copies"), str(folder / "photo1.png"), "--csv"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    by_path = {r["path"]: r for r in rows}
    assert by_path[str(folder / "photo1.png")]["representative"] == str(folder / "copies" / "photo1_bright.png")

    assert main(["dedup", str(folder / "copies"), "--threshold", "0.99"]) == 0
    text = capsys.readouterr().out
    assert "6 inputs" in text and "threshold 0.99" in text


def test_cli_empty_folder_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["dedup", str(tmp_path)]) == 1
    assert "holds no image files" in capsys.readouterr().err


def test_contact_sheet_layout_and_limits() -> None:
    groups = [[np.asarray(scene(g))] * (g + 2) for g in range(4)]
    sheet = contact_sheet(groups, thumb=32, max_per_group=3, max_groups=3, names=[["x"] * len(g) for g in groups])
    cell_w = 32 + 8
    assert sheet.width == 8 + 4 * (cell_w + 8)  # 3 thumbnails + the "+N more" cell
    assert sheet.getpixel((8, 8)) == (46, 160, 67)  # the representative's frame
    with pytest.raises(ConfigError, match="thumb"):
        contact_sheet(groups, thumb=4)


def test_dev_images_with_planted_copies(dev_images: list[Path], tmp_path: Path) -> None:
    originals = dev_images[:8]
    copies = []
    for i, path in enumerate(originals[:4]):
        with Image.open(path) as image:
            copy = tmp_path / f"copy{i}.jpg"
            image.convert("RGB").resize((image.width * 2 // 3, image.height * 2 // 3)).save(copy, quality=80)
            copies.append(copy)
    result = ImagePrism().dedup([*originals, *copies])
    assert result.labels[8:].tolist() == [0, 1, 2, 3]
    assert len(result.unique) == len(set(result.labels[:8].tolist())) >= 7  # the originals stay apart (almost)


def test_progress_bar_only_when_asked(capsys: pytest.CaptureFixture[str]) -> None:
    images = [np.asarray(scene(i % 3)) for i in range(6)]
    ImagePrism().dedup(images, progress=False)
    assert capsys.readouterr().err == ""
    ImagePrism().dedup(images, progress=True)
    err = capsys.readouterr().err
    assert "dedup" in err and "6/6" in err


def test_dedup_embeddings_rejects_bad_input_clearly() -> None:
    prism = ImagePrism()
    good = prism.embed(np.asarray(scene(0)))
    with pytest.raises(InputError, match="embedding 1 has no 'hash' entry"):
        prism.dedup_embeddings([good, {"semantic": np.zeros(3)}])
    with pytest.raises(InputError, match="embedding 1 is a list"):
        prism.dedup_embeddings([good, [1, 2]])  # type: ignore[list-item]
    with pytest.raises(InputError, match="no 'hash' value"):
        prism.dedup_embeddings({"hash": [good["hash"], None]})
    with pytest.raises(InputError, match="differ in shape"):
        prism.dedup_embeddings({"hash": [good["hash"], good["hash"][:2]]})
    with pytest.raises(InputError, match="uint8"):
        prism.dedup_embeddings({"hash": np.zeros((2, 24), np.uint8)})
