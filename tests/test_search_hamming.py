"""Exact Hamming range search (the bit finders of dedup): every pair within the radius, nothing else."""

from __future__ import annotations

import numpy as np
import pytest

from imageprism._dedup import DedupColumn, connected_labels, greedy_labels, labels_brute_force
from imageprism._math import popcount
from imageprism._search import hamming
from imageprism._search.hamming import MAX_CHUNK_BITS, NEAR_MIN_TABLE, ChunkIndex, chunk_plan, near_rates, packed_words


def clustered_words(rng: np.random.Generator, n: int, width: int, nbits: int) -> np.ndarray:
    """Random codes and noisy copies of them (0-12% of bits flipped), bits ``nbits`` and above zero."""
    bits = rng.integers(0, 2, (n, width * 64), dtype=np.uint8)
    copies = np.flatnonzero(rng.random(n) < 0.5)
    bits[copies] = bits[rng.integers(0, n, len(copies))] ^ (rng.random((len(copies), width * 64)) < rng.random((len(copies), 1)) * 0.12)
    bits[:, nbits:] = 0
    return np.packbits(bits, axis=1, bitorder="little").view(np.uint64)


def brute_pairs(queries: np.ndarray, words: np.ndarray, radius: int) -> set[tuple[int, int]]:
    dist = popcount(queries[:, None, :] ^ words[None, :, :]).sum(axis=-1)
    return {(int(q), int(r)) for q, r in zip(*np.nonzero(dist <= radius))}


@pytest.mark.parametrize(("width", "nbits", "radius"), [(3, 192, 19), (3, 192, 0), (3, 192, 30), (1, 36, 5), (1, 64, 6), (2, 128, 12)])
def test_chunk_index_finds_exactly_the_pairs_within_the_radius(width: int, nbits: int, radius: int) -> None:
    rng = np.random.default_rng(width * 1000 + radius)
    words = clustered_words(rng, 3000, width, nbits)
    index = ChunkIndex(words, nbits, radius, queries=10**6)  # as if searched often: chunks, not a flat scan
    assert index.plan is not None
    queries = np.ascontiguousarray(words[rng.integers(0, len(words), 600)])
    q, r = index.search([queries[:, w].copy() for w in range(width)])  # 600 queries: split over threads
    found = set(zip(q.tolist(), r.tolist()))
    assert found == brute_pairs(queries, words, radius)
    assert len(found) > 600  # more than each query's own row: copies were found


def test_flat_scan_when_the_radius_is_wide() -> None:
    rng = np.random.default_rng(9)
    words = clustered_words(rng, 800, 3, 192)
    index = ChunkIndex(words, 192, 60, queries=200)
    assert index.plan is None
    q, r = index.search([words[:200, w].copy() for w in range(3)])
    assert set(zip(q.tolist(), r.tolist())) == brute_pairs(words[:200], words, 60)


def test_without_side_words_the_result_is_the_same(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(3)
    words = clustered_words(rng, 2000, 3, 192)
    queries = [words[:300, w].copy() for w in range(3)]
    with_side = ChunkIndex(words, 192, 19, queries=10**6)
    monkeypatch.setattr(hamming, "SIDE_BUDGET", 0)
    without = ChunkIndex(words, 192, 19, queries=10**6)
    assert with_side.chunks[0].side is not None and without.chunks[0].side is None
    assert set(zip(*map(np.ndarray.tolist, with_side.search(queries)))) == set(zip(*map(np.ndarray.tolist, without.search(queries))))


@pytest.mark.parametrize("table", [100, 26_000, 260_000, 2_600_000, 26_000_000])
@pytest.mark.parametrize(("nbits", "radius"), [(192, 19), (192, 9), (64, 6), (36, 3), (1024, 100)])
def test_chunk_plan_satisfies_the_pigeonhole(table: int, nbits: int, radius: int) -> None:
    plan = chunk_plan(nbits, radius, table, table // 26 or 1)
    if plan is not None:
        assert sum(flips + 1 for _, flips in plan) > radius
        assert sum(bits for bits, _ in plan) <= nbits and all(bits <= MAX_CHUNK_BITS for bits, _ in plan)


def test_chunk_plan_widens_with_the_table() -> None:
    """Buckets must not fill in proportion to the table: a larger table gets wider chunks."""
    small, large = chunk_plan(192, 19, 26_000, 1000), chunk_plan(192, 19, 26_000_000, 1_000_000)
    assert small is not None and large is not None
    assert min(b for b, _ in large) > max(b for b, _ in small)


def scenes(rng: np.random.Generator, n: int, sources: int) -> np.ndarray:
    """Rows of ``n`` images of a few ``sources``: each row its source with 2-10% of bits flipped, so
    rows of one source share chunk values far more often than random codes, and some are within 19 bits."""
    base = rng.integers(0, 2, (sources, 192), dtype=np.uint8)
    bits = base[rng.integers(0, sources, n)] ^ (rng.random((n, 192)) < rng.uniform(0.02, 0.1, (n, 1)))
    return np.packbits(bits, axis=1, bitorder="little").view(np.uint64)


def test_a_table_of_alike_rows_gets_a_plan_for_its_real_buckets() -> None:
    """Chunk plans count the rows a probe finds as measured on the table: rows of a few scenes
    share chunk values, so wider chunks with more flips pay; random rows keep the random-code plan.
    The search stays exact."""
    rng = np.random.default_rng(11)
    alike = scenes(rng, NEAR_MIN_TABLE + 20_000, 40)
    rates = near_rates(list(alike.T.copy()), 192)
    assert rates[20, 1] > 50 * 21 / 2**20  # far above random codes
    assert chunk_plan(192, 19, len(alike), len(alike), rates) != chunk_plan(192, 19, len(alike), len(alike))
    random = np.packbits(rng.integers(0, 2, (NEAR_MIN_TABLE + 20_000, 192), dtype=np.uint8), axis=1, bitorder="little").view(np.uint64)
    plain = near_rates(list(random.T.copy()), 192)
    assert chunk_plan(192, 19, len(random), len(random), plain) == chunk_plan(192, 19, len(random), len(random))
    index = ChunkIndex(alike, 192, 19, queries=len(alike))
    assert index.plan == chunk_plan(192, 19, len(alike), len(alike), rates)
    queries = np.ascontiguousarray(alike[rng.integers(0, len(alike), 300)])
    q, r = index.search([queries[:, w].copy() for w in range(3)])
    assert set(zip(q.tolist(), r.tolist())) == brute_pairs(queries, alike, 19)


def test_packed_words_keep_distances_of_odd_row_widths() -> None:
    rng = np.random.default_rng(4)
    bits = rng.integers(0, 2, (50, 4, 40), dtype=np.uint8)
    bits[..., 36:] = 0  # hash_size 6: 36 bits in 5 bytes
    codes = np.packbits(bits, axis=-1)
    words, nbits = packed_words(codes, 2, 36)
    assert nbits == 72 and words.shape == (100, 2)
    rows = bits.reshape(100, 80)
    dist = popcount(words[:, None, :] ^ words[None, :, :]).sum(axis=-1)
    np.testing.assert_array_equal(dist, (rows[:, None, :] != rows[None, :, :]).sum(axis=-1))


def robust_like(rng: np.random.Generator, n: int, variants: int = 26) -> np.ndarray:
    """Variant groups derived from the whole image (5-50% of bits flipped), and near copies: re-encoded
    (every group, noisy), or edited so that their whole image is one of the source's groups."""
    base = rng.integers(0, 2, (n, 1, 192), dtype=np.uint8)
    bits = base ^ (rng.random((n, variants, 192)) < np.linspace(0, 0.5, variants)[None, :, None])
    for i in np.flatnonzero(rng.random(n) < 0.3):
        if i == 0:
            continue
        source = bits[rng.integers(0, i)]
        if rng.random() < 0.5:
            bits[i] = source ^ (rng.random(source.shape) < 0.04)
        else:
            bits[i, 0] = source[rng.integers(1, variants)] ^ (rng.random(192) < 0.03)
    return np.packbits(bits.reshape(n, variants, 3, 64), axis=-1).reshape(n, variants * 3, 8)


@pytest.mark.parametrize("threshold", [0.85, 0.9, 0.95])
def test_26_variant_dedup_equals_brute_force(threshold: float) -> None:
    rng = np.random.default_rng(int(threshold * 100))
    codes = robust_like(rng, 700)
    col = DedupColumn("hash", "bit_variants", codes, bits_per_row=64, variants=26)
    labels = greedy_labels([col], threshold)
    np.testing.assert_array_equal(labels, labels_brute_force([col], threshold))
    assert 1 < len(np.unique(labels)) < 650  # edited copies were grouped through their variants


def test_identical_copies_take_their_first_copys_label() -> None:
    rng = np.random.default_rng(21)
    codes = robust_like(rng, 500)
    copies = rng.integers(1, 500, 150)
    codes[copies] = codes[(rng.random(150) * copies).astype(np.int64)]  # exact copies of earlier items
    col = DedupColumn("hash", "bit_variants", codes, bits_per_row=64, variants=26)
    seen: list[int] = []
    labels = greedy_labels([col], 0.9, on_block=seen.append)
    np.testing.assert_array_equal(labels, labels_brute_force([col], 0.9))
    assert sum(seen) == 500  # progress still counts every input


def test_huge_identical_cluster_of_robust_hashes_is_fast_and_correct() -> None:
    rng = np.random.default_rng(22)
    codes = np.repeat(robust_like(rng, 1), 30_000, axis=0)
    codes[::1000] = rng.integers(0, 256, (30, 78, 8), dtype=np.uint8)  # unrelated
    col = DedupColumn("hash", "bit_variants", codes, bits_per_row=64, variants=26)
    labels = greedy_labels([col], 0.9)  # the cluster squared (9e8 hits) would take many minutes
    expected = np.ones(30_000, np.int64)
    expected[::1000] = np.arange(0, 30_000, 1000)
    np.testing.assert_array_equal(labels, expected)


@pytest.mark.parametrize("ahead", [1, 100, 700])
def test_searches_ahead_of_the_blocks_give_the_same_labels(monkeypatch: pytest.MonkeyPatch, ahead: int) -> None:
    """The variant finder searches inputs ahead of the blocks, in windows that blocks straddle: labels are unchanged."""
    rng = np.random.default_rng(30)
    codes = robust_like(rng, 2000)
    col = DedupColumn("hash", "bit_variants", codes, bits_per_row=64, variants=26)
    expected = labels_brute_force([col], 0.9)
    whole = connected_labels([col], 0.9, block_size=64)  # one search of every input (the window is larger than n)
    monkeypatch.setattr(hamming, "SEARCH_AHEAD", ahead)
    np.testing.assert_array_equal(greedy_labels([col], 0.9, block_size=64), expected)
    np.testing.assert_array_equal(greedy_labels([col], 0.9, block_size=300), expected)
    for got, want in zip(connected_labels([col], 0.9, block_size=64), whole):
        np.testing.assert_array_equal(got, want)
    assert 1 < len(np.unique(expected)) < 1900
