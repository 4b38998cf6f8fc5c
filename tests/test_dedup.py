"""The dedup core: index-backed greedy labels equal the brute-force greedy pass."""

from __future__ import annotations

import time

import numpy as np
import pytest

from imageprism._dedup import (
    DedupColumn,
    DedupResult,
    blend_scores,
    greedy_labels,
    labels_brute_force,
)
from imageprism._math import cosine
from imageprism._profiles import blend
from imageprism._runtime import ModelRuntime
from imageprism._search.hamming import multihash_params
from imageprism.dimensions.hash import HashConfig, HashDimension
from imageprism.errors import ConfigError, InputError

THRESHOLDS = [0.0, 0.5, 0.8, 0.875, 0.9, 0.95, 1.0]


def plain_hash_plugin() -> HashDimension:
    """The hash dimension with plain hashes (one row per algorithm): the "bits" kind."""
    config = HashConfig.plain() if hasattr(HashConfig, "plain") else HashConfig()
    plugin = HashDimension(config, ModelRuntime())
    assert plugin.embedding_kind == "bits"
    return plugin


def clustered_bits(rng: np.random.Generator, n: int, rows: int = 3, nbytes: int = 8, nbits: int = 64) -> np.ndarray:
    """Noisy copies of a few hundred base codes (flip rates 0-15%), padding bits zero."""
    base = rng.integers(0, 256, (max(n // 10, 1), rows, nbytes), dtype=np.uint8)
    codes = base[rng.integers(0, len(base), n)]
    bits = np.unpackbits(codes, axis=-1)
    flips = rng.random(bits.shape) < rng.random((n, 1, 1)) * 0.15
    bits = bits ^ flips
    bits[..., nbits:] = 0
    return np.packbits(bits, axis=-1)


def clustered_vectors(rng: np.random.Generator, n: int, d: int = 48, spread: float = 0.3) -> np.ndarray:
    centres = rng.standard_normal((max(n // 15, 1), d))
    v = centres[rng.integers(0, len(centres), n)] + rng.standard_normal((n, d)) * spread
    return (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)


def check_equal(columns: list[DedupColumn], threshold: float, **kw: object) -> np.ndarray:
    fast = greedy_labels(columns, threshold, **kw)  # type: ignore[arg-type]
    slow = labels_brute_force(columns, threshold, **kw)  # type: ignore[arg-type]
    np.testing.assert_array_equal(fast, slow)
    return fast


@pytest.mark.parametrize("threshold", THRESHOLDS)
def test_hash_codes_clustered_match_brute_force(threshold: float) -> None:
    rng = np.random.default_rng(1)
    codes = clustered_bits(rng, 3000)
    labels = check_equal([DedupColumn("hash", "bits", codes, bits_per_row=64)], threshold)
    if 0.5 < threshold < 1:
        assert 1 < len(np.unique(labels)) < len(codes)  # a real mix of groups and singletons


def test_hash_codes_random_and_odd_bit_count_match_brute_force() -> None:
    rng = np.random.default_rng(2)
    random = rng.integers(0, 256, (4000, 3, 8), dtype=np.uint8)
    check_equal([DedupColumn("hash", "bits", random, bits_per_row=64)], 0.9)
    # hash_size 6: 36 meaningful bits in 5 bytes, padding zero; a single row
    odd = clustered_bits(rng, 2000, rows=1, nbytes=5, nbits=36)
    for t in (0.7, 0.85, 0.95):
        check_equal([DedupColumn("hash", "bits", odd, bits_per_row=36)], t)


@pytest.mark.parametrize("threshold", THRESHOLDS)
def test_vectors_clustered_match_brute_force(threshold: float) -> None:
    rng = np.random.default_rng(3)
    v = clustered_vectors(rng, 2500)
    check_equal([DedupColumn("semantic", "vector", v)], threshold)


def test_vectors_reduced_projection_is_exact() -> None:
    """Large enough for the principal-axis reduction (k < d) to be used, with near-threshold pairs."""
    from imageprism._math import row_norms as _row_norms
    from imageprism._math import unit_rows as _unit_rows
    from imageprism._search.range import _VectorFinder

    rng = np.random.default_rng(4)
    v = clustered_vectors(rng, 9000, d=128, spread=0.25)
    finder = _VectorFinder(_unit_rows(v, _row_norms(v)), 0.9)
    assert finder.k < 128  # the bound is actually in use
    labels = check_equal([DedupColumn("instance", "vector", v)], 0.9)
    scores = DedupColumn("instance", "vector", v).pair_scores(np.arange(9000), labels)
    assert np.sum((scores > 0.88) & (scores < 0.92)) > 100  # many pairs near the threshold


def test_unnormalised_and_zero_vectors() -> None:
    rng = np.random.default_rng(5)
    v = clustered_vectors(rng, 1500) * rng.uniform(0.1, 10, (1500, 1)).astype(np.float32)
    v[::97] = 0.0
    check_equal([DedupColumn("style", "vector", v)], 0.9)


@pytest.mark.parametrize("missing", ["zero", "renormalize"])
@pytest.mark.parametrize("threshold", [0.0, 0.6, 0.8])
def test_blend_with_other_kind_matches_brute_force(missing: str, threshold: float) -> None:
    rng = np.random.default_rng(6)
    n = 250
    codes = clustered_bits(rng, n)
    vecs = clustered_vectors(rng, n, d=32)
    faces: list[np.ndarray | None] = [None if i % 3 == 0 else vecs[i : i + 1] * 1.0 for i in range(n)]

    def face_score(a: np.ndarray | None, b: np.ndarray | None) -> float | None:
        return None if a is None or b is None else cosine(a[0], b[0])

    columns = [
        DedupColumn("hash", "bits", codes, bits_per_row=64),
        DedupColumn("semantic", "vector", vecs),
        DedupColumn("face", "other", faces, score=face_score),
    ]
    weights = {"hash": 0.5, "semantic": 0.3, "face": 0.2}
    labels = check_equal(columns, threshold, weights=weights, missing=missing)
    # independent reference: pair by pair through the plugins' own score functions and blend()
    hash_plugin = plain_hash_plugin()
    reps: list[int] = []
    expected = []
    for x in range(n):
        for r in reps:
            s = {
                "hash": hash_plugin.score(codes[x], codes[r]),
                "semantic": cosine(vecs[x], vecs[r]),
                "face": face_score(faces[x], faces[r]),
            }
            if blend(s, weights, missing) >= threshold:
                expected.append(r)
                break
        else:
            reps.append(x)
            expected.append(x)
    assert labels.tolist() == expected


def test_zero_weight_dimension_does_not_matter() -> None:
    rng = np.random.default_rng(7)
    codes = clustered_bits(rng, 800)
    vecs = rng.standard_normal((800, 16)).astype(np.float32)
    cols = [DedupColumn("hash", "bits", codes, bits_per_row=64), DedupColumn("semantic", "vector", vecs)]
    with_zero = greedy_labels(cols, 0.9, weights={"hash": 1.0, "semantic": 0.0})
    alone = greedy_labels(cols[:1], 0.9, weights={"hash": 1.0})
    np.testing.assert_array_equal(with_zero, alone)


def test_pair_scores_equal_the_plugins() -> None:
    rng = np.random.default_rng(8)
    codes = clustered_bits(rng, 300)
    plugin = plain_hash_plugin()
    a, b = rng.integers(0, 300, 500), rng.integers(0, 300, 500)
    fast = DedupColumn("hash", "bits", codes, bits_per_row=64).pair_scores(a, b)
    assert fast.tolist() == [plugin.score(codes[i], codes[j]) for i, j in zip(a, b)]  # bit for bit
    vecs = rng.standard_normal((300, 40)).astype(np.float32)
    fast = DedupColumn("semantic", "vector", vecs).pair_scores(a, b)
    np.testing.assert_allclose(fast, [cosine(vecs[i], vecs[j]) for i, j in zip(a, b)], rtol=0, atol=1e-12)


def test_blend_scores_is_blend_pair_by_pair() -> None:
    rng = np.random.default_rng(9)
    n = 400
    scores = {"hash": rng.random(n), "semantic": rng.random(n) * 2 - 1, "face": rng.random(n)}
    scores["face"][rng.random(n) < 0.4] = np.nan
    scores["semantic"][rng.random(n) < 0.1] = np.nan
    weights = {"hash": 0.45, "semantic": 0.35, "face": 0.2}
    for missing in ("zero", "renormalize"):
        got = blend_scores(scores, weights, missing, n)
        want = [
            blend({k: (None if np.isnan(v[i]) else float(v[i])) for k, v in scores.items()}, weights, missing)
            for i in range(n)
        ]
        assert got.tolist() == want


def test_ties_go_to_the_first_representative() -> None:
    # 0 and 1 are 12 bits apart (both representatives at t=0.9 on 64 bits: at most 6
    # bits may differ); 2 is 6 bits from each, so it could join either: it must join 0.
    zero = np.zeros(64, np.uint8)
    one = zero.copy()
    one[:12] = 1
    two = zero.copy()
    two[:6] = 1
    codes = np.packbits(np.stack([zero, one, two]), axis=-1)[:, None, :]
    col = DedupColumn("hash", "bits", codes, bits_per_row=64)
    assert greedy_labels([col], 0.9).tolist() == [0, 1, 0]
    # with the order swapped, 1 comes first and wins
    assert greedy_labels([DedupColumn("hash", "bits", codes[[1, 0, 2]], bits_per_row=64)], 0.9).tolist() == [0, 1, 0]


def test_empty_single_and_thresholds_at_the_ends() -> None:
    empty = DedupColumn("hash", "bits", np.zeros((0, 3, 8), np.uint8), bits_per_row=64)
    assert greedy_labels([empty], 0.9).tolist() == []
    one = DedupColumn("hash", "bits", np.zeros((1, 3, 8), np.uint8), bits_per_row=64)
    assert greedy_labels([one], 0.9).tolist() == [0]
    rng = np.random.default_rng(10)
    codes = rng.integers(0, 256, (500, 3, 8), dtype=np.uint8)
    codes[250] = codes[3]
    col = DedupColumn("hash", "bits", codes, bits_per_row=64)
    assert set(greedy_labels([col], 0.0).tolist()) == {0}  # every hash score is >= 0
    at_one = greedy_labels([col], 1.0)
    assert at_one[250] == 3 and len(np.unique(at_one)) == 499  # only identical codes merge


def test_huge_identical_cluster_is_fast_and_correct() -> None:
    rng = np.random.default_rng(11)
    codes = np.repeat(rng.integers(0, 256, (1, 3, 8), dtype=np.uint8), 50_000, axis=0)
    codes[::1000] = rng.integers(0, 256, (50, 3, 8), dtype=np.uint8)
    col = DedupColumn("hash", "bits", codes, bits_per_row=64)
    start = time.perf_counter()
    labels = greedy_labels([col], 0.9)
    elapsed = time.perf_counter() - start
    assert labels[1] == 1 and set(labels.tolist()) == {1, *range(0, 50_000, 1000)}
    # not a timing goal, a blow-up guard: cluster-squared pairs (1.25e9) would take minutes
    assert elapsed < 60


def test_bad_arguments_raise_clear_errors() -> None:
    col = DedupColumn("hash", "bits", np.zeros((3, 3, 8), np.uint8), bits_per_row=64)
    for bad in (-0.1, 1.5, float("nan"), "0.9", True):
        with pytest.raises(ConfigError, match="threshold"):
            greedy_labels([col], bad)  # type: ignore[arg-type]
    other = DedupColumn("semantic", "vector", np.zeros((4, 8), np.float32))
    with pytest.raises(InputError, match="one embedding per input"):
        greedy_labels([col, other], 0.9)
    with pytest.raises(InputError, match="uint8"):
        DedupColumn("hash", "bits", np.zeros((3, 8), np.float32))
    with pytest.raises(ConfigError, match="missing-score policy"):
        greedy_labels([col], 0.9, missing="ignore")


@pytest.mark.parametrize(("nbits", "radius"), [(192, 19), (192, 1), (192, 0), (64, 6), (192, 38), (1024, 100)])
def test_multihash_parameters_satisfy_the_pigeonhole(nbits: int, radius: int) -> None:
    params = multihash_params(nbits, radius, 100_000)
    if params is not None:
        chunks, bits, flips = params
        assert chunks * (flips + 1) > radius and chunks * bits <= nbits and bits <= 20


def test_result_groups_and_json() -> None:
    r = DedupResult.from_labels([0, 0, 2, -1, 2, 5], threshold=0.9)
    assert r.unique.tolist() == [0, 2, 5]
    assert r.groups == {0: (0, 1), 2: (2, 4), 5: (5,)}
    assert r.duplicate_groups == {0: (0, 1), 2: (2, 4)}
    assert r.to_dict()["groups"][1] == {"representative": 2, "members": [2, 4]}
    assert "6 inputs, 3 unique, 2 groups with duplicates" in repr(r)
    with pytest.raises(ValueError):
        r.labels[0] = 3  # read-only
    assert r == DedupResult.from_labels([0, 0, 2, -1, 2, 5], threshold=0.9)
    assert r != DedupResult.from_labels([0, 1, 2, -1, 2, 5], threshold=0.9)


def variant_codes(rng: np.random.Generator, n: int, variants: int = 16, k: int = 3) -> np.ndarray:
    """Hashes with variant groups: near copies, and "mirrored" copies whose group 0 is a
    variant group of their source (and vice versa), as a flipped image's hashes are."""
    base = rng.integers(0, 256, (max(n // 8, 1), variants, k, 8), dtype=np.uint8)
    pick = rng.integers(0, len(base), n)
    codes = base[pick].copy()
    swap = rng.random(n) < 0.4
    for i in np.flatnonzero(swap):
        v = rng.integers(1, variants)
        codes[i, [0, v]] = codes[i, [v, 0]]
    bits = np.unpackbits(codes, axis=-1)
    bits ^= rng.random(bits.shape) < rng.random((n, 1, 1, 1)) * 0.12
    return np.packbits(bits, axis=-1).reshape(n, variants * k, 8)


@pytest.mark.parametrize("threshold", [0.8, 0.9, 0.95])
def test_hash_variants_match_brute_force_and_the_plugin(threshold: float) -> None:
    """Best-alignment scores (flips/crops, ``bit_variants``) through two multi-index tables."""
    rng = np.random.default_rng(12)
    codes = variant_codes(rng, 1500)
    col = DedupColumn("hash", "bit_variants", codes, bits_per_row=64, variants=16)
    labels = check_equal([col], threshold)
    assert 1 < len(np.unique(labels)) < 1500
    if hasattr(HashConfig, "robust"):
        plugin = HashDimension(HashConfig.robust(), ModelRuntime())
        if plugin.bit_variants == 16 and len(plugin.config.algorithms) == 3:
            a, b = rng.integers(0, 1500, 300), rng.integers(0, 1500, 300)
            assert col.pair_scores(a, b).tolist() == [plugin.score(codes[i], codes[j]) for i, j in zip(a, b)]


@pytest.mark.parametrize("block_size", [7, 64])
def test_hash_variants_across_small_blocks_match_brute_force(block_size: int) -> None:
    """Matches found ahead (a later input's variant near a representative's whole image) wait for their block."""
    rng = np.random.default_rng(5)
    codes = variant_codes(rng, 400)
    col = DedupColumn("hash", "bit_variants", codes, bits_per_row=64, variants=16)
    fast = greedy_labels([col], 0.9, block_size=block_size)
    np.testing.assert_array_equal(fast, labels_brute_force([col], 0.9))
    assert 1 < len(np.unique(fast)) < 400
