"""Keep policy: which copy represents a group, as the order of the greedy pass (issue 20)."""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from imageprism import ImagePrism
from imageprism._keep import keep_order
from imageprism.cli import main
from imageprism.errors import ConfigError, InputError

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "images"


@pytest.fixture()
def thumbs(tmp_path: Path) -> tuple[Path, Path, Path]:
    """The issue's case: a full-size photo and a 160x120 q50 copy that sorts first."""
    with Image.open(EXAMPLES / "chelsea.jpg") as source:
        full = source.convert("RGB").resize((2016, 1512))
    original = tmp_path / "photo_full.jpg"
    full.save(original, quality=92)
    (tmp_path / "a_thumbs").mkdir()
    thumb = tmp_path / "a_thumbs" / "photo_full.jpg"
    full.resize((160, 120)).save(thumb, quality=50)
    other = tmp_path / "zz_other.jpg"
    Image.open(EXAMPLES / "coffee.jpg").save(other)
    return original, thumb, other


def test_cli_keeps_the_largest_copy_by_default(thumbs: tuple[Path, Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    original, thumb, _ = thumbs
    assert main(["dedup", str(original.parent), "--csv"]) == 0
    out, err = capsys.readouterr()
    rows = {r["path"]: r for r in csv.DictReader(io.StringIO(out))}
    assert "--keep largest" in err  # the policy is stated beside the CSV
    assert rows[str(thumb)]["representative"] == str(original)
    assert rows[str(original)]["is_representative"] == "true" and rows[str(thumb)]["is_representative"] == "false"
    assert float(rows[str(thumb)]["score"]) >= 0.9 and rows[str(thumb)]["score"] == rows[str(thumb)]["score_hash"]

    assert main(["dedup", str(original.parent)]) == 0
    text = capsys.readouterr().out
    assert f"* {original}  [kept]" in text and "--keep largest" in text

    assert main(["dedup", str(original.parent), "--keep", "first", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["keep"] == "first"
    (group,) = [g for g in report["groups"] if len(g["members"]) > 1]
    assert group["representative"] == str(thumb)  # sorted path order, as before


def test_api_keep_first_is_the_contract_order_and_largest_keeps_the_original(thumbs: tuple[Path, Path, Path]) -> None:
    original, thumb, other = thumbs
    images = [thumb, other, original]
    prism = ImagePrism()
    first = prism.dedup(images)
    assert first.labels.tolist() == [0, 1, 0] and first == prism.dedup(images, keep="first")
    largest = prism.dedup(images, keep="largest")
    assert largest.labels.tolist() == [2, 1, 2] and largest.groups[2] == (2, 0)  # representative first
    assert largest.unique.tolist() == [1, 2]
    by_key = prism.dedup(images, keep=lambda p: -os.path.getsize(p))
    assert by_key.labels.tolist() == [2, 1, 2]


def test_newest_and_oldest_follow_the_file_times(thumbs: tuple[Path, Path, Path]) -> None:
    original, thumb, other = thumbs
    os.utime(thumb, (1_000_000, 1_000_000))
    os.utime(original, (2_000_000, 2_000_000))
    prism = ImagePrism()
    assert prism.dedup([thumb, original, other], keep="newest").labels.tolist() == [1, 1, 2]
    assert prism.dedup([original, thumb, other], keep="oldest").labels.tolist() == [1, 1, 2]


def test_keep_orders_are_exact_greedy_passes_in_that_order() -> None:
    """dedup(keep=K) equals keep='first' over the inputs permuted into K's order."""
    rng = np.random.default_rng(3)
    base = [np.kron(rng.integers(0, 256, (8, 8)), np.ones((8, 8))).astype(np.uint8) for _ in range(4)]
    images = [np.clip(b.astype(int) + d, 0, 255).astype(np.uint8) for b in base for d in (0, 9, 18)]
    images = [np.kron(img, np.ones((s, s), np.uint8)) for img, s in zip(images, rng.integers(1, 4, len(images)))]
    prism = ImagePrism()
    result = prism.dedup(images, keep="largest")
    order = keep_order(images, "largest")
    permuted = prism.dedup([images[i] for i in order])
    assert result.labels.tolist() == [int(order[permuted.labels[j]]) for j in np.argsort(order)]
    for rep, members in result.groups.items():
        assert max(images[i].size for i in members) == images[rep].size


def test_bad_keep_values_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="keep='biggest' is invalid"):
        ImagePrism().dedup([np.zeros((8, 8), np.uint8)], keep="biggest")  # type: ignore[arg-type]
    with pytest.raises(InputError, match="needs file paths"):
        ImagePrism().dedup([np.zeros((8, 8), np.uint8)], keep="newest")


def test_unreadable_inputs_still_fail_as_failures_under_keep(thumbs: tuple[Path, Path, Path], tmp_path: Path) -> None:
    original, thumb, _ = thumbs
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a jpeg")
    result = ImagePrism().dedup([broken, thumb, original], keep="largest", on_error="skip")
    assert result.labels.tolist() == [-1, 2, 2] and [f.index for f in result.failures] == [0]
