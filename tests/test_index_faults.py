"""A killed, interrupted or failed save leaves the previous or the new index, exactly; two writers are refused.

The sweeps run tests/index_faults_child.py in a process of its own, which forks one
process per crash point (see its docstring). They run in /dev/shm when there is one:
a killed process loses nothing from the page cache, so what is tested (no instant at
which neither index is loadable) does not depend on the disk, and fsync there is free.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import index_faults_child as child
import numpy as np
import pytest

from imageprism import ImageIndex, IndexConflictError, IndexFormatError, IndexWriteError
from imageprism._index_files import LOCK, MANIFEST, Writer, read_manifest

HERE = Path(__file__).resolve().parent
pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork and POSIX signals")


@pytest.fixture
def fast_dir(tmp_path: Path) -> Iterator[Path]:
    """A directory in memory (/dev/shm) when available, else ``tmp_path``."""
    if Path("/dev/shm").is_dir() and os.access("/dev/shm", os.W_OK):
        with tempfile.TemporaryDirectory(dir="/dev/shm") as folder:
            yield Path(folder)
    else:
        yield tmp_path


def _sweep(folder: Path, how: str) -> list[dict]:
    run = subprocess.run(
        [sys.executable, str(HERE / "index_faults_child.py"), "sweep", str(folder / "idx"), how],
        capture_output=True, text=True, timeout=300,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert "Traceback" not in run.stderr, run.stderr[-3000:]
    return [json.loads(line) for line in run.stdout.splitlines()]


@pytest.mark.parametrize("how", ["KILL", "INT"])
def test_a_save_hit_at_any_step_leaves_the_old_or_the_new_index(fast_dir: Path, how: str) -> None:
    reports = _sweep(fast_dir, how)
    hit = [r for r in reports if r["status"] != 0]
    assert len(hit) > 60  # every step of an append, a merge and a compaction
    assert {r["status"] for r in hit} == ({-signal.SIGKILL} if how == "KILL" else {3})  # 3: KeyboardInterrupt
    assert all(r["outcome"] in ("old", "new") for r in reports), [r for r in reports if r["outcome"] not in ("old", "new")]
    for cycle in child.SCENARIOS:
        outcomes = [r["outcome"] for r in hit if r["cycle"] == cycle]
        assert "old" in outcomes and "new" in outcomes  # killed before and after the commit point
        assert outcomes == sorted(outcomes, key=["old", "new"].index)  # never back to old after the commit
        (last,) = [r for r in reports if r["cycle"] == cycle and r["status"] == 0]
        assert last["outcome"] == "new"
        assert last["leftovers_before"] > 0 and last["leftovers_after"] == []  # the next save cleaned up


def test_a_full_disk_raises_index_write_error_and_keeps_the_old_index(fast_dir: Path) -> None:
    reports = _sweep(fast_dir, "FULL")
    for cycle in child.SCENARIOS:
        ours = [r for r in reports if r["cycle"] == cycle]
        failed = [r for r in ours if r["status"] != 0]
        assert failed and all(r["status"] == 4 and r["outcome"] == "old" for r in failed)  # 4: IndexWriteError
        assert ours[-1]["status"] == 0 and ours[-1]["outcome"] == "new" and ours[-1]["leftovers_after"] == []


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM, signal.SIGINT])
def test_a_writer_killed_from_outside_at_random_instants_loses_no_commit(fast_dir: Path, sig: int) -> None:
    folder = fast_dir / "idx"
    base = ImageIndex(child.make_prism())
    base.add_embeddings(child.items(100, seed=1), ids=[f"base-{i}" for i in range(100)])
    base.save(folder)
    rng = random.Random(sig)
    for _ in range(2):
        start = read_manifest(folder).generation
        proc = subprocess.Popen(
            [sys.executable, str(HERE / "index_faults_child.py"), "loop", str(folder)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        assert proc.stdout is not None and proc.stdout.readline().startswith("ready")
        time.sleep(rng.uniform(0.05, 0.4))
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=60)
        printed = [line for line in out.splitlines() if line.startswith("committed")]
        loaded = ImageIndex.load(folder, prism=child.make_prism())
        cycles = read_manifest(folder).generation - start
        assert cycles in (len(printed), len(printed) + 1)  # killed after a commit, or before it was reported
        expected = _replayed(base, range(start + 1, start + cycles + 1))
        assert child.state(loaded) == child.state(expected)
        assert "Traceback" not in err or sig == signal.SIGINT  # SIGINT: Python's KeyboardInterrupt report
        base = expected


def _replayed(base: ImageIndex, cycles: range) -> ImageIndex:
    """A copy of ``base`` after the loop's changes of ``cycles`` (in memory)."""
    index = ImageIndex(child.make_prism())
    index.add_embeddings([base.embedding(i) for i in base.ids], ids=list(base.ids))
    for cycle in cycles:
        child.change(index, cycle)
    return index


def test_two_writers_are_refused_with_a_clear_error(tmp_path: Path) -> None:
    folder = tmp_path / "idx"
    first = ImageIndex(child.make_prism())
    first.add_embeddings(child.items(10, seed=1), ids=[f"a{i}" for i in range(10)])
    first.save(folder)
    one, two = (ImageIndex.load(folder, prism=child.make_prism()) for _ in range(2))
    one.add_embeddings(child.items(3, seed=2), ids=["x", "y", "z"])
    two.add_embeddings(child.items(1, seed=3), ids=["w"])
    with Writer(folder), pytest.raises(IndexConflictError, match="being saved by another"):
        one.save(folder)  # the lock is held (here by this process; flock works the same across processes)
    one.save(folder)
    with pytest.raises(IndexConflictError, match="load it again"):
        two.save(folder)  # it would drop x, y, z
    assert ImageIndex.load(folder, prism=child.make_prism()).ids == (*(f"a{i}" for i in range(10)), "x", "y", "z")
    two.save(tmp_path / "elsewhere")  # a new directory is fine


def test_a_failed_write_keeps_the_index_usable_and_saves_later(tmp_path: Path, monkeypatch) -> None:
    folder = tmp_path / "idx"
    index = ImageIndex(child.make_prism())
    index.add_embeddings(child.items(10, seed=1), ids=[f"a{i}" for i in range(10)])
    index.save(folder)
    index.add_embeddings(child.items(2, seed=2), ids=["b0", "b1"])
    index.remove(["a3"])
    real = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (_ for _ in ()).throw(OSError(28, "No space left on device")))
    with pytest.raises(IndexWriteError, match="No space left on device.*last saved state"):
        index.save(folder)
    monkeypatch.setattr(os, "fsync", real)
    assert ImageIndex.load(folder, prism=child.make_prism()).ids == tuple(f"a{i}" for i in range(10))
    index.save(folder)  # the same changes, committed now
    again = ImageIndex.load(folder, prism=child.make_prism())
    assert child.state(again) == child.state(index)
    assert sorted(p.name for p in folder.iterdir()) == sorted(read_manifest(folder).names() | {MANIFEST, LOCK})


def test_many_small_saves_keep_few_segments_and_round_trip(tmp_path: Path) -> None:
    folder = tmp_path / "idx"
    index = ImageIndex(child.make_prism())
    index.add_embeddings(child.items(50, seed=1), ids=[f"s{i}" for i in range(50)])
    for cycle in range(1, 41):
        child.change(index, cycle, add=5, remove=1 if cycle % 3 else 0)
        index.save(folder)
        assert len(read_manifest(folder).segments) <= 2 + int(np.log2(len(index) + 1))
    manifest = read_manifest(folder)
    assert manifest.generation == 40 and manifest.count == len(index)
    assert child.state(ImageIndex.load(folder, prism=child.make_prism())) == child.state(index)
    index.remove(list(index.ids[: len(index) // 2]))  # more than a quarter gone: one segment again
    index.save(folder)
    manifest = read_manifest(folder)
    assert len(manifest.segments) == 1 and manifest.deleted == []
    assert child.state(ImageIndex.load(folder, prism=child.make_prism())) == child.state(index)


def test_a_reader_retries_when_a_writer_replaces_the_generation_it_is_reading(tmp_path: Path, monkeypatch) -> None:
    import imageprism._index_store as store

    folder = tmp_path / "idx"
    writer = ImageIndex(child.make_prism())
    writer.add_embeddings(child.items(20, seed=1), ids=[f"a{i}" for i in range(20)])
    writer.save(folder)
    real, calls = store.read_ids, []

    def read_ids_after_a_compaction(*args):  # type: ignore[no-untyped-def]
        if not calls:  # while the reader is between the manifest and the files: compact (old files deleted)
            writer.remove([f"a{i}" for i in range(10)])
            writer.save(folder)
        calls.append(1)
        return real(*args)

    monkeypatch.setattr(store, "read_ids", read_ids_after_a_compaction)
    loaded = ImageIndex.load(folder, prism=child.make_prism())
    assert len(calls) == 2 and read_manifest(folder).generation == 2
    assert child.state(loaded) == child.state(writer)


def test_a_first_save_that_was_killed_leaves_no_index_and_does_not_block_the_next(tmp_path: Path) -> None:
    folder = tmp_path / "idx"
    folder.mkdir()
    (folder / "g000001.hash.codes.npy").write_bytes(b"\x93NUMPY half a file")  # what a killed first save leaves
    (folder / "g000001.ids.json").write_text('["a", "b"')
    (folder / f"{MANIFEST}.tmp").write_text("{")
    with pytest.raises(IndexFormatError, match="not an imageprism index"):
        ImageIndex.load(folder)
    index = ImageIndex(child.make_prism())
    index.add_embeddings(child.items(3, seed=1), ids=["a", "b", "c"])
    index.save(folder)
    assert sorted(p.name for p in folder.iterdir()) == sorted(read_manifest(folder).names() | {MANIFEST, LOCK})
    assert ImageIndex.load(folder, prism=child.make_prism()).ids == ("a", "b", "c")
