"""dedup's outputs: evidence (scores, one group id) in every format, the HTML report, and
outputs that never destroy a file (issue 20 item 3, issue 14 item 6)."""

from __future__ import annotations

import base64
import csv
import io
import json
import os
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest
from PIL import Image

from imageprism import ImagePrism
from imageprism._files import atomic_write
from imageprism.cli import main
from imageprism.errors import InputError

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "images"


@pytest.fixture()
def folder(tmp_path: Path) -> Path:
    target = tmp_path / "photos"
    shutil.copytree(EXAMPLES, target)
    return target


class _Page(HTMLParser):
    """Groups, cards, their attributes and text, and the embedded images of a report."""

    def __init__(self) -> None:
        super().__init__()
        self.groups: dict[str, list[dict[str, str]]] = {}
        self.images: list[str] = []
        self.scripts = 0
        self.external: list[str] = []
        self._group: str | None = None
        self._card: dict[str, str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "section":
            self._group = a["data-group"]
            self.groups[self._group] = []
        elif tag == "div" and "card" in a.get("class", "").split():
            self._card = {**a, "text": ""}
            self.groups[self._group or ""].append(self._card)
        elif tag == "img":
            self.images.append(a["src"])
        elif tag == "script":
            self.scripts += 1
            if "src" in a:
                self.external.append(a["src"])
        elif tag == "link":
            self.external.append(a.get("href", ""))

    def handle_data(self, data: str) -> None:
        if self._card is not None:
            self._card["text"] += data

    def handle_endtag(self, tag: str) -> None:
        if tag == "div" and self._card is not None and self._card.get("_open", "") == "":
            self._card = None


def test_every_output_shows_the_same_group_ids_and_scores(folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["dedup", str(folder), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert main(["dedup", str(folder), "--csv"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert main(["dedup", str(folder)]) == 0
    text = capsys.readouterr().out

    assert list(rows[0]) == ["path", "representative", "group", "is_representative", "score", "score_hash"]
    prism = ImagePrism()
    for group in report["groups"]:
        in_csv = [r for r in rows if r["group"] == str(group["id"])]
        assert sorted(r["path"] for r in in_csv) == sorted(group["members"])
        for entry in group["scores"]:
            # the score is the member's real score to the kept copy, recomputed here
            expected = prism.compare(entry["path"], group["representative"]).weighted_score
            assert entry["score"] == pytest.approx(expected, abs=1e-6)
            row = next(r for r in in_csv if r["path"] == entry["path"])
            assert float(row["score"]) == pytest.approx(expected, abs=1e-5) and row["score_hash"] == row["score"]
            assert f"{entry['path']}  {expected:.4f} (hash {expected:.4f})" in text
        if len(group["members"]) > 1:
            assert f"group {group['id']} ({len(group['members'])} images)" in text
    assert "1 without a duplicate" in text and "1 groups" not in text


def test_html_report_is_self_contained_and_shows_the_evidence(folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    page_path = tmp_path / "groups.html"
    assert main(["dedup", str(folder), "--report", str(page_path), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    page = _Page()
    page.feed(page_path.read_text(encoding="utf-8"))
    duplicates = {str(g["id"]): g for g in report["groups"] if len(g["members"]) > 1}
    assert set(page.groups) == set(duplicates) and not page.external and page.scripts == 1
    for gid, cards in page.groups.items():
        group = duplicates[gid]
        assert [c["data-path"] for c in cards] == group["members"]
        kept = [c for c in cards if "kept" in c["class"].split()]
        assert [c["data-path"] for c in kept] == [group["representative"]]
        for card, entry in zip(cards[1:], group["scores"]):
            assert float(card["data-score"]) == pytest.approx(entry["score"], abs=1e-6)
            assert f"{entry['score']:.4f}" in card["text"]
        for card in cards:
            with Image.open(card["data-path"]) as image:
                assert f"{image.width}x{image.height}" in card["text"]
            assert f"{os.path.getsize(card['data-path']) / 1000:.1f} kB" in card["text"]
    assert len(page.images) == sum(len(c) for c in page.groups.values())
    for src in page.images:
        assert src.startswith("data:image/jpeg;base64,")
        with Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1]))) as thumb:
            assert thumb.format == "JPEG" and max(thumb.size) == 160


def test_outputs_never_overwrite_without_force(folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    photo = folder / "chelsea.jpg"
    before = photo.read_bytes()
    assert main(["dedup", str(folder), "--contact-sheet", str(photo)]) == 1
    assert "is one of the inputs" in capsys.readouterr().err
    assert main(["dedup", str(folder), "--contact-sheet", str(photo), "--force"]) == 1  # never an input
    assert "is one of the inputs" in capsys.readouterr().err
    assert photo.read_bytes() == before

    sheet = tmp_path / "sheet.png"
    sheet.write_bytes(b"keep me")
    assert main(["dedup", str(folder), "--contact-sheet", str(sheet)]) == 1
    out, err = capsys.readouterr()
    assert out == "" and "already exists; pass --force" in err and len(err.splitlines()) == 1  # before the work
    assert sheet.read_bytes() == b"keep me"
    assert main(["dedup", str(folder), "--contact-sheet", str(sheet), "--force"]) == 0
    assert "contact sheet of 3 groups written" in capsys.readouterr().err
    with Image.open(sheet) as image:
        assert image.format == "PNG"
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []  # no temp file left behind

    assert main(["dedup", str(folder), "--report", str(tmp_path / "missing" / "r.html")]) == 1
    out, err = capsys.readouterr()
    assert out == "" and "does not exist" in err and len(err.splitlines()) == 1


def test_unwritable_destination_is_one_line_before_the_work(folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    assert main(["dedup", str(folder), "--report", str(blocker / "r.html")]) == 1
    out, err = capsys.readouterr()
    assert out == "" and "is not a folder" in err and len(err.strip().splitlines()) == 1
    if os.geteuid() != 0:
        locked = tmp_path / "locked"
        locked.mkdir()
        locked.chmod(0o500)
        assert main(["dedup", str(folder), "--report", str(locked / "r.html")]) == 1
        assert "no write permission" in capsys.readouterr().err


def test_atomic_write_refuses_existing_and_replaces_with_overwrite(tmp_path: Path) -> None:
    target = tmp_path / "out.bin"
    atomic_write(target, b"one")
    with pytest.raises(InputError, match="already exists"):
        atomic_write(target, b"two")
    assert target.read_bytes() == b"one"
    atomic_write(target, b"two", overwrite=True)
    assert target.read_bytes() == b"two" and sorted(p.name for p in tmp_path.iterdir()) == ["out.bin"]


@pytest.mark.skipif(not shutil.which("chromium"), reason="no headless browser (chromium) installed")
def test_html_report_in_a_browser_filters_by_score(folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Loaded in headless Chromium: the page's script hides duplicates outside the score range."""
    page_path = tmp_path / "groups.html"
    assert main(["dedup", str(folder), "--report", str(page_path), "--json"]) == 0
    scores = {e["path"]: e["score"] for g in json.loads(capsys.readouterr().out)["groups"] for e in g["scores"]}
    low, second = sorted(scores.values())[:2]
    cut = round((low + second) / 2, 4)  # hides the lowest-scoring duplicate only
    dom = subprocess.run(
        ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--dump-dom", f"{page_path.as_uri()}#min={cut}"],
        capture_output=True, text=True, timeout=120, check=True,
    ).stdout
    page = _Page()
    page.feed(dom)
    hidden = {c["data-path"] for cards in page.groups.values() for c in cards if "display: none" in c.get("style", "")}
    assert hidden == {p for p, s in scores.items() if s < cut} and len(hidden) == 1


def test_outputs_get_the_usual_file_mode(tmp_path: Path) -> None:
    """Atomic outputs are created through a private temp file, but end with the umask's mode, not 0600."""
    import stat

    mask = os.umask(0o022)
    try:
        atomic_write(tmp_path / "out.bin", b"data")
    finally:
        os.umask(mask)
    assert stat.S_IMODE((tmp_path / "out.bin").stat().st_mode) == 0o644
