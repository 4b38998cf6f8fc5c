"""Connected linkage (issue 18, item 3): components of the pairs reaching the threshold, with a hop cap."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from test_dedup import clustered_bits, clustered_vectors

from imageprism import ImagePrism
from imageprism._dedup import DedupColumn, connected_labels, greedy_labels, labels_brute_force
from imageprism._math import cosine
from imageprism._search.columns import Column
from imageprism.cli import main
from imageprism.errors import ConfigError

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "images"


def all_scores(columns: list[Column], weights: dict[str, float] | None = None, missing: str = "zero") -> np.ndarray:
    """Every pair's exact blended score, one pair at a time through each column's score (the reference)."""
    n = columns[0].n
    weights = weights or {c.name: 1.0 / len(columns) for c in columns}
    total = sum(weights.values())
    out = np.empty((n, n))
    for a in range(n):
        per = {c.name: c.pair_scores(np.full(n, a), np.arange(n)) for c in columns}
        acc, norm = np.zeros(n), np.zeros(n)
        for name, w in weights.items():
            s = per[name]
            known = ~np.isnan(s)
            acc += np.where(known, s, 0.0) * w
            norm += (known if missing == "renormalize" else np.ones(n)) * w
        out[a] = np.where(norm > 0, acc / np.where(norm > 0, norm, 1), 0.0) if missing == "renormalize" else acc / total
    return out


def reference(scores: np.ndarray, threshold: float, max_hops: int | None) -> np.ndarray:
    """Brute force: in order, each unassigned input claims the unassigned ones within ``max_hops`` links (BFS)."""
    n = len(scores)
    labels = np.full(n, -1)
    for u in range(n):
        if labels[u] >= 0:
            continue
        labels[u] = u
        frontier, hops = [u], 0
        while frontier and (max_hops is None or hops < max_hops):
            hops += 1
            nxt = []
            for x in frontier:
                for v in np.flatnonzero(scores[x] >= threshold).tolist():
                    if labels[v] < 0:
                        labels[v] = u
                        nxt.append(v)
            frontier = nxt
    return labels


def components(scores: np.ndarray, threshold: float) -> np.ndarray:
    """Plain connected components over all pairs (label: smallest member), by repeated min-propagation."""
    linked = scores >= threshold
    np.fill_diagonal(linked, True)
    labels = np.arange(len(scores))
    while True:
        new = np.array([labels[row].min() for row in linked])
        new = new[new]
        if np.array_equal(new, labels):
            return labels
        labels = new


def check(columns: list[Column], threshold: float, **kw: object) -> np.ndarray:
    scores = all_scores(columns, kw.get("weights"), str(kw.get("missing", "zero")))  # type: ignore[arg-type]
    unlimited, unlimited_scores = connected_labels(columns, threshold, max_hops=None, **kw)  # type: ignore[arg-type]
    np.testing.assert_array_equal(unlimited, components(scores, threshold))
    np.testing.assert_allclose(unlimited_scores, np.where(unlimited == np.arange(len(scores)), 1.0, scores[np.arange(len(scores)), unlimited]), atol=1e-9)
    for hops in (1, 2, 3):
        labels, _ = connected_labels(columns, threshold, max_hops=hops, **kw)  # type: ignore[arg-type]
        np.testing.assert_array_equal(labels, reference(scores, threshold, hops))
    greedy = labels_brute_force(columns, threshold, **kw)  # type: ignore[arg-type]
    np.testing.assert_array_equal(connected_labels(columns, threshold, max_hops=1, **kw)[0], greedy)  # type: ignore[arg-type]
    return unlimited


@pytest.mark.parametrize("threshold", [0.8, 0.875, 0.9, 0.95])
def test_plain_hashes_equal_brute_force_components(threshold: float) -> None:
    rng = np.random.default_rng(21)
    codes = clustered_bits(rng, 400)
    codes[50:60] = codes[7]  # exact copies are merged before the search: same answer
    labels = check([DedupColumn("hash", "bits", codes, bits_per_row=64)], threshold)
    greedy = greedy_labels([DedupColumn("hash", "bits", codes, bits_per_row=64)], threshold)
    assert len(np.unique(labels)) <= len(np.unique(greedy))


@pytest.mark.parametrize("threshold", [0.8, 0.9])
def test_variant_hashes_equal_brute_force_components(threshold: float) -> None:
    rng = np.random.default_rng(22)
    codes = clustered_bits(rng, 300, rows=8, nbytes=8)  # 4 variant groups of 2 rows
    check([DedupColumn("hash", "bit_variants", codes, bits_per_row=64, variants=4)], threshold)


@pytest.mark.parametrize("threshold", [0.7, 0.9])
def test_vectors_with_zero_and_repeated_rows_equal_brute_force(threshold: float) -> None:
    rng = np.random.default_rng(23)
    v = clustered_vectors(rng, 300, d=24, spread=0.35)
    v[::37] = 0.0  # identical zero vectors score 0 with everything, themselves included: never merged
    v[200:205] = v[3]
    labels = check([DedupColumn("semantic", "vector", v)], threshold)
    zero = np.arange(0, 300, 37)
    assert labels[zero].tolist() == zero.tolist()


@pytest.mark.parametrize("missing", ["zero", "renormalize"])
def test_blend_with_pairwise_dimension_equals_brute_force(missing: str) -> None:
    rng = np.random.default_rng(24)
    n = 150
    codes = clustered_bits(rng, n)
    vecs = clustered_vectors(rng, n, d=16)
    faces: list[np.ndarray | None] = [None if i % 4 == 0 else vecs[i : i + 1] * 1.0 for i in range(n)]

    def face_score(a: np.ndarray | None, b: np.ndarray | None) -> float | None:
        return None if a is None or b is None else cosine(a[0], b[0])

    columns = [
        DedupColumn("hash", "bits", codes, bits_per_row=64),
        DedupColumn("semantic", "vector", vecs),
        DedupColumn("face", "other", faces, score=face_score),
    ]
    check(columns, 0.7, weights={"hash": 0.5, "semantic": 0.3, "face": 0.2}, missing=missing)


def chain(length: int, step: int = 6) -> np.ndarray:
    """Codes 0..length-1 of 64 bits, each ``step`` bits from the previous (links at 0.9), drifting apart."""
    bits = np.zeros((length, 64), np.uint8)
    for k in range(1, length):
        bits[k] = bits[k - 1]
        bits[k, (k - 1) * step : k * step] = 1
    return np.packbits(bits, axis=-1)[:, None, :]


def test_the_hop_cap_stops_a_drifting_chain() -> None:
    codes = chain(8)  # neighbours score 0.906; 0 and 7 differ in 42 of 64 bits (0.34)
    col = DedupColumn("hash", "bits", codes, bits_per_row=64)
    assert connected_labels([col], 0.9, max_hops=None)[0].tolist() == [0] * 8
    labels, scores = connected_labels([col], 0.9)  # default: 2 links
    assert labels.tolist() == [0, 0, 0, 3, 3, 3, 6, 6]
    assert scores.min() == pytest.approx(1 - 12 / 64)  # two links from the kept copy, reported
    assert connected_labels([col], 0.9, max_hops=1)[0].tolist() == greedy_labels([col], 0.9).tolist()


def test_empty_and_bad_arguments() -> None:
    empty = DedupColumn("hash", "bits", np.zeros((0, 1, 8), np.uint8), bits_per_row=64)
    labels, scores = connected_labels([empty], 0.9)
    assert labels.tolist() == [] and scores.tolist() == []
    col = DedupColumn("hash", "bits", np.zeros((3, 1, 8), np.uint8), bits_per_row=64)
    assert connected_labels([col], 0.9)[0].tolist() == [0, 0, 0]
    for bad in (0, -1, 1.5, True, "2"):
        with pytest.raises(ConfigError, match="max_hops"):
            connected_labels([col], 0.9, max_hops=bad)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="threshold"):
        connected_labels([col], 1.5)
    with pytest.raises(ConfigError, match="linkage='single' is invalid"):
        ImagePrism().dedup_embeddings({"hash": np.zeros((2, 1, 8), np.uint8)}, linkage="single")  # type: ignore[arg-type]


# -- the issue's case, through the API and the CLI -------------------------------------------


@pytest.fixture(scope="module")
def rotated_first() -> list[Image.Image]:
    """A 90-degree-rotated copy first, then a 60% centre crop, then the original.

    The crop matches the original (0.97 with the default hash) but not the rotated
    copy (0.6), which came first and became the representative under greedy linkage.
    """
    with Image.open(EXAMPLES / "chelsea.jpg") as source:
        photo = source.convert("RGB")
    w, h = photo.size
    crop = photo.crop((w // 5, h // 5, w - w // 5, h - h // 5))
    with Image.open(EXAMPLES / "coffee.jpg") as other:
        return [photo.rotate(90, expand=True), crop, other.convert("RGB"), photo]


def test_greedy_splits_the_issue_case_and_connected_joins_it(rotated_first: list[Image.Image]) -> None:
    prism = ImagePrism()
    scores = [[prism.compare(a, b).weighted_score for b in rotated_first] for a in rotated_first]
    assert scores[1][0] < 0.9 <= min(scores[1][3], scores[0][3])  # the premise
    greedy = prism.dedup(rotated_first)
    assert greedy.labels.tolist() == [0, 1, 2, 0] and greedy.scores is None
    assert greedy == prism.dedup(rotated_first, linkage="representative")
    joined = prism.dedup(rotated_first, linkage="connected")
    assert joined.labels.tolist() == [0, 0, 2, 0] and joined.unique.tolist() == [0, 2]
    assert joined.scores is not None and joined.scores[1] == pytest.approx(scores[1][0]) and joined.scores[2] == 1.0
    assert prism.dedup(rotated_first, linkage="connected", max_hops=1) == greedy  # one link: the greedy groups
    stored = prism.embed_batch(rotated_first).embeddings
    assert prism.dedup_embeddings(stored, linkage="connected").labels.tolist() == [0, 0, 2, 0]


def test_connected_with_keep_and_failures(rotated_first: list[Image.Image]) -> None:
    prism = ImagePrism()
    broken = b"not an image"
    items: list[object] = [rotated_first[0], broken, *rotated_first[1:]]
    result = prism.dedup(items, linkage="connected", keep="largest", on_error="skip")
    # the rotated copy has as many pixels as the original and comes first (ties keep input order)
    assert rotated_first[0].width * rotated_first[0].height == rotated_first[3].width * rotated_first[3].height
    assert result.labels.tolist() == [0, -1, 0, 3, 0]
    assert [f.index for f in result.failures] == [1]
    assert result.scores is not None and np.isnan(result.scores[1]) and result.scores[0] == 1.0
    by_size = prism.dedup([rotated_first[1], rotated_first[3], rotated_first[0]], linkage="connected", keep="largest")
    assert by_size.labels.tolist() == [1, 1, 1]  # the original, largest and first of the largest, represents all
    by_key = prism.dedup(items, linkage="connected", keep=lambda item: 0 if item is rotated_first[1] else 1, on_error="skip")
    assert by_key.labels.tolist() == [2, -1, 2, 3, 2]  # the crop is preferred: it represents the whole component
    assert prism.dedup(items, keep=lambda item: 0 if item is rotated_first[1] else 1, on_error="skip").labels.tolist() == [
        0,
        -1,
        2,
        3,
        2,
    ]  # greedy from the crop: the rotated copy does not match it


def test_cli_linkage_flag(rotated_first: list[Image.Image], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    names = ["a_rotated.png", "b_crop.png", "c_other.png", "d_original.png"]
    for name, image in zip(names, rotated_first):
        image.save(tmp_path / name)
    assert main(["dedup", str(tmp_path), "--keep", "first", "--json"]) == 0
    greedy = json.loads(capsys.readouterr().out)
    assert greedy["linkage"] == "representative" and greedy["unique"] == 3
    assert main(["dedup", str(tmp_path), "--keep", "first", "--linkage", "connected", "--json"]) == 0
    joined = json.loads(capsys.readouterr().out)
    assert joined["linkage"] == "connected" and joined["unique"] == 2
    (group,) = [g for g in joined["groups"] if len(g["members"]) > 1]
    assert group["representative"] == str(tmp_path / names[0])
    assert sorted(group["members"]) == sorted(str(tmp_path / n) for n in (names[0], names[1], names[3]))
    crop_score = next(s["score"] for s in group["scores"] if s["path"].endswith(names[1]))
    assert crop_score < 0.9  # shown honestly: linked through the original, not to the kept copy
    assert main(["dedup", str(tmp_path), "--keep", "first", "--linkage", "connected"]) == 0
    text = capsys.readouterr().out
    assert f"--linkage connected, lowest score to a kept copy {crop_score:.4f}" in text
    assert main(["dedup", str(tmp_path), "--keep", "first", "--linkage", "connected", "--max-hops", "1", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["unique"] == 3
    assert main(["dedup", str(tmp_path), "--max-hops", "2"]) == 1
    assert "--max-hops 2 applies to --linkage connected only" in capsys.readouterr().err
    assert main(["dedup", str(tmp_path), "--linkage", "connected", "--max-hops", "-1"]) == 1
    assert "--max-hops -1 is invalid" in capsys.readouterr().err


def test_too_many_links_for_the_hop_count_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    import imageprism._search.components as components_module

    rng = np.random.default_rng(25)
    bits = np.repeat(rng.integers(0, 2, (1, 64), dtype=np.uint8), 60, axis=0)
    bits[np.arange(60), np.arange(60)] ^= 1  # 60 distinct codes, every pair 2 bits apart: 1,770 links
    col = DedupColumn("hash", "bits", np.packbits(bits, axis=-1)[:, None, :], bits_per_row=64)
    monkeypatch.setattr(components_module, "MAX_LINKS", 1000)
    with pytest.raises(ConfigError, match="more than 1,000 linked pairs.*max_hops=None"):
        connected_labels([col], 0.9)
    assert connected_labels([col], 0.9, max_hops=None)[0].tolist() == [0] * 60  # merged as found: no pair list
