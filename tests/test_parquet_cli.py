"""Columnar output: ``embed --out FILE.parquet``, then ``dedup --from`` / ``index build --from`` (issue 15, deliverable 5)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "examples" / "images"
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "imageprism", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=120, env=ENV)


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """examples/images plus an unreadable file, and their table (written once)."""
    root = tmp_path_factory.mktemp("parquet")
    shutil.copytree(EXAMPLES, root / "imgs")
    (root / "imgs" / "bad.jpg").write_bytes(b"not an image")
    out = cli("embed", "imgs", "--out", "e.parquet", cwd=root)
    assert out.returncode == 1, out.stderr  # one input failed: reported, and still a row
    assert "1 failed" in out.stderr
    return root


def test_table_has_one_row_per_input_with_the_error(folder: Path) -> None:
    table = pq.read_table(folder / "e.parquet")
    paths = table.column("path").to_pylist()
    assert sorted(paths) == sorted(f"imgs/{p.name}" for p in (folder / "imgs").iterdir())
    errors = dict(zip(paths, table.column("error").to_pylist()))
    assert errors.pop("imgs/bad.jpg").startswith("ImageLoadError")
    assert set(errors.values()) == {None}
    assert table.schema.names[:6] == ["path", "file_size", "mtime", "pixel_key", "width", "height"]
    assert table.schema.metadata[b"imageprism.schema_version"] == b"1"
    row = paths.index("imgs/coffee.jpg")
    assert table.column("file_size")[row].as_py() == (folder / "imgs" / "coffee.jpg").stat().st_size
    assert table.column("hash")[row].is_valid and not table.column("hash")[paths.index("imgs/bad.jpg")].is_valid


@pytest.mark.parametrize("flags", [["--json"], ["--csv", "--keep", "newest"], ["--json", "--linkage", "connected"]])
def test_dedup_from_table_equals_dedup_of_the_images(folder: Path, flags: list[str]) -> None:
    direct = cli("dedup", "imgs", *flags, cwd=folder)
    table = cli("dedup", "--from", "e.parquet", *flags, cwd=folder)
    assert direct.returncode == table.returncode == 1, (direct.stderr, table.stderr)  # the bad file is a failure
    assert table.stdout == direct.stdout
    assert table.stderr == direct.stderr  # the same failure reported the same way
    if flags[0] == "--json":
        groups = json.loads(table.stdout)
        assert groups and "imgs/bad.jpg" in json.dumps(groups)


def test_index_build_from_table_equals_index_of_the_images(folder: Path, tmp_path: Path) -> None:
    from imageprism import ImageIndex

    a = cli("index", "build", "--from", str(folder / "e.parquet"), "--out", str(tmp_path / "a"), cwd=folder)
    b = cli("index", "build", "imgs", "--out", str(tmp_path / "b"), cwd=folder)
    assert a.returncode == b.returncode == 1 and a.stderr == b.stderr, (a.stderr, b.stderr)
    assert a.stdout.startswith("indexed 7 items") and b.stdout.startswith("indexed 7 items")
    ia, ib = ImageIndex.load(tmp_path / "a"), ImageIndex.load(tmp_path / "b")
    assert sorted(ia.ids) == sorted(ib.ids) and len(ia) == 7
    for item in ia.ids:
        assert (ia.embedding(item)["hash"] == ib.embedding(item)["hash"]).all()


def test_existing_output_refused_unless_force(folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "e.parquet"
    out.write_bytes(b"precious")
    refused = cli("embed", str(folder / "imgs" / "coffee.jpg"), "--out", str(out), cwd=tmp_path)
    assert refused.returncode != 0 and "--force" in refused.stderr and "Traceback" not in refused.stderr
    assert out.read_bytes() == b"precious"
    forced = cli("embed", str(folder / "imgs" / "coffee.jpg"), "--out", str(out), "--force", cwd=tmp_path)
    assert forced.returncode == 0, forced.stderr
    assert pq.read_table(out).num_rows == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["e.parquet"]  # no temporary file left


def _embedder():  # type: ignore[no-untyped-def]
    from imageprism import HashConfig
    from imageprism.columnar import ArrowEmbedder

    return ArrowEmbedder(config={"hash": HashConfig.plain()})


def test_failure_midway_leaves_no_file_and_keeps_the_old_one(tmp_path: Path) -> None:
    from imageprism.columnar.parquet import write_parquet

    paths = [str(p) for p in sorted(EXAMPLES.iterdir())]
    out = tmp_path / "e.parquet"

    def boom(rows: int) -> None:
        raise RuntimeError(f"injected after {rows} rows")

    with pytest.raises(RuntimeError, match="injected after 2 rows"):
        write_parquet(_embedder(), paths, out, chunk_size=2, on_chunk=boom)
    assert list(tmp_path.iterdir()) == []  # neither the output nor a temporary file
    out.write_bytes(b"old")
    with pytest.raises(RuntimeError):
        write_parquet(_embedder(), paths, out, chunk_size=2, on_chunk=boom, overwrite=True)
    assert out.read_bytes() == b"old" and list(tmp_path.iterdir()) == [out]
    assert write_parquet(_embedder(), paths, out, chunk_size=2, overwrite=True) == 0
    assert pq.read_table(out).column("path").to_pylist() == paths  # in order, across row groups
    assert pq.ParquetFile(out).metadata.num_row_groups == (len(paths) + 1) // 2


def test_killed_midway_leaves_no_output(tmp_path: Path) -> None:
    script = textwrap.dedent(f"""
        import os, signal
        from imageprism import HashConfig
        from imageprism.columnar import ArrowEmbedder
        from imageprism.columnar.parquet import write_parquet
        paths = sorted(str(p) for p in __import__("pathlib").Path({str(EXAMPLES)!r}).iterdir())
        write_parquet(ArrowEmbedder(config={{"hash": HashConfig.plain()}}), paths, {str(tmp_path / "e.parquet")!r},
                      chunk_size=2, on_chunk=lambda rows: os.kill(os.getpid(), signal.SIGKILL))
    """)
    run = subprocess.run([sys.executable, "-c", script], env=ENV, capture_output=True, text=True, timeout=120)
    assert run.returncode == -9, run.stderr
    assert not (tmp_path / "e.parquet").exists()
    assert [p.name.startswith(".e.parquet.") for p in tmp_path.iterdir()] == [True]  # only the hidden partial file


def test_table_made_with_other_settings_is_refused(folder: Path) -> None:
    for flags in (["--hash", "plain"], ["--dimensions", "semantic", "--threshold", "0.9"]):
        out = cli("dedup", "--from", "e.parquet", *flags, cwd=folder)
        assert out.returncode == 1 and "Traceback" not in out.stderr, out.stderr
        assert "--dimensions hash" in out.stderr and "--out e.parquet --force" in out.stderr
    idx = cli("index", "build", "--from", "e.parquet", "--hash", "plain", "--out", "idx", cwd=folder)
    assert idx.returncode == 1 and "--dimensions hash" in idx.stderr and not (folder / "idx").exists()


def test_bad_tables_are_refused_cleanly(folder: Path, tmp_path: Path) -> None:
    table = pq.read_table(folder / "e.parquet")
    future = table.replace_schema_metadata({**table.schema.metadata, b"imageprism.schema_version": b"9"})
    pq.write_table(future, tmp_path / "future.parquet")
    pq.write_table(pa.table({"path": ["a.jpg"]}), tmp_path / "foreign.parquet")
    (tmp_path / "junk.parquet").write_bytes(b"PAR1" + b"\0" * 100)
    expected = {
        "future.parquet": "schema version 9",
        "foreign.parquet": "not an imageprism embedding table",
        "junk.parquet": "not a readable Parquet file",
        ".": "not a regular file",
        "missing.parquet": "cannot be read",
    }
    for name, message in expected.items():
        out = cli("dedup", "--from", name, cwd=tmp_path)
        assert out.returncode == 1 and message in out.stderr and "Traceback" not in out.stderr, (name, out.stderr)


def test_without_pyarrow_the_error_names_the_extra(tmp_path: Path) -> None:
    script = textwrap.dedent(f"""
        import sys
        sys.modules["pyarrow"] = None  # as if the extra were not installed
        from imageprism.cli import main
        sys.exit(main(["embed", {str(EXAMPLES / "coffee.jpg")!r}, "--out", {str(tmp_path / "e.parquet")!r}]))
    """)
    run = subprocess.run([sys.executable, "-c", script], env=ENV, capture_output=True, text=True, timeout=120)
    assert run.returncode == 1 and 'pip install ".[parquet]"' in run.stderr and "Traceback" not in run.stderr, run.stderr
    assert list(tmp_path.iterdir()) == []


def test_usage_errors(folder: Path) -> None:
    both = cli("dedup", "imgs", "--from", "e.parquet", cwd=folder)
    neither = cli("dedup", cwd=folder)
    for out in (both, neither):
        assert out.returncode == 1 and "Traceback" not in out.stderr, out.stderr
    assert "--from" in neither.stderr
    workers = cli("embed", "imgs", "--out", "w.parquet", "--workers", "0", cwd=folder)
    assert workers.returncode == 2 and "--workers" in workers.stderr and not (folder / "w.parquet").exists()


@pytest.fixture(scope="module")
def many(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """300 small JPEGs cut from the examples (several pool tasks, row groups of 256) with a corrupt
    file and a truncated JPEG among them, and an identical copy (equal pixels in two files)."""
    from PIL import Image

    rng = __import__("numpy").random.default_rng(7)
    root = tmp_path_factory.mktemp("many")
    folder = root / "imgs"
    folder.mkdir()
    photos = [Image.open(p).convert("RGB") for p in sorted(EXAMPLES.iterdir())]
    for i in range(300):
        photo = photos[i % len(photos)]
        w, h = photo.size
        x, y = int(rng.integers(0, w // 3)), int(rng.integers(0, h // 3))
        side = int(rng.integers(40, 120))
        photo.crop((x, y, x + w // 2, y + h // 2)).resize((side, side * 3 // 4)).save(folder / f"{i:03d}.jpg", quality=80)
    (folder / "100.jpg").write_bytes(b"not an image")
    whole = (folder / "200.jpg").read_bytes()
    (folder / "201.jpg").write_bytes(whole[: len(whole) // 2])  # truncated
    shutil.copy(folder / "000.jpg", folder / "299.jpg")
    return root


def test_parallel_and_serial_tables_are_identical(many: Path) -> None:
    runs = {k: cli("embed", "imgs", "--out", f"w{k}.parquet", "--workers", k, cwd=many) for k in ("1", "2")}
    for run in runs.values():
        assert run.returncode == 1 and "300 rows (2 failed)" in run.stderr, run.stderr
    assert (many / "w1.parquet").read_bytes() == (many / "w2.parquet").read_bytes()  # rows, embeddings, errors
    table = pq.read_table(many / "w2.parquet")
    assert table.column("path").to_pylist() == [f"imgs/{i:03d}.jpg" for i in range(300)]  # input order
    errors = table.column("error").to_pylist()
    assert [i for i, e in enumerate(errors) if e is not None] == [100, 201]
    assert errors[100].startswith("ImageLoadError") and errors[201].startswith("ImageLoadError")
    assert table.column("pixel_key")[0].as_py() == table.column("pixel_key")[299].as_py()
    assert pq.ParquetFile(many / "w2.parquet").metadata.num_row_groups == 2  # streamed: 256 rows, then 44
    default = cli("embed", "imgs", "--out", "all.parquet", cwd=many)  # every core by default
    assert default.returncode == 1 and (many / "all.parquet").read_bytes() == (many / "w1.parquet").read_bytes()


def test_parallel_writer_matches_embed_batch(many: Path) -> None:
    from imageprism import HashConfig, ImagePrism
    from imageprism.columnar import embeddings_from_table
    from imageprism.columnar.parquet import write_parquet

    paths = sorted(str(p) for p in (many / "imgs").iterdir())
    out = many / "lib.parquet"
    assert write_parquet(_embedder(), paths, out, chunk_size=50, workers=2) == 2
    back = embeddings_from_table(pq.read_table(out))
    batch = ImagePrism(config={"hash": HashConfig.plain()}).embed_batch(paths, on_error="skip")
    assert sorted(back.errors) == [f.index for f in batch.failures] == [100, 201]
    expected = [e["hash"] for e in batch.embeddings if e is not None]
    assert (back.embeddings["hash"] == __import__("numpy").stack(expected)).all()
    assert pq.ParquetFile(out).metadata.num_row_groups == 6


def test_killed_parallel_run_leaves_no_output_and_resumes(many: Path, tmp_path: Path) -> None:
    from imageprism import HashConfig, ImagePrism, PersistentCache
    from imageprism.columnar import ArrowEmbedder
    from imageprism.columnar.parquet import write_parquet

    paths = sorted(str(p) for p in (many / "imgs").iterdir())
    out, db = tmp_path / "e.parquet", tmp_path / "cache.sqlite3"
    script = textwrap.dedent(f"""
        import os, signal
        from imageprism import HashConfig, ImagePrism, PersistentCache
        from imageprism.columnar import ArrowEmbedder
        from imageprism.columnar.parquet import write_parquet
        prism = ImagePrism(config={{"hash": HashConfig.plain()}}, cache=PersistentCache({str(db)!r}))
        write_parquet(ArrowEmbedder.from_prism(prism), {paths!r}, {str(out)!r}, chunk_size=100, workers=2,
                      on_chunk=lambda rows: rows < 200 or os.kill(os.getpid(), signal.SIGKILL))
    """)
    run = subprocess.run([sys.executable, "-c", script], env=ENV, capture_output=True, text=True, timeout=120)
    assert run.returncode == -9, run.stderr
    assert not out.exists()  # no partial table under the output's name
    assert [p.name.startswith(".e.parquet.") for p in tmp_path.iterdir() if not p.name.startswith("cache")] == [True]

    prism = ImagePrism(config={"hash": HashConfig.plain()}, cache=PersistentCache(db))
    assert write_parquet(ArrowEmbedder.from_prism(prism), paths, out, workers=2) == 2
    resumed = prism.cache.stats.disk_hits - 1  # less the probe image that learns the column shapes
    assert 200 <= resumed < 298, resumed  # the files embedded before the kill were not decoded again
    fresh = tmp_path / "fresh.parquet"
    write_parquet(_embedder(), paths, fresh, workers=1)
    assert out.read_bytes() == fresh.read_bytes()  # sizes of resumed files from their records
    again = ImagePrism(config={"hash": HashConfig.plain()}, cache=PersistentCache(db))
    import imageprism._image

    reads: list[object] = []
    read_path = imageprism._image._read_path
    imageprism._image._read_path = lambda path, *rest: reads.append(path) or read_path(path, *rest)  # type: ignore[assignment]
    try:
        write_parquet(ArrowEmbedder.from_prism(again), paths, out, workers=1, overwrite=True)
    finally:
        imageprism._image._read_path = read_path  # type: ignore[assignment]
    assert again.cache.stats.disk_hits == 1 + 298 and out.read_bytes() == fresh.read_bytes()  # the probe, all but the 2 failures
    assert sorted(Path(p).name for p in reads) == ["100.jpg", "201.jpg"]  # only the 2 failures are read again
