"""Many images on one machine: worker processes equal the serial path; resumable runs decode nothing twice."""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image, ImageOps

from imageprism import ImageIndex, ImagePrism, PersistentCache
from imageprism._image import SourceImage
from imageprism.dimensions.hash import HashDimension
from imageprism.errors import ConfigError, ImageLoadError, WorkerCrashError

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory, dev_images: list[Path]) -> list[Path]:
    """150 small JPEGs made from the dev photos (crops, mirrors, re-encodes): more than two worker tasks."""
    out = tmp_path_factory.mktemp("small")
    rng = np.random.default_rng(0)
    paths = []
    for i in range(150):
        with Image.open(dev_images[i % len(dev_images)]) as im:
            image = im.convert("RGB")
        w, h = image.size
        box = (int(rng.integers(0, w // 4)), int(rng.integers(0, h // 4)), w - int(rng.integers(0, w // 4)), h)
        image = image.crop(box).resize((160 + i % 7 * 20, 120 + i % 5 * 16))
        if i % 3 == 0:
            image = ImageOps.mirror(image)
        path = out / f"{i:03d}.jpg"
        image.save(path, quality=70 + i % 25)
        paths.append(path)
    return paths


def _same(a: tuple, b: tuple) -> bool:
    return len(a) == len(b) and all(
        (x is None and y is None) or (x is not None and y is not None and x.keys() == y.keys()
                                      and all(np.array_equal(x[k], y[k]) for k in x))
        for x, y in zip(a, b)
    )


def test_workers_equal_serial_order_and_failures(folder: list[Path], tmp_path: Path) -> None:
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not an image")
    gray = np.kron(np.arange(64, dtype=np.uint8).reshape(8, 8), np.ones((8, 8), np.uint8))
    items: list[object] = [*map(str, folder[:70]), str(bad), folder[70].read_bytes(), gray,
                           *folder[71:], str(tmp_path / "missing.jpg")]
    serial = ImagePrism().embed_batch(items, on_error="skip", workers=1)
    parallel = ImagePrism().embed_batch(items, on_error="skip", workers=2)
    assert _same(serial.embeddings, parallel.embeddings)
    assert [(f.index, f.input, type(f.error)) for f in parallel.failures] == [
        (f.index, f.input, type(f.error)) for f in serial.failures
    ] == [(70, repr(str(bad)), ImageLoadError), (len(items) - 1, repr(str(tmp_path / "missing.jpg")), ImageLoadError)]
    with pytest.raises(ImageLoadError, match="bad.jpg"):
        ImagePrism().embed_batch(items, workers=2)


def test_workers_equal_serial_for_dedup_and_index(folder: list[Path]) -> None:
    paths = [*folder, *folder[:40]]  # exact copies too
    serial = ImagePrism().dedup(paths, workers=1)
    parallel = ImagePrism().dedup(paths, workers=2)
    np.testing.assert_array_equal(serial.labels, parallel.labels)
    assert all(parallel.labels[len(folder) + i] == parallel.labels[i] for i in range(40))
    one, two = ImageIndex(ImagePrism()), ImageIndex(ImagePrism())
    one.add(paths[:150], workers=1)
    two.add(paths[:150], workers=2)
    assert [h.id for h in one.search(folder[3], k=5)] == [h.id for h in two.search(folder[3], k=5)]


def test_workers_fill_the_callers_cache(folder: list[Path]) -> None:
    prism = ImagePrism()
    prism.embed_batch(folder, workers=2)
    assert len(prism.cache) == len(folder)
    again = prism.embed_batch(folder, workers=1)
    assert prism.cache.stats.hits >= len(folder) and len(again.embeddings) == len(folder)


@pytest.mark.parametrize("bad", [0, -1, 1.5, True])
def test_workers_must_be_a_positive_integer(bad: object) -> None:
    with pytest.raises(ConfigError, match="workers"):
        ImagePrism().embed_batch([], workers=bad)  # type: ignore[arg-type]


@pytest.fixture()
def decodes(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Labels of the inputs decoded in this process."""
    seen: list[str] = []
    original = SourceImage._decode

    def counting(self: SourceImage, draft: tuple[str, int] | None) -> Image.Image:
        seen.append(self.label)
        return original(self, draft)

    monkeypatch.setattr(SourceImage, "_decode", counting)
    return seen


def test_rerun_over_an_unchanged_folder_decodes_nothing(folder: list[Path], tmp_path: Path, decodes: list[str]) -> None:
    files = [shutil.copy(p, tmp_path / p.name) for p in folder[:40]]
    cache_file = tmp_path / "cache.sqlite3"
    first = ImagePrism(cache=PersistentCache(cache_file)).embed_batch(files)
    assert len(decodes) == 40
    decodes.clear()
    again = ImagePrism(cache=PersistentCache(cache_file)).embed_batch(files)
    assert decodes == [] and _same(first.embeddings, again.embeddings)
    # a changed file is seen (new content, same name) and only it is decoded
    with Image.open(folder[100]) as other:
        other.save(files[5])
    changed = ImagePrism(cache=PersistentCache(cache_file)).embed_batch(files)
    assert decodes == [repr(str(files[5]))]
    fresh = ImagePrism().embed(files[5])
    assert np.array_equal(changed.embeddings[5]["hash"], fresh["hash"])
    assert not np.array_equal(changed.embeddings[5]["hash"], first.embeddings[5]["hash"])


def test_a_touched_or_tampered_file_row_is_recomputed(folder: list[Path], tmp_path: Path, decodes: list[str]) -> None:
    files = [shutil.copy(p, tmp_path / p.name) for p in folder[:10]]
    cache_file = tmp_path / "cache.sqlite3"
    ImagePrism(cache=PersistentCache(cache_file)).embed_batch(files)
    decodes.clear()
    os.utime(files[2], ns=(10**9, 10**9))  # same bytes, another modification time
    with sqlite3.connect(cache_file) as conn:
        conn.execute("UPDATE files SET pixel_key = 'x' || substr(pixel_key, 2) WHERE path = ?", (os.path.abspath(files[7]),))
        conn.execute("UPDATE files SET width = width + 1 WHERE path = ?", (os.path.abspath(files[4]),))
    again = ImagePrism(cache=PersistentCache(cache_file)).embed_batch(files)
    assert sorted(decodes) == sorted([repr(str(files[2])), repr(str(files[4])), repr(str(files[7]))])
    assert _same(again.embeddings, ImagePrism().embed_batch(files).embeddings)


_CHILD = """
import sys
from imageprism import ImagePrism, PersistentCache
files = sys.argv[2:]
ImagePrism(cache=PersistentCache(sys.argv[1])).embed_batch(files, workers=1)
"""


def test_a_killed_run_resumes_where_it_stopped(folder: list[Path], tmp_path: Path, decodes: list[str]) -> None:
    files = [str(shutil.copy(p, tmp_path / f"{i:03d}_{p.name}")) for i, p in enumerate(folder * 6)]  # 900 files
    cache_file = tmp_path / "cache.sqlite3"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    child = subprocess.Popen([sys.executable, "-c", _CHILD, str(cache_file), *files], env=env)
    try:
        deadline = time.monotonic() + 120
        done = 0
        while time.monotonic() < deadline and child.poll() is None:
            time.sleep(0.05)
            try:
                with sqlite3.connect(cache_file, timeout=1) as conn:
                    done = conn.execute("SELECT COUNT(*) FROM files").fetchone()[0]
            except sqlite3.Error:
                continue
            if done >= 100:
                break
        child.send_signal(signal.SIGKILL)
    finally:
        child.wait()
    assert child.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    with sqlite3.connect(cache_file) as conn:
        recorded = conn.execute("SELECT COUNT(*) FROM files").fetchone()[0]
    assert 100 <= recorded < len(files)
    resumed = ImagePrism(cache=PersistentCache(cache_file)).embed_batch(files)
    assert len(decodes) == len(files) - recorded  # only what the killed run had not finished
    assert _same(resumed.embeddings, ImagePrism().embed_batch(files).embeddings)


def test_workers_keep_the_callers_limits(folder: list[Path]) -> None:
    limit = int(np.median([p.stat().st_size for p in folder]))
    serial = ImagePrism(max_bytes=limit).embed_batch(folder, on_error="skip", workers=1)
    parallel = ImagePrism(max_bytes=limit).embed_batch(folder, on_error="skip", workers=2)
    assert 0 < len(parallel.failures) < len(folder)
    assert [f.index for f in parallel.failures] == [f.index for f in serial.failures]
    assert _same(serial.embeddings, parallel.embeddings)


_FILES_V3 = (  # the files table of schema 3, before image sizes
    "CREATE TABLE files (path TEXT NOT NULL, token TEXT NOT NULL, size INTEGER NOT NULL, "
    "mtime_ns INTEGER NOT NULL, inode INTEGER NOT NULL, pixel_key TEXT NOT NULL, checksum BLOB NOT NULL, "
    "PRIMARY KEY (path, token)) WITHOUT ROWID"
)


@pytest.mark.parametrize("version", [2, 3])
def test_an_older_cache_keeps_its_embeddings_and_gets_the_new_files_table(
    folder: list[Path], tmp_path: Path, version: int, decodes: list[str],
) -> None:
    path = tmp_path / f"v{version}.sqlite3"
    with PersistentCache(path) as cache:
        cache.put(("px", "t"), np.arange(3, dtype=np.uint8))
    with sqlite3.connect(path) as conn:  # what imageprism wrote before the files table (2) or its sizes (3)
        conn.execute("DROP TABLE files")
        if version == 3:
            conn.execute(_FILES_V3)
            conn.execute("INSERT INTO files VALUES (?, 't', 1, 1, 1, 'px', x'00')", (str(folder[0]),))
        conn.execute(f"PRAGMA user_version = {version}")
    with PersistentCache(path) as cache:
        assert cache.lookup(("px", "t"))[0] and cache.disk_entries() == 1
        first = ImagePrism(cache=cache).embed_batch(folder[:3])
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 4
        assert conn.execute("SELECT COUNT(*) FROM files").fetchone()[0] == 3
        assert conn.execute("SELECT width, height FROM files ORDER BY path").fetchall() == [
            ImageOps.exif_transpose(Image.open(p)).size for p in sorted(map(str, folder[:3]))
        ]
    decodes.clear()
    again = ImagePrism(cache=PersistentCache(path)).embed_batch(folder[:3])
    assert decodes == [] and _same(first.embeddings, again.embeddings)


def test_workers_leave_with_a_killed_parent(folder: list[Path], tmp_path: Path) -> None:
    cache_file = tmp_path / "cache.sqlite3"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    child = subprocess.Popen(
        [sys.executable, "-m", "imageprism", "embed", *map(str, folder * 4), "--cache", str(cache_file), "--workers", "2"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    workers: list[int] = []
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and child.poll() is None and not workers:
            time.sleep(0.05)
            children = Path(f"/proc/{child.pid}/task/{child.pid}/children")
            workers = [int(p) for p in children.read_text().split()] if children.exists() else []
        child.send_signal(signal.SIGKILL)
    finally:
        child.wait()
    if not workers:
        pytest.skip("the run ended before its workers could be seen")
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and any(Path(f"/proc/{w}").exists() for w in workers):
        time.sleep(0.1)
    alive = [w for w in workers if Path(f"/proc/{w}").exists() and "Z" not in Path(f"/proc/{w}/stat").read_text().split()[2]]
    assert alive == [], "worker processes outlived their killed parent"


class _Collecting:
    """A worker's embedder that runs a full garbage collection before each chunk."""

    def _embed_chunk(self, items: Sequence[Any], start: int) -> list[tuple[int, Any]]:
        import gc  # noqa: PLC0415

        gc.collect()
        return [(start + i, item) for i, item in enumerate(items)]


class _Finalised:
    """Garbage whose destructor records the process it ran in (an onnxruntime session's hangs in a worker)."""

    def __init__(self, record: Path) -> None:
        self.record, self.cycle = record, self

    def __del__(self) -> None:
        with open(self.record, "a") as out:
            out.write(f"{os.getpid()}\n")


def test_forked_workers_never_destroy_the_callers_objects(tmp_path: Path) -> None:
    import gc  # noqa: PLC0415

    from imageprism._workers import parallel_chunks  # noqa: PLC0415

    record = tmp_path / "finalised"
    gc.disable()  # the garbage below is collected by nobody until the workers have forked
    try:
        _Finalised(record)  # unreachable at once: only its own cycle holds it
        chunks = list(parallel_chunks(_Collecting, [str(i) for i in range(200)], 2, lambda c, s: []))
    finally:
        gc.enable()
    assert [i for chunk in chunks for i, _ in chunk] == list(range(200))
    assert not record.exists()  # no worker ran the destructor
    gc.collect()
    assert record.read_text().split() == [str(os.getpid())]  # the caller did, once


class _Crashing(HashDimension):
    """The hash dimension, but a native crash (a read at address 0) on images of 97 x 81 pixels:
    what a decoder or model bug does to the process that meets it."""

    def embed_batch(self, images: Sequence[Image.Image]) -> list[np.ndarray | None]:
        import ctypes  # noqa: PLC0415
        import faulthandler  # noqa: PLC0415

        if any(image.size == (97, 81) for image in images):
            faulthandler.disable()  # pytest's handler would print the worker's stack on the terminal
            ctypes.string_at(0)  # SIGSEGV
        return super().embed_batch(images)


def test_an_input_that_crashes_its_worker_fails_alone_and_the_batch_goes_on(folder: list[Path], tmp_path: Path) -> None:
    poison = []
    for name in ("poison-a.png", "poison-b.png"):
        Image.new("RGB", (97, 81), (255, 0, 255)).save(tmp_path / name)
        poison.append(str(tmp_path / name))
    items = [*map(str, folder[:40]), poison[0], *map(str, folder[40:130]), poison[1], *map(str, folder[130:])]
    crashing = ImagePrism(dimensions=["hash"], registry={"hash": _Crashing})
    result = crashing.embed_batch(items, workers=2, on_error="skip")
    failed = {f.index: f for f in result.failures}
    assert sorted(failed) == [40, 131]
    for index, failure in failed.items():
        assert isinstance(failure.error, WorkerCrashError) and failure.input == repr(items[index])
        assert "killed by SIGSEGV" in str(failure.error)
    good = [i for i in range(len(items)) if i not in failed]
    serial = ImagePrism(dimensions=["hash"]).embed_batch([items[i] for i in good], workers=1)
    assert _same(tuple(result.embeddings[i] for i in good), tuple(serial.embeddings))
