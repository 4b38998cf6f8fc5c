"""The persistent cache under faults: concurrent creation, foreign files, damaged rows and pages,
a full disk, a read-only file. Each case: no traceback, an ImagePrismError (or the right answer
with one warning), bounded time and memory, and what was stored before still there."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from bounded import python_code, run_bounded

from imageprism import ImagePrism
from imageprism._cache import APPLICATION_ID, CacheWarning, PersistentCache
from imageprism.errors import CacheError

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "images"


def images(n: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (32, 32, 3), dtype=np.uint8) for _ in range(n)]


def hashes(prism: ImagePrism, inputs: list[np.ndarray]) -> list[bytes]:
    return [e["hash"].tobytes() for e in prism.embed_batch(inputs).embeddings]  # type: ignore[index]


_OPENER = """
import sys
from imageprism._cache import PersistentCache
import numpy as np
folder, me = sys.argv[1], int(sys.argv[2])
for round in range(int(sys.argv[3])):
    with PersistentCache(f"{folder}/c{round}.sqlite3") as cache:
        cache.put((f"p{me}", "t"), np.full(4, me, np.int64))
        assert cache.lookup((f"p{me}", "t"))[0]
"""


def test_four_processes_create_one_new_cache_at_once(tmp_path: Path) -> None:
    rounds = 15
    argv = python_code(_OPENER)
    procs = [
        subprocess.Popen([*argv, str(tmp_path), str(me), str(rounds)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for me in range(4)
    ]
    outputs = [p.communicate(timeout=300) for p in procs]
    for proc, (_, err) in zip(procs, outputs):
        assert proc.returncode == 0 and "Traceback" not in err and "CacheWarning" not in err, err
    for round in range(rounds):
        with sqlite3.connect(tmp_path / f"c{round}.sqlite3") as conn:
            assert conn.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID
            keys = {k for (k,) in conn.execute("SELECT pixel_key FROM embeddings")}
        assert keys == {f"p{me}" for me in range(4)}, (round, keys)


def foreign_database(path: Path, *, user_version: int = 7, table: str = "embeddings") -> bytes:
    conn = sqlite3.connect(path)
    conn.execute(f"CREATE TABLE {table} (id INTEGER PRIMARY KEY, body TEXT)")
    conn.execute(f"INSERT INTO {table} (body) VALUES ('precious')")
    conn.execute("CREATE TABLE invoices (n INTEGER)")
    conn.execute(f"PRAGMA user_version = {user_version}")
    conn.commit()
    conn.close()
    return path.read_bytes()


@pytest.mark.parametrize("user_version", [0, 1, 7])
def test_another_applications_database_is_refused_and_left_unchanged(tmp_path: Path, user_version: int) -> None:
    path = tmp_path / "app.db"
    before = foreign_database(path, user_version=user_version)
    mtime = path.stat().st_mtime_ns
    with pytest.raises(CacheError, match="another application's SQLite database.*left unchanged") as caught:
        PersistentCache(path)
    message = str(caught.value)
    assert str(path) in message and caught.value.path == str(path) and "delete" not in message.lower()
    assert "tables: embeddings, invoices" in message
    assert path.read_bytes() == before and path.stat().st_mtime_ns == mtime
    assert sorted(p.name for p in tmp_path.iterdir()) == ["app.db"]  # no -wal/-shm left beside it
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "delete"


def test_a_database_of_another_application_id_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA application_id = 1234")
    conn.commit()
    conn.close()
    before = path.read_bytes()
    with pytest.raises(CacheError, match="application_id 0x4d2"):
        PersistentCache(path)
    assert path.read_bytes() == before


def test_a_cache_of_the_previous_layout_is_upgraded(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite3"
    conn = sqlite3.connect(path)
    conn.execute(
        "CREATE TABLE embeddings (pixel_key TEXT NOT NULL, token TEXT NOT NULL, dtype TEXT, "
        "shape TEXT, data BLOB, PRIMARY KEY (pixel_key, token)) WITHOUT ROWID"
    )
    conn.execute("INSERT INTO embeddings VALUES ('px', 't', NULL, NULL, NULL)")
    conn.execute("PRAGMA user_version = 1")
    conn.commit()
    conn.close()
    with PersistentCache(path) as cache:
        assert cache.disk_entries() == 0  # rebuilt: old rows carry no checksum
        cache.put(("px", "t"), np.ones(2))
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID


def test_a_cache_from_a_newer_imageprism_is_refused_untouched(tmp_path: Path) -> None:
    path = tmp_path / "new.sqlite3"
    PersistentCache(path).close()
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA user_version = 99")
    before = path.read_bytes()
    with pytest.raises(CacheError, match="newer imageprism"):
        PersistentCache(path)
    assert path.read_bytes() == before


@pytest.mark.parametrize(
    "tamper",
    [
        "UPDATE embeddings SET dtype = NULL, shape = NULL, data = NULL",  # read as "no embedding" before
        "UPDATE embeddings SET data = substr(data, 1, 3) || x'5a' || substr(data, 5)",  # one byte changed, as TEXT
        "UPDATE embeddings SET data = CAST(substr(data, 1, 3) || x'5a' || substr(data, 5) AS BLOB)",  # and as a BLOB
        "UPDATE embeddings SET shape = '1,' || shape",
        "UPDATE embeddings SET dtype = '>u1'",
        "UPDATE embeddings SET checksum = x'00'",
        "UPDATE embeddings SET token = token || 'x'",  # a row moved to another key
    ],
)
def test_a_row_that_fails_its_checksum_is_a_miss_recomputed_and_rewritten(tmp_path: Path, tamper: str) -> None:
    path = tmp_path / "c.sqlite3"
    inputs = images(3)
    with PersistentCache(path) as cache:
        expected = hashes(ImagePrism(cache=cache), inputs)
    with sqlite3.connect(path) as conn:
        conn.execute(tamper)
    with PersistentCache(path) as cache:
        prism = ImagePrism(cache=cache)
        assert hashes(prism, inputs) == expected
        assert cache.stats.disk_hits == 0
        assert prism.compare(inputs[0], inputs[0]).weighted_score == 1.0
    with PersistentCache(path) as cache:  # rewritten: now read from the file
        assert hashes(ImagePrism(cache=cache), inputs) == expected and cache.stats.disk_hits == 3


def test_damaged_pages_never_give_a_wrong_embedding(tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite3"
    inputs = images(40)
    with PersistentCache(path) as cache:
        expected = hashes(ImagePrism(cache=cache), inputs)
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    raw = bytearray(path.read_bytes())
    rng = np.random.default_rng(1)
    for offset in rng.integers(4096, len(raw), 24):  # a few random bytes past the header page
        raw[int(offset)] ^= 0xFF
    path.write_bytes(bytes(raw))
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            with PersistentCache(path) as cache:
                assert hashes(ImagePrism(cache=cache), inputs) == expected
        assert len([w for w in caught if issubclass(w.category, CacheWarning)]) <= 1
    except CacheError as exc:  # damage seen at open: a clear error naming the file
        assert str(path) in str(exc) and "Traceback" not in str(exc)


_FULL_DISK = """
import json, resource, signal, sys, warnings
from imageprism import ImagePrism
from imageprism._cache import PersistentCache
from test_cache_faults import images, hashes
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)   # a write past the limit fails with EFBIG instead of killing
path, limit = sys.argv[1], int(sys.argv[2])
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    with PersistentCache(path) as cache:
        got = hashes(ImagePrism(cache=cache), images(300, seed=5))
        disabled = cache.disabled
print(json.dumps({"hashes": [h.hex() for h in got], "disabled": disabled,
                  "warnings": [f"{w.category.__name__}: {w.message}" for w in caught]}))
"""


def test_a_full_disk_degrades_to_no_cache_with_one_warning_and_keeps_old_rows(tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite3"
    old = images(5, seed=4)
    with PersistentCache(path) as cache:
        old_hashes = hashes(ImagePrism(cache=cache), old)
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    limit = path.stat().st_size + 2048  # the WAL needs more than this for one page
    outcome = run_bounded(python_code(_FULL_DISK) + [str(path), str(limit)], timeout=120)
    outcome.assert_clean()
    assert outcome.returncode == 0, outcome.stderr
    assert outcome.peak_mib < 400
    out = json.loads(outcome.stdout)
    assert out["hashes"] == [h.hex() for h in hashes(ImagePrism(), images(300, seed=5))]  # the run was not lost
    assert out["disabled"] and "could not be written: the disk is full" in out["disabled"]
    assert len(out["warnings"]) == 1 and out["warnings"][0].startswith("CacheWarning") and str(path) in out["warnings"][0]
    with PersistentCache(path) as cache:  # the rows written before are intact
        assert hashes(ImagePrism(cache=cache), old) == old_hashes and cache.stats.disk_hits == 5


def test_the_cli_on_a_full_disk_finishes_with_one_line_of_warning(tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite3"
    PersistentCache(path).close()
    size = path.stat().st_size

    def limit() -> None:
        import resource
        import signal

        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (size + 1024, size + 1024))

    photos = sorted(str(p) for p in EXAMPLES.glob("*.jpg"))
    outcome = run_bounded([sys.executable, "-m", "imageprism", "embed", "--json", "--cache", str(path), *photos], preexec_fn=limit)
    outcome.assert_clean()
    assert outcome.returncode == 0, outcome.stderr
    # the CLI turns warnings into one line each (issue 20): exactly one, naming the cache
    assert outcome.stderr.count("continuing without it") == 1 and "warning: the embedding cache" in outcome.stderr
    assert len(outcome.stderr.strip().splitlines()) == 1, outcome.stderr
    assert len(json.loads(outcome.stdout)) == len(photos)


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes to read-only files; the fault cannot be staged")
def test_a_read_only_cache_file_is_read_never_written_with_one_warning(tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite3"
    with PersistentCache(path) as cache:
        cache.put(("a", "t"), np.ones(2))
    before = path.read_bytes()
    path.chmod(0o444)
    with pytest.warns(CacheWarning, match="read-only"):
        cache = PersistentCache(path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        cache.put(("b", "t"), np.ones(2))
        assert cache.lookup(("b", "t"))[0]
    assert path.read_bytes() == before


def test_a_write_refused_by_sqlite_degrades_once(tmp_path: Path) -> None:
    """The same path as a read-only file, staged so that root sees it too: a query_only connection."""
    path = tmp_path / "c.sqlite3"
    with PersistentCache(path) as cache:
        cache.put(("a", "t"), np.ones(2))
    cache = PersistentCache(path)
    cache._connect().execute("PRAGMA query_only = ON")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for i in range(5):
            cache.put((f"k{i}", "t"), np.full(2, i))
    assert [w.category for w in caught] == [CacheWarning] and "read-only" in str(caught[0].message) and cache.disabled
    assert cache.lookup(("k3", "t"))[0]  # still served from memory
    cache.close()
    with PersistentCache(path) as again:
        assert again.lookup(("a", "t"))[0] and again.disk_entries() == 1


def test_a_path_that_is_a_folder_is_a_cache_error(tmp_path: Path) -> None:
    with pytest.raises(CacheError, match="not a regular file"):
        PersistentCache(tmp_path)


def test_a_cache_damaged_in_its_schema_page_is_a_cache_error_at_open(tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite3"
    with PersistentCache(path) as cache:
        cache.put(("a", "t"), np.ones(3))
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    raw = bytearray(path.read_bytes())
    raw[100:400] = b"\x07" * 300  # the schema's b-tree page, after the 100-byte file header
    path.write_bytes(bytes(raw))
    with pytest.raises(CacheError, match="is damaged .*malformed") as caught:
        PersistentCache(path)
    assert caught.value.path == str(path) and path.read_bytes() == bytes(raw)
