"""The embedding caches: bounds, statistics, thread safety, and the SQLite file."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import numpy as np
import pytest

from imageprism import EmbeddingCache, ImagePrism
from imageprism._cache import PersistentCache, default_cache_path
from imageprism.errors import ConfigError, ImagePrismError


def value_for(i: int) -> np.ndarray | None:
    """A distinct array per key (None for every 7th: "no face" results are cached too)."""
    return None if i % 7 == 0 else np.full(i % 5 + 1, i, dtype=np.int64)


def test_lru_eviction_by_entries_and_bytes() -> None:
    cache = EmbeddingCache(max_entries=3, max_bytes=None)
    for i in range(3):
        cache.put((f"k{i}", "t"), np.zeros(2))
    assert cache.lookup(("k0", "t"))[0]  # k0 becomes most recent
    cache.put(("k3", "t"), np.zeros(2))
    assert not cache.lookup(("k1", "t"))[0]  # the least recently used went
    assert cache.lookup(("k0", "t"))[0] and len(cache) == 3

    by_bytes = EmbeddingCache(max_entries=None, max_bytes=100)
    for i in range(5):
        by_bytes.put((f"k{i}", "t"), np.zeros(4))  # 32 bytes each
    assert by_bytes.stats.bytes == 96 and len(by_bytes) == 3
    by_bytes.put(("none", "t"), None)  # costs no bytes
    assert by_bytes.lookup(("none", "t")) == (True, None)


def test_stats_count_hits_and_misses() -> None:
    cache = EmbeddingCache()
    cache.put(("a", "t"), np.ones(3, np.float32))
    assert cache.lookup(("a", "t"))[0] and not cache.lookup(("b", "t"))[0] and cache.lookup(("a", "t"))[0]
    stats = cache.stats
    assert (stats.hits, stats.misses, stats.entries, stats.bytes) == (2, 1, 1, 12)
    assert stats.hit_rate == pytest.approx(2 / 3)
    cache.clear()
    assert cache.stats.hits == 0 and len(cache) == 0


def test_stored_arrays_are_read_only_copies() -> None:
    cache = EmbeddingCache()
    original = np.arange(4.0)
    stored = cache.put(("a", "t"), original)
    original[0] = 99
    assert cache.lookup(("a", "t"))[1][0] == 0  # type: ignore[index]
    with pytest.raises(ValueError):
        stored[0] = 1  # type: ignore[index]


@pytest.mark.parametrize("kwargs", [{"max_entries": -1}, {"max_bytes": 1.5}, {"max_entries": True}])
def test_bad_bounds(kwargs: dict[str, object]) -> None:
    with pytest.raises(ConfigError, match="non-negative integer"):
        EmbeddingCache(**kwargs)  # type: ignore[arg-type]


def hammer(cache: EmbeddingCache, threads: int = 8, ops: int = 1500) -> list[int]:
    """Concurrent puts and lookups on a small key space; every hit must return the key's own value."""
    errors: list[str] = []
    lookups = [0] * threads

    def work(t: int) -> None:
        rng = np.random.default_rng(t)
        for _ in range(ops):
            i = int(rng.integers(0, 60))
            if rng.random() < 0.5:
                cache.put((f"k{i}", "tok"), value_for(i))
            else:
                lookups[t] += 1
                hit, got = cache.lookup((f"k{i}", "tok"))
                want = value_for(i)
                if hit and not (got is None and want is None or got is not None and np.array_equal(got, want)):
                    errors.append(f"key {i}: {got!r} != {want!r}")

    workers = [threading.Thread(target=work, args=(t,)) for t in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert errors == []
    return lookups


def test_memory_cache_is_thread_safe() -> None:
    cache = EmbeddingCache(max_entries=40, max_bytes=600)
    lookups = hammer(cache)
    stats = cache.stats
    assert stats.hits + stats.misses == sum(lookups)
    assert stats.entries <= 40 and stats.bytes <= 600
    held = [cache.lookup((f"k{i}", "tok")) for i in range(60)]
    assert stats.bytes == sum(v.nbytes for hit, v in held if hit and v is not None)


def test_persistent_cache_survives_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite3"
    arrays = {
        "hash": np.arange(24, dtype=np.uint8).reshape(3, 8),
        "vec": np.linspace(-1, 1, 512, dtype=np.float32),
        "faces": np.ones((2, 4), np.float64),
        "empty": np.zeros((0, 512), np.float32),
        "none": None,
    }
    with PersistentCache(path) as cache:
        for name, value in arrays.items():
            cache.put(("px", name), value)
        assert cache.disk_entries() == len(arrays)
    with PersistentCache(path, max_entries=2) as again:
        for name, value in arrays.items():
            hit, got = again.lookup(("px", name))
            assert hit, name
            if value is None:
                assert got is None
            else:
                assert got.dtype == value.dtype and got.shape == value.shape and np.array_equal(got, value)
                assert not got.flags.writeable
        assert not again.lookup(("px", "absent"))[0]
        stats = again.stats
        assert (stats.hits, stats.disk_hits, stats.misses) == (5, 5, 1)
        assert stats.entries <= 2  # the memory part stays bounded
        assert again.lookup(("px", "none")) == (True, None) and again.stats.disk_hits == 5  # memory hit now


def test_persistent_cache_stores_raw_bytes_not_pickles(tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite3"
    value = np.arange(6, dtype=np.float32).reshape(2, 3)
    with PersistentCache(path) as cache:
        cache.put(("px", "t"), value)
    with sqlite3.connect(path) as conn:
        dtype, shape, data = conn.execute("SELECT dtype, shape, data FROM embeddings").fetchone()
        assert (dtype, shape, data) == ("<f4", "2,3", value.tobytes())
        # a tampered row (object dtype, or bytes that do not fit the shape) reads as a miss
        conn.execute("INSERT INTO embeddings VALUES ('bad', 'obj', '|O', '1', x'00', x'00')")
        conn.execute("INSERT INTO embeddings VALUES ('bad', 'short', '<f4', '9', x'0000', x'00')")
    with PersistentCache(path) as cache:
        assert cache.lookup(("bad", "obj")) == (False, None)
        assert cache.lookup(("bad", "short")) == (False, None)


def test_persistent_cache_threads_and_two_instances_share_a_file(tmp_path: Path) -> None:
    path = tmp_path / "shared.sqlite3"
    first, second = PersistentCache(path, max_entries=10), PersistentCache(path, max_entries=10)
    try:
        lookups = hammer(first, threads=6, ops=300)
        assert first.stats.hits + first.stats.misses == sum(lookups)
        hammer(second, threads=2, ops=300)
        written = {f"k{i}" for i in range(60)}
        seen = [second.lookup((k, "tok"))[0] for k in sorted(written)]
        assert sum(seen) == first.disk_entries() == second.disk_entries()
    finally:
        first.close()
        second.close()


def test_clear_empties_the_file(tmp_path: Path) -> None:
    with PersistentCache(tmp_path / "c.sqlite3") as cache:
        cache.put(("a", "t"), np.ones(2))
        cache.clear()
        assert cache.disk_entries() == 0 and not cache.lookup(("a", "t"))[0]


def test_default_path_is_the_user_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import platformdirs

    monkeypatch.setattr(platformdirs, "user_cache_dir", lambda appname: str(tmp_path / "user-cache" / appname))
    assert default_cache_path() == tmp_path / "user-cache" / "imageprism" / "embeddings.sqlite3"
    with PersistentCache() as cache:
        assert cache.path == default_cache_path() and cache.path.is_file()


def test_unusable_file_raises_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "not-a-db.sqlite3"
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(ImagePrismError, match="not an SQLite database.*left unchanged: pass another path") as caught:
        PersistentCache(path)
    assert "delete" not in str(caught.value) and str(path) in str(caught.value)
    assert path.read_bytes() == b"this is not sqlite" * 100


def test_prism_rerun_skips_the_model_work(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (40, 40, 3), dtype=np.uint8) for _ in range(5)]
    path = tmp_path / "job.sqlite3"
    with PersistentCache(path) as cache:
        first = ImagePrism(cache=cache).embed_batch(images)
    with PersistentCache(path) as cache:
        prism = ImagePrism(cache=cache)
        calls: list[int] = []
        plugin = prism.plugins["hash"]
        original = plugin.embed_batch
        plugin.embed_batch = lambda batch: calls.append(len(batch)) or original(batch)  # type: ignore[method-assign]
        second = prism.embed_batch(images)
        assert calls == [] and cache.stats.disk_hits == 5
    for a, b in zip(first.embeddings, second.embeddings):
        assert np.array_equal(a["hash"], b["hash"])  # type: ignore[index]


def test_lookup_many_equals_one_lookup_per_key(tmp_path: Path) -> None:
    """The batched lookup of resumed runs: order kept, across several queries, tampered rows missed."""
    path = tmp_path / "c.sqlite3"
    keys = [(f"px{i}", "hash" if i % 2 else "vec") for i in range(1203)]  # > two queries of 500 per token
    with PersistentCache(path) as cache:
        for i, key in enumerate(keys):
            if i % 3:  # every third key is never stored
                cache.put(key, value_for(i))
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE embeddings SET data = x'00' WHERE pixel_key = 'px5'")  # checksum fails now
    conn.close()
    with PersistentCache(path, max_entries=10) as many, PersistentCache(path, max_entries=10) as one:
        many.lookup(keys[1])  # one key answered from memory
        got = many.lookup_many(keys + [("px1", "nope")])
        want = [one.lookup(key) for key in keys + [("px1", "nope")]]
        assert [hit for hit, _ in got] == [hit for hit, _ in want]
        assert sum(hit for hit, _ in got) == sum(1 for i in range(len(keys)) if i % 3 and i != 5)
        for (hit, a), (_, b) in zip(got, want):
            assert (a is None and b is None) or (hit and np.array_equal(a, b))
        assert (many.stats.hits, many.stats.misses) == (one.stats.hits + 1, one.stats.misses)
