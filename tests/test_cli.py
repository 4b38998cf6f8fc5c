"""The command line, run as a user runs it: a subprocess, exit codes, stdout/stderr."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "examples" / "images"


def cli(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "imageprism", *args], capture_output=True, text=True, cwd=cwd, timeout=120)


def test_version() -> None:
    from imageprism import __version__

    out = cli("--version")
    assert out.returncode == 0 and __version__ in out.stdout


def test_compare_human_readable() -> None:
    out = cli("compare", str(EXAMPLES / "chelsea.jpg"), str(EXAMPLES / "chelsea_small_bright.jpg"))
    assert out.returncode == 0, out.stderr
    lines = dict(line.split(None, 1) for line in out.stdout.strip().splitlines())
    assert float(lines["hash"].split()[0]) > 0.9
    assert "weighted" in lines


def test_compare_json() -> None:
    out = cli("compare", str(EXAMPLES / "chelsea.jpg"), str(EXAMPLES / "coffee.jpg"), "--json", "--dimensions", "hash")
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert set(data["scores"]) == {"hash"} and 0.3 < data["weighted_score"] < 0.7


def test_embed_json_gives_hex_hashes() -> None:
    from imageprism import HashConfig, ImagePrism

    path = str(EXAMPLES / "rocket.jpg")
    out = cli("embed", path, "--json")
    assert out.returncode == 0, out.stderr
    record = json.loads(out.stdout)[0]
    assert record["image"] == path
    assert record["hash"] == HashConfig().to_hex(ImagePrism().embed(path)["hash"])


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (("compare", "missing-a.jpg", str(EXAMPLES / "coffee.jpg")), "missing-a.jpg"),
        (("compare", str(EXAMPLES / "coffee.jpg"), str(REPO / "README.md")), "README.md"),
        (("compare", str(EXAMPLES / "coffee.jpg"), str(EXAMPLES)), "directory"),
        (("compare", "a.jpg", "b.jpg", "--dimensions", "colour"), "unknown dimension 'colour'"),
        (("embed", str(EXAMPLES / "coffee.jpg"), "nope.png"), "nope.png"),
    ],
)
def test_bad_input_is_one_line_and_nonzero(args: tuple[str, ...], needle: str) -> None:
    out = cli(*args)
    assert out.returncode != 0
    assert needle in out.stderr
    assert "Traceback" not in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1


def test_no_command_prints_help_and_fails() -> None:
    out = cli()
    assert out.returncode == 2 and "usage" in out.stderr


def test_cache_flag_persists_embeddings_across_runs(tmp_path: Path) -> None:
    import sqlite3

    db = tmp_path / "embeddings.sqlite"
    images = [str(EXAMPLES / "chelsea.jpg"), str(EXAMPLES / "coffee.jpg")]
    first = cli("embed", *images, "--json", "--cache", str(db))
    assert first.returncode == 0, first.stderr
    with sqlite3.connect(db) as conn:
        (rows,) = conn.execute("SELECT COUNT(*) FROM sqlite_master WHERE type = 'table'").fetchone()
    assert rows >= 1 and db.stat().st_size > 0
    second = cli("embed", *images, "--json", "--cache", str(db))
    assert second.returncode == 0 and json.loads(second.stdout) == json.loads(first.stdout)


def test_cache_flag_rerun_skips_the_work(tmp_path: Path) -> None:
    """In-process, so the disk hits can be counted: the second run computes nothing."""
    from imageprism import ImagePrism, PersistentCache

    db = tmp_path / "c.sqlite"
    images = [EXAMPLES / "chelsea.jpg", EXAMPLES / "rocket.jpg"]
    ImagePrism(cache=PersistentCache(db)).embed_batch(images)
    again = PersistentCache(db)
    ImagePrism(cache=again).embed_batch(images)
    assert again.stats.disk_hits == 2 and again.stats.misses == 0
