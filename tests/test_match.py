"""match: each input's best library items under a threshold, streamed (issue 20 item 2)."""

from __future__ import annotations

import csv
import io
import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from imageprism import ImageIndex, ImagePrism, match
from imageprism.cli import main
from imageprism.errors import ConfigError

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "images"
INPUTS = sorted(str(p) for p in EXAMPLES.glob("*.jpg"))


@pytest.fixture()
def library(tmp_path: Path) -> Path:
    folder = tmp_path / "library"
    folder.mkdir()
    for name in ("astronaut.jpg", "coffee.jpg", "rocket.jpg"):
        shutil.copy(EXAMPLES / name, folder / name)
    return folder


def test_matches_equal_brute_force_comparison(library: Path) -> None:
    prism = ImagePrism()
    index = ImageIndex(prism)
    index.add(sorted(str(p) for p in library.iterdir()))
    for threshold, k in ((0.9, 1), (0.55, 2), (0.0, 3)):
        found = list(match(index, INPUTS, threshold=threshold, k=k, chunk_size=3))
        assert [m.input for m in found] == INPUTS
        for m in found:
            brute = sorted(((prism.compare(m.input, item).weighted_score, item) for item in index.ids), reverse=True)
            expected = [(s, item) for s, item in brute if s >= threshold][:k]
            assert [h.score for h in m.matches] == pytest.approx([s for s, _ in expected])
            assert {h.id for h in m.matches} <= {item for s, item in brute if s >= threshold}
            assert all(h.scores["hash"] == h.score for h in m.matches)
    by_input = {m.input: [h.id for h in m.matches] for m in match(index, INPUTS)}
    assert by_input[str(EXAMPLES / "coffee_mirrored.jpg")] == [str(library / "coffee.jpg")]
    assert by_input[str(EXAMPLES / "chelsea.jpg")] == []


def test_inputs_stream_a_chunk_at_a_time() -> None:
    rng = np.random.default_rng(1)
    index = ImageIndex(ImagePrism())
    index.add([rng.integers(0, 256, (32, 32)).astype(np.uint8)], ids=["x"])
    consumed = 0

    def inputs() -> Iterator[np.ndarray]:
        nonlocal consumed
        for _ in range(50):
            consumed += 1
            yield rng.integers(0, 256, (32, 32)).astype(np.uint8)

    results = match(index, inputs(), chunk_size=8)
    next(results)
    assert consumed == 8  # only the first chunk was read
    assert len(list(results)) == 49 and consumed == 50


def test_failed_inputs_are_reported_not_dropped(library: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"nope")
    index = ImageIndex(ImagePrism())
    index.add([str(library / "coffee.jpg")])
    found = list(match(index, [str(broken), str(EXAMPLES / "coffee.jpg")]))
    assert found[0].error is not None and found[0].matches == () and "broken.jpg" in str(found[0].error)
    assert [h.id for h in found[1].matches] == [str(library / "coffee.jpg")]
    with pytest.raises(ConfigError, match="k=0"):
        list(match(index, [], k=0))


def test_cli_json_csv_text_and_saved_index(library: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["match", str(library), "--inputs", str(EXAMPLES), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert [r["input"] for r in report] == INPUTS
    mirrored = next(r for r in report if r["input"].endswith("coffee_mirrored.jpg"))
    (hit,) = mirrored["matches"]
    assert hit["id"] == str(library / "coffee.jpg") and hit["score"] >= 0.9 and set(hit["scores"]) == {"hash"}

    assert main(["match", str(library), "--inputs", str(EXAMPLES), "--csv", "-k", "2", "--threshold", "0"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert list(rows[0]) == ["input", "rank", "match", "score", "score_hash"]
    assert len(rows) == 2 * len(INPUTS) and all(float(r["score"]) == float(r["score_hash"]) for r in rows)

    saved = tmp_path / "index"
    assert main(["index", "build", str(library), "--out", str(saved)]) == 0
    capsys.readouterr()
    assert main(["match", str(saved), "--inputs", str(EXAMPLES / "coffee_mirrored.jpg")]) == 0
    out = capsys.readouterr().out
    assert f"coffee_mirrored.jpg  ->  {library / 'coffee.jpg'}" in out and "1 input: 1 matched" in out
    assert main(["match", str(saved), "--dimensions", "hash", "--inputs", str(EXAMPLES)]) == 1
    assert "has its own dimensions" in capsys.readouterr().err
