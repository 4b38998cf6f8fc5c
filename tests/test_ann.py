"""Approximate search (``exact=False``): recall on clustered data, never a false match, state round trip."""

from __future__ import annotations

import numpy as np
import pytest

from imageprism._dedup import DedupColumn, greedy_labels, labels_brute_force
from imageprism._search import ann as _ann
from imageprism._search.ann import AnnIndex, check_exact, use_ann
from imageprism._search.range import AnnFinder, range_finder
from imageprism.errors import ConfigError, InputError

THRESHOLD = 0.9


def clustered(n: int, d: int = 64, seed: int = 0) -> np.ndarray:
    """Unit vectors around 40 topics (a shared direction: mean cosine about 0.5), 20% near copies at 0.85-0.99."""
    rng = np.random.default_rng(seed)
    topics = rng.standard_normal((40, d))
    x = 0.5 * topics[rng.integers(40, size=n)] + rng.standard_normal((n, d))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    x = 0.7 * np.eye(d)[0] + 0.7 * x
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    for i in np.flatnonzero(rng.random(n) < 0.2)[1:]:
        base = x[rng.integers(i)]
        u = rng.standard_normal(d)
        u -= (u @ base) * base
        c = rng.uniform(0.85, 0.99)
        x[i] = c * base + np.sqrt(1 - c * c) * u / np.linalg.norm(u)
    return x.astype(np.float32)


def pair_recall(reference: np.ndarray, labels: np.ndarray) -> float:
    """Share of the pairs grouped together in ``reference`` also grouped together in ``labels``."""
    same_ref = reference[:, None] == reference[None, :]
    same = labels[:, None] == labels[None, :]
    upper = np.triu(np.ones_like(same_ref), k=1)
    return float((same_ref & same & upper).sum() / max((same_ref & upper).sum(), 1))


@pytest.fixture
def probing(monkeypatch: pytest.MonkeyPatch) -> None:
    """Search only ``nprobe`` cells even in a small index (the approximation the benchmarks measure at scale)."""
    monkeypatch.setattr(_ann, "MIN_SCAN", 0)


def test_approximate_dedup_recall_and_no_false_match(probing: None) -> None:
    x = clustered(3000)
    exact = greedy_labels([DedupColumn("v", "vector", x)], THRESHOLD)
    column = DedupColumn("v", "vector", x)
    finder = range_finder(column, THRESHOLD, exact=False)
    assert isinstance(finder, AnnFinder) and finder.ann.params.nprobe < finder.ann.params.nlist
    approx = greedy_labels([column], THRESHOLD, exact=False)
    assert pair_recall(exact, approx) >= 0.98
    assert (exact != np.arange(len(x))).sum() > 300  # the data has many groups to find
    members = np.flatnonzero(approx != np.arange(len(x)))
    cosines = np.einsum("ij,ij->i", x[members].astype(np.float64), x[approx[members]].astype(np.float64))
    assert cosines.min() >= THRESHOLD  # every grouped input reaches the threshold with its representative
    assert np.all(approx[members] < members) and np.all(approx[approx] == approx)  # representatives come first


def test_approximate_dedup_of_a_blend_never_groups_below_the_threshold(probing: None) -> None:
    x = clustered(2000, seed=1)
    y = clustered(2000, seed=2)
    weights = {"a": 0.5, "b": 0.5}
    columns = [DedupColumn("a", "vector", x), DedupColumn("b", "vector", y)]
    approx = greedy_labels(columns, 0.6, weights=weights, exact=False)
    members = np.flatnonzero(approx != np.arange(len(x)))
    blended = 0.5 * np.einsum("ij,ij->i", x[members], x[approx[members]]) + 0.5 * np.einsum("ij,ij->i", y[members], y[approx[members]])
    assert len(members) and blended.min() >= 0.6 - 1e-6


@pytest.mark.parametrize("threshold", [0.8, 0.95])
def test_exact_true_is_the_brute_force_pass(threshold: float) -> None:
    x = clustered(600, seed=3)
    column = DedupColumn("v", "vector", x)
    expected = labels_brute_force([column], threshold)
    assert np.array_equal(greedy_labels([column], threshold, exact=True), expected)
    assert np.array_equal(greedy_labels([column], threshold, exact="auto"), expected)  # small: exact


def test_exact_setting() -> None:
    assert check_exact("auto") == "auto" and check_exact(False) is False
    with pytest.raises(ConfigError, match="exact='yes'"):
        check_exact("yes")
    assert not use_ann(True, 10**9) and use_ann(False, 10) and use_ann("auto", _ann.EXACT_BELOW)
    assert not use_ann("auto", _ann.EXACT_BELOW - 1)


def test_state_round_trip_and_rebuild() -> None:
    x = clustered(2000, seed=4)
    index = AnnIndex.trained(x)
    index.add(x, np.arange(len(x)))
    again = AnnIndex.from_arrays(index.arrays(), x)
    queries = clustered(50, seed=5)
    assert np.array_equal(index.search(queries, 10), again.search(queries, 10))
    with pytest.raises(InputError, match="delete its files"):
        AnnIndex.from_arrays(index.arrays(), x[:, :32])
    broken = {**index.arrays(), "codebook": index.arrays()["codebook"][:, :8]}
    with pytest.raises(InputError, match="codebook"):
        AnnIndex.from_arrays(broken, x)
