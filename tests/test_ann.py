"""Approximate search (``exact=False``): recall on clustered data, never a false match, state round trip."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from imageprism import ImageIndex, ImagePrism
from imageprism._dedup import DedupColumn, greedy_labels, labels_brute_force
from imageprism._search import ann as _ann
from imageprism._search import cells, topk
from imageprism._search.ann import AnnIndex, check_exact, use_ann
from imageprism._search.range import AnnFinder, range_finder
from imageprism._search.topk import AnnScan
from imageprism.errors import ConfigError, IndexFormatError, InputError

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
    """Search only ``nprobe`` cells even in a small index, and re-rank a tenth of it (the approximation
    the benchmarks measure at scale)."""
    monkeypatch.setattr(_ann, "MIN_SCAN", 0)
    monkeypatch.setattr(topk, "RERANK", 200)


def test_approximate_dedup_recall_and_no_false_match(probing: None) -> None:
    x = clustered(3000)
    exact = greedy_labels([DedupColumn("v", "vector", x)], THRESHOLD)
    column = DedupColumn("v", "vector", x)
    finder = range_finder(column, THRESHOLD, exact=False)
    assert isinstance(finder, AnnFinder) and 2 * cells.PROBES <= finder.cells  # a part of the cells is probed
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


def test_approximate_dedup_probing_every_cell_is_the_brute_force_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    # with every cell probed no pair is missed: the labels built from the near pairs are the greedy pass's
    monkeypatch.setattr(cells, "PROBES", 10**6)
    monkeypatch.setattr(cells, "_COARSE_PROBES", 10**6)
    x = clustered(2500, seed=10)
    column = DedupColumn("v", "vector", x)
    expected = labels_brute_force([column], 0.88)
    assert (expected != np.arange(len(x))).sum() > 300
    assert np.array_equal(greedy_labels([column], 0.88, exact=False, block_size=64), expected)  # many blocks
    assert np.array_equal(greedy_labels([column], 0.88, exact=False), expected)


def test_near_pairs_are_real_and_found_at_scale() -> None:
    x = clustered(6000, d=96, seed=11)
    i, j, n_cells = cells.near_pairs(x, THRESHOLD)
    cosines = x.astype(np.float64) @ x.T.astype(np.float64)
    truth_i, truth_j = np.nonzero(np.triu(cosines >= THRESHOLD, k=1))
    found = set(zip(i.tolist(), j.tolist()))
    assert np.all(i < j) and np.all(cosines[i, j] >= THRESHOLD - 1e-3)  # only near pairs, each once
    assert len(found) == len(i) and len(truth_i) > 500
    assert len(found & set(zip(truth_i.tolist(), truth_j.tolist()))) / len(truth_i) >= 0.99
    assert 2 * cells.PROBES <= n_cells  # while probing a part of the cells


def test_approximate_dedup_of_a_huge_cluster_falls_back_to_the_exact_scan() -> None:
    # 2,000 near copies of one image have 2M near pairs, far more than the greedy pass needs
    x = clustered(1500, seed=12)
    rng = np.random.default_rng(13)
    copies = x[0] + 0.01 * rng.standard_normal((2000, x.shape[1])).astype(np.float32)
    x = np.concatenate([x, copies / np.linalg.norm(copies, axis=1, keepdims=True)])
    with pytest.raises(cells.TooManyPairsError):
        cells.near_pairs(x, THRESHOLD)
    column = DedupColumn("v", "vector", x)
    assert not isinstance(range_finder(column, THRESHOLD, exact=False), AnnFinder)
    assert np.array_equal(greedy_labels([column], THRESHOLD, exact=False), labels_brute_force([column], THRESHOLD))


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


def _catalogue(n: int, seed: int) -> list[dict[str, np.ndarray]]:
    """512-d items in 100 clusters (same-cluster cosine about 0.75): a query's top 10 are its cluster's."""
    rng = np.random.default_rng(seed)
    centres = np.random.default_rng(0).standard_normal((100, 512))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    x = centres[rng.integers(100, size=n)] + 0.6 * rng.standard_normal((n, 512)) / np.sqrt(512)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return [{"semantic": v} for v in x.astype(np.float32)]


def test_index_approximate_search_recall_exact_scores_and_updates(probing: None) -> None:
    prism = ImagePrism(dimensions=["semantic"])
    items = _catalogue(3000, seed=6)
    ids = [f"i{i}" for i in range(len(items))]
    exact, approx = ImageIndex(prism), ImageIndex(prism, exact=False)
    for index in (exact, approx):
        index.add_embeddings(items, ids=ids)
    queries = _catalogue(40, seed=7)
    overlap = []
    for query in queries:
        truth = exact.search_embedding(query, k=10)
        hits = approx.search_embedding(query, k=10)
        overlap.append(len({h.id for h in hits} & {h.id for h in truth}) / 10)
        cosines = [float(query["semantic"].astype(np.float64) @ items[h.position]["semantic"].astype(np.float64)) for h in hits]
        assert [h.score for h in hits] == pytest.approx(cosines, abs=1e-6)  # scores are exact
        assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    assert np.mean(overlap) >= 0.9
    assert isinstance(approx._searchers["semantic"], AnnScan) and approx._searchers["semantic"].ann is not None
    # items added after the approximate index was built are found; removed ones are gone
    approx.add_embeddings(queries[:5], ids=[f"new{i}" for i in range(5)])
    assert approx.search_embedding(queries[3], k=1)[0].id == "new3"
    approx.remove(["i0", "new3"])
    assert "new3" not in {h.id for h in approx.search_embedding(queries[3], k=10)}
    assert approx.search_embedding(queries[4], k=1)[0].id == "new4"


def test_index_saves_its_setting_and_its_training(tmp_path: Path, probing: None, monkeypatch: pytest.MonkeyPatch) -> None:
    prism = ImagePrism(dimensions=["semantic"])
    items = _catalogue(2000, seed=8)
    index = ImageIndex(prism, exact=False)
    index.add_embeddings(items, ids=[f"i{i}" for i in range(len(items))])
    queries = _catalogue(10, seed=9)
    before = [index.search_embedding(q, k=10) for q in queries]
    folder = index.save(tmp_path / "catalogue")
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["exact"] is False and sorted(manifest["ann"]["semantic"]) == ["centroids", "codebook"]
    # a loaded index reuses the saved training: it never trains, and answers as before
    trainings = []
    monkeypatch.setattr(AnnIndex, "trained", classmethod(lambda cls, *a, **k: trainings.append(1)))
    loaded = ImageIndex.load(folder, prism=prism)
    assert loaded.exact is False and [loaded.search_embedding(q, k=10) for q in queries] == before
    # after a removal and new items, the same training still serves; saves keep its files
    loaded.remove(["i1", "i2"])
    loaded.add_embeddings(queries[:3], ids=["q0", "q1", "q2"])
    after = [loaded.search_embedding(q, k=10) for q in queries]
    assert after[1][0].id == "q1" and not trainings
    loaded.save(folder)
    again = ImageIndex.load(folder, prism=prism)
    assert json.loads((folder / "manifest.json").read_text())["ann"] == manifest["ann"]
    assert [again.search_embedding(q, k=10) for q in queries] == after and not trainings
    assert ImageIndex.load(folder, prism=prism, exact=True).exact is True
    # a damaged state or a tampered setting is refused with a clear error
    np.save(folder / manifest["ann"]["semantic"]["codebook"], np.zeros((3, 16, 7), np.float32))
    with pytest.raises(IndexFormatError, match="'semantic' search state.*codebook"):
        ImageIndex.load(folder, prism=prism)
    manifest["exact"] = "sometimes"
    (folder / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(IndexFormatError, match="'exact'"):
        ImageIndex.load(folder, prism=prism)
    with pytest.raises(ConfigError, match="exact='sometimes'"):
        ImageIndex(prism, exact="sometimes")  # type: ignore[arg-type]


def test_a_save_trains_a_large_approximate_index_once(tmp_path: Path, probing: None) -> None:
    prism = ImagePrism(dimensions=["semantic"])
    index = ImageIndex(prism, exact=False)
    index.add_embeddings(_catalogue(1500, seed=10), ids=[f"i{i}" for i in range(1500)])
    folder = index.save(tmp_path / "catalogue")  # no search yet: the save trains it
    first = json.loads((folder / "manifest.json").read_text())["ann"]
    assert set(first) == {"semantic"}
    small = ImageIndex(prism, exact=False)
    small.add_embeddings(_catalogue(50, seed=11), ids=[f"s{i}" for i in range(50)])
    assert json.loads((small.save(tmp_path / "small") / "manifest.json").read_text())["ann"] == {}  # scanned exactly
    exact = ImageIndex.load(folder, prism=prism, exact=True)
    exact.save(tmp_path / "exact")
    assert json.loads((tmp_path / "exact" / "manifest.json").read_text())["ann"] == {}


def test_cli_exact_flag(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from imageprism.cli import main  # noqa: PLC0415

    examples = str(Path(__file__).resolve().parent.parent / "examples" / "images")
    assert main(["index", "build", examples, "--out", str(tmp_path / "index"), "--exact", "auto"]) == 0
    assert json.loads((tmp_path / "index" / "manifest.json").read_text())["exact"] == "auto"
    capsys.readouterr()
    outputs = []
    for exact in ("true", "false", "AUTO"):
        assert main(["dedup", examples, "--json", "--exact", exact]) == 0
        outputs.append(json.loads(capsys.readouterr().out))
    assert outputs[0] == outputs[1] == outputs[2]  # a few images: the approximate pass scans them exactly
    assert main(["dedup", examples, "--exact", "false", "--linkage", "connected"]) != 0
    assert "--exact false is for --linkage representative" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["dedup", examples, "--exact", "sometimes"])


def test_bulk_work_on_every_core_gives_the_same_index(monkeypatch: pytest.MonkeyPatch) -> None:
    """Training and adding many vectors run on faiss's own thread count: the same cells, codes and hits."""
    x = clustered(3000, seed=12)
    queries = clustered(40, seed=13)
    found = []
    for bulk in (10**9, 100):  # one thread, then every core
        monkeypatch.setattr(_ann, "BULK", bulk)
        index = AnnIndex.trained(x)
        index.add(x, np.arange(len(x)))
        found.append((index.arrays(), index.search(queries, 50)))
    (one, hits_one), (every, hits_every) = found
    assert all(np.array_equal(one[key], every[key]) for key in one)
    assert np.array_equal(hits_one, hits_every)


def test_an_index_grown_past_its_training_trains_anew_and_saves_it(tmp_path: Path, probing: None) -> None:
    prism = ImagePrism(dimensions=["semantic"])
    items = _catalogue(4200, seed=14)
    index = ImageIndex(prism, exact=False)
    index.add_embeddings(items[:1500], ids=[f"i{i}" for i in range(1500)])
    folder = index.save(tmp_path / "catalogue")
    first = json.loads((folder / "manifest.json").read_text())["ann"]["semantic"]
    searcher = index._searchers["semantic"]
    assert isinstance(searcher, AnnScan)
    cells = len(searcher.state()["centroids"])
    index.add_embeddings(items[1500:1800], ids=[f"i{i}" for i in range(1500, 1800)])  # a little more: kept
    index.search_embedding(items[0], k=10)
    assert searcher.ann is not None and searcher.ann.params.nlist == cells
    index.save(folder)
    assert json.loads((folder / "manifest.json").read_text())["ann"]["semantic"] == first
    index.add_embeddings(items[1800:], ids=[f"i{i}" for i in range(1800, 4200)])  # 2.8x: twice the cells now
    queries = _catalogue(10, seed=15)
    before = [index.search_embedding(q, k=10) for q in queries]
    assert searcher.ann is not None and searcher.ann.params.nlist == 2 * cells
    index.save(folder)
    second = json.loads((folder / "manifest.json").read_text())["ann"]["semantic"]
    assert set(second) == set(first) and not set(second.values()) & set(first.values())
    assert not any((folder / name).exists() for name in first.values())  # the old training is gone
    loaded = ImageIndex.load(folder, prism=prism)
    assert [loaded.search_embedding(q, k=10) for q in queries] == before
