"""The command line's rough edges from issue 20, each reproduced and checked."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import warnings
from pathlib import Path

import pytest

from imageprism import HashConfig, ImagePrism
from imageprism.cli import build_parser, main
from imageprism.cli._common import prism_from_args

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "images"
CHELSEA, BRIGHT = str(EXAMPLES / "chelsea.jpg"), str(EXAMPLES / "chelsea_small_bright.jpg")


def _all_parsers(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    found = [parser]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                found += _all_parsers(child)
    return found


def test_missing_model_error_names_dimension_download_and_flag(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("IMAGEPRISM_CACHE_DIR", str(tmp_path / "models"))
    assert main(["compare", CHELSEA, BRIGHT, "--dimensions", "semantic"]) == 1
    err = capsys.readouterr().err
    assert "'semantic' dimension" in err and "imageprism models download semantic" in err
    assert "--model semantic=PATH" in err and "Config(" not in err and len(err.strip().splitlines()) == 1


def test_model_flag_points_a_dimension_at_a_local_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = tmp_path / "clip.onnx"
    model.write_bytes(b"onnx")
    args = build_parser().parse_args(["compare", "a", "b", "--dimensions", "semantic,hash", "--model", f"semantic={model}"])
    prism = prism_from_args(args)
    assert prism.plugins["semantic"].spec.path == model  # type: ignore[attr-defined]
    assert main(["compare", CHELSEA, BRIGHT, "--dimensions", "semantic", "--model", f"semantic={tmp_path / 'no.onnx'}"]) == 1
    assert "is not a file" in capsys.readouterr().err
    assert main(["compare", CHELSEA, BRIGHT, "--model", f"hash={model}"]) == 1
    assert "uses no model file" in capsys.readouterr().err


@pytest.mark.parametrize("mode, config", [("plain", HashConfig.plain()), ("imagehash", HashConfig.imagehash_compatible()),
                                          ("robust", HashConfig.robust())])
def test_hash_switch_selects_the_hash_flavour(mode: str, config: HashConfig, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["compare", CHELSEA, str(EXAMPLES / "coffee_mirrored.jpg"), "--hash", mode, "--json"]) == 0
    got = json.loads(capsys.readouterr().out)["scores"]["hash"]
    expected = ImagePrism(config={"hash": config}).compare(CHELSEA, str(EXAMPLES / "coffee_mirrored.jpg")).scores["hash"]
    assert got == pytest.approx(expected)


def test_compare_without_profile_gives_a_verdict(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["compare", CHELSEA, BRIGHT]) == 0
    out = capsys.readouterr().out
    assert "verdict   match (threshold 0.9, the default for hash)" in out
    assert main(["compare", CHELSEA, str(EXAMPLES / "coffee.jpg"), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["threshold"] == 0.9 and report["is_match"] is False


def test_python_warnings_become_one_line(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from imageprism.cli import compare

    def noisy(args: argparse.Namespace) -> int:
        warnings.warn("first line\n  second line", UserWarning, stacklevel=1)
        return 0

    monkeypatch.setattr(compare, "run", noisy)
    assert main(["compare", CHELSEA, BRIGHT]) == 0
    err = capsys.readouterr().err
    assert err == "imageprism compare: warning: first line second line\n"


def test_help_has_no_backticks() -> None:
    for parser in _all_parsers(build_parser()):
        assert "`" not in parser.format_help(), parser.prog


def test_search_takes_dimensions_and_the_old_dimension_and_cache(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    index = tmp_path / "index"
    assert main(["index", "build", str(EXAMPLES), "--out", str(index)]) == 0
    capsys.readouterr()
    outputs = []
    for flag in ("--dimensions", "--dimension"):
        assert main(["search", str(index), BRIGHT, "--json", "-k", "1", flag, "hash"]) == 0
        outputs.append(json.loads(capsys.readouterr().out)["hits"])
    assert outputs[0] == outputs[1] and outputs[0][0]["id"] in (CHELSEA, BRIGHT)
    cache = tmp_path / "cache.db"
    assert main(["search", str(index), BRIGHT, "--cache", str(cache)]) == 0
    assert cache.is_file()


def test_index_build_force_and_add_skip_existing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "photos"
    folder.mkdir()
    shutil.copy(CHELSEA, folder)
    index = str(tmp_path / "index")
    assert main(["index", "build", str(folder), "--out", index]) == 0
    assert main(["index", "build", str(folder), "--out", index]) == 1
    assert "--force" in capsys.readouterr().err
    assert main(["index", "build", str(folder), "--out", index, "--force"]) == 0
    shutil.copy(BRIGHT, folder)  # the folder grew
    assert main(["index", "add", index, str(folder)]) == 1
    err = capsys.readouterr().err
    assert "already in the index" in err and "--skip-existing" in err and "ids=" not in err
    assert main(["index", "add", index, str(folder), "--skip-existing", "--cache", str(tmp_path / "c.db")]) == 0
    assert "added 1 items" in capsys.readouterr().out


def test_embed_walks_folders_and_lists_failures_in_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    shutil.copy(CHELSEA, tmp_path)
    (tmp_path / "broken.jpg").write_bytes(b"not an image")
    assert main(["embed", str(tmp_path), "--json"]) == 1
    records = {Path(r["image"]).name: r for r in json.loads(capsys.readouterr().out)}
    assert set(records) == {"chelsea.jpg", "broken.jpg"}
    assert "error" in records["broken.jpg"] and "hash" in records["chelsea.jpg"]
    assert main(["embed", str(tmp_path / "chelsea.jpg")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and len(lines[1]) < 160 and "--json shows them" in lines[1]


def test_folder_walk_warns_about_loops_and_dangling_links(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    if not hasattr(os, "symlink"):
        pytest.skip("no symlinks here")
    root = tmp_path / "root"
    (root / "sub").mkdir(parents=True)
    shutil.copy(CHELSEA, root / "sub")
    os.symlink(root, root / "sub" / "loop")
    os.symlink(tmp_path / "missing.jpg", root / "dangling.jpg")
    other = tmp_path / "other"
    other.mkdir()
    shutil.copy(BRIGHT, other)
    os.symlink(other, root / "linked")
    assert main(["dedup", str(root), "--json"]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out)["count"] == 2  # the symlinked folder is followed
    assert "dangling symlink" in err and "(a loop)" in err and len(err.strip().splitlines()) == 2


def test_one_group_is_singular(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["dedup", CHELSEA, BRIGHT]) == 0
    out = capsys.readouterr().out
    assert "1 group with duplicates (1 duplicate)" in out
