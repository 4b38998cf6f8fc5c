"""The search index: build, add, search (exact top-k), save and load."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageEnhance

from imageprism import (
    ConfigError,
    HashConfig,
    ImageIndex,
    ImagePrism,
    InputError,
    SearchHit,
)
from imageprism._index import FORMAT_VERSION, MANIFEST
from imageprism._index_files import LOCK

RNG_SEED = 7


def _noise_images(count: int, seed: int = RNG_SEED) -> list[np.ndarray]:
    """Small random grayscale textures (smoothed so their hashes are not pure noise)."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        small = rng.integers(0, 256, (8, 8), dtype=np.uint8)
        out.append(np.asarray(Image.fromarray(small).resize((48, 48), Image.Resampling.BILINEAR)))
    return out


def _near_duplicate(path: Path) -> bytes:
    """The photo resized, brightened and re-encoded as JPEG: a typical near-duplicate."""
    with Image.open(path) as im:
        im = im.convert("RGB")
        im = im.resize((im.width * 2 // 3, im.height * 2 // 3), Image.Resampling.BICUBIC)
        im = ImageEnhance.Brightness(im).enhance(1.15)
        buf = io.BytesIO()
        im.save(buf, "JPEG", quality=70)
        return buf.getvalue()


@pytest.fixture(scope="module")
def catalogue(dev_images: list[Path]) -> tuple[ImageIndex, list[np.ndarray]]:
    """The dev photos plus 300 random textures, indexed by hash."""
    noise = _noise_images(300)
    index = ImageIndex.build(dev_images)
    index.add(noise, ids=[f"noise-{i}" for i in range(len(noise))])
    return index, noise


def test_search_returns_the_planted_near_duplicate_first(catalogue, dev_images) -> None:
    index, _ = catalogue
    assert len(index) == len(dev_images) + 300
    for target in dev_images[::6]:
        hits = index.search(_near_duplicate(target), k=5)
        assert hits[0].id == str(target), [h.id for h in hits]
        assert hits[0].scores["hash"] >= 0.85 > hits[1].scores["hash"]
        assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)


def test_hits_carry_exact_scores_of_compare(catalogue, dev_images) -> None:
    index, noise = catalogue
    prism = ImagePrism()
    query = _near_duplicate(dev_images[0])
    for hit in index.search(query, k=4):
        item = hit.id if hit.id.startswith("/") else noise[int(hit.id.split("-")[1])]
        expected = prism.compare(query, item)
        assert hit.score == expected.weighted_score
        assert dict(hit.scores) == dict(expected.scores)


def test_save_and_load_round_trip(catalogue, dev_images, tmp_path) -> None:
    index, _ = catalogue
    folder = index.save(tmp_path / "idx")
    manifest = json.loads((folder / MANIFEST).read_text())
    assert manifest["format_version"] == FORMAT_VERSION
    (segment,) = manifest["segments"]  # a first save writes one segment
    ids = json.loads((folder / segment["ids"]).read_text())
    assert manifest["count"] == len(index) and ids == list(index.ids)
    assert manifest["dimensions"]["hash"]["cache_token"] == ImagePrism().plugins["hash"].cache_token
    files = segment["files"]["hash"]
    assert files and all(np.load(folder / f, allow_pickle=False).dtype != object for f in files.values())
    assert sorted(p.name for p in folder.iterdir()) == sorted([MANIFEST, LOCK, segment["ids"], *files.values()])

    loaded = ImageIndex.load(folder)
    assert loaded.ids == index.ids
    query = _near_duplicate(dev_images[5])
    assert loaded.search(query, k=7) == index.search(query, k=7)
    for item_id in (index.ids[0], index.ids[-1]):
        assert np.array_equal(loaded.embedding(item_id)["hash"], index.embedding(item_id)["hash"])


def test_incremental_adds_equal_one_build(dev_images) -> None:
    noise = _noise_images(40, seed=3)
    ids = [f"n{i}" for i in range(40)]
    whole = ImageIndex.build([*dev_images, *noise], ids=[*map(str, dev_images), *ids])
    parts = ImageIndex.build(dev_images[:10])
    parts.add(dev_images[10:])
    parts.add(noise[:25], ids=ids[:25])
    parts.add(noise[25:], ids=ids[25:])
    assert parts.ids == whole.ids
    query = noise[3]
    assert parts.search(query, k=10) == whole.search(query, k=10)
    assert parts.search(query, k=1)[0].id == "n3"


# -- exactness against brute force, on stored embeddings ---------------------------------


def _random_embeddings(prism: ImagePrism, n: int, seed: int) -> list[dict[str, np.ndarray | None]]:
    """Embeddings shaped like the real ones, in clusters so that near-ties and duplicates occur."""
    rng = np.random.default_rng(seed)
    rows = prism.plugins["hash"].bit_variants * 3 if "hash" in prism.dimensions else 3
    centres_v = rng.standard_normal((12, 64)).astype(np.float32)
    centres_h = rng.integers(0, 256, (12, rows, 8), dtype=np.uint8)
    out = []
    for i in range(n):
        c = int(rng.integers(12))
        emb: dict[str, np.ndarray | None] = {}
        for name in prism.dimensions:
            if name == "hash":
                flips = np.packbits(rng.random((rows, 64)) < 0.08, axis=-1)
                emb[name] = centres_h[c] ^ flips
            elif name == "face":
                emb[name] = None if i % 3 == 0 else _unit(rng.standard_normal((1 + i % 2, 32)))
            else:
                emb[name] = _unit(centres_v[c] + 0.6 * rng.standard_normal(64).astype(np.float32))
        out.append(emb)
    return out


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float32)
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _brute_force(prism: ImagePrism, items, query, k, weights=None, missing=None, scores=None):
    """(position, blended score) of the top k by the scores of compare, ties by position."""
    from imageprism._profiles import blend

    weights = weights or prism.weights
    scores = scores or [prism.compare_embeddings(query, item).scores for item in items]
    ranked = sorted((-blend(s, weights, missing or prism.missing), position) for position, s in enumerate(scores))
    return [(p, -s) for s, p in ranked[:k]]


@pytest.mark.parametrize(
    "dims", [["hash"], ["semantic"], ["hash", "semantic"], ["hash", "semantic", "face"]], ids="+".join
)
def test_top_k_is_exactly_the_brute_force_top_k(dims) -> None:
    prism = ImagePrism(weights={d: w for d, w in zip(dims, (0.5, 0.3, 0.2))})
    items = _random_embeddings(prism, 400, seed=1)
    index = ImageIndex(prism)
    index.add_embeddings(items, ids=[f"i{i}" for i in range(len(items))])
    for query in _random_embeddings(prism, 6, seed=2) + items[:3]:
        scores = [prism.compare_embeddings(query, item).scores for item in items]
        for k in (1, 10, 50):
            got = [(h.position, h.score) for h in index.search_embedding(query, k=k)]
            assert got == _brute_force(prism, items, query, k, scores=scores)
        for name in dims:  # ranking by one dimension
            got = [h.position for h in index.search_embedding(query, k=10, dimension=name)]
            assert got == [p for p, _ in _brute_force(prism, items, query, 10, weights={name: 1.0}, scores=scores)]


def test_hashes_with_variants_are_searched_exactly(tmp_path) -> None:
    """Mirror and crop variants: the score is a best alignment (a max), still exactly top-k."""
    config = HashConfig(geometry="mirror", crop_scales=(0.75,))
    for weights in ({"hash": 1.0}, {"hash": 0.6, "semantic": 0.4}):
        prism = ImagePrism(weights=weights, config={"hash": config})
        items = _random_embeddings(prism, 300, seed=11)
        index = ImageIndex(prism)
        index.add_embeddings(items, ids=[f"i{i}" for i in range(len(items))])
        for query in _random_embeddings(prism, 4, seed=12) + items[:2]:
            scores = [prism.compare_embeddings(query, item).scores for item in items]
            for k in (1, 10, 40):
                got = [(h.position, h.score) for h in index.search_embedding(query, k=k)]
                assert got == _brute_force(prism, items, query, k, scores=scores)
    loaded = ImageIndex.load(index.save(tmp_path / "variants"), prism=prism)
    assert loaded.search_embedding(items[5], k=5) == index.search_embedding(items[5], k=5)


def test_mirror_index_finds_the_mirrored_photo(dev_images) -> None:
    plain = ImageIndex.build(dev_images, prism=ImagePrism(config={"hash": HashConfig.plain()}))
    mirror = ImageIndex.build(dev_images, prism=ImagePrism(config={"hash": HashConfig(geometry="mirror")}))
    for target in dev_images[:3]:
        flipped = Image.open(target).transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        hit = mirror.search(flipped, k=1)[0]
        assert hit.id == str(target) and hit.score > 0.95
        assert plain.search(flipped, k=1)[0].score < hit.score


@pytest.mark.parametrize("geometry", ["none", "mirror"])
def test_ties_are_broken_by_insertion_order(geometry) -> None:
    prism = ImagePrism(dimensions=["hash", "semantic"], config={"hash": HashConfig(geometry=geometry)})
    base = _random_embeddings(prism, 1, seed=4)[0]
    items = [base] * 60
    index = ImageIndex(prism)
    index.add_embeddings(items, ids=[str(i) for i in range(60)])
    hits = index.search_embedding(base, k=5)
    assert [h.position for h in hits] == [0, 1, 2, 3, 4]
    assert [h.position for h in index.search_embedding(base, k=5, dimension="semantic")] == [0, 1, 2, 3, 4]
    assert [h.position for h in index.search_embedding(base, k=5, dimension="hash")] == [0, 1, 2, 3, 4]


def test_search_by_weights_and_by_profile(tmp_path) -> None:
    prism = ImagePrism(weights={"hash": 0.5, "semantic": 0.3, "face": 0.2})
    items = _random_embeddings(prism, 200, seed=5)
    index = ImageIndex(prism)
    index.add_embeddings(items, ids=[f"i{i}" for i in range(200)])
    query = _random_embeddings(prism, 1, seed=6)[0]
    weights = {"semantic": 1.0, "face": 3.0}
    got = [(h.position, h.score) for h in index.search_embedding(query, k=8, weights=weights)]
    assert got == _brute_force(prism, items, query, 8, weights={"semantic": 0.25, "face": 0.75})

    profile = tmp_path / "mine.yaml"
    profile.write_text("weights: {semantic: 1, face: 3}\nmissing: renormalize\n")
    got = [(h.position, h.score) for h in index.search_embedding(query, k=8, profile=profile)]
    expected = _brute_force(prism, items, query, 8, weights={"semantic": 0.25, "face": 0.75}, missing="renormalize")
    assert got == expected
    assert got != [(h.position, h.score) for h in index.search_embedding(query, k=8, weights=weights)]


def test_other_kind_round_trips_with_missing_entries(tmp_path) -> None:
    prism = ImagePrism(weights={"hash": 0.5, "face": 0.5})
    items = _random_embeddings(prism, 30, seed=8)
    index = ImageIndex(prism)
    index.add_embeddings(items, ids=[f"i{i}" for i in range(30)])
    loaded = ImageIndex.load(index.save(tmp_path / "faces"), prism=prism)
    for i in (0, 1, 2):
        stored = loaded.embedding(f"i{i}")["face"]
        assert (stored is None) == (items[i]["face"] is None)
        if stored is not None:
            assert np.array_equal(stored, items[i]["face"])
    query = items[4]
    assert loaded.search_embedding(query, k=5) == index.search_embedding(query, k=5)


# -- refusals -------------------------------------------------------------------------------


def test_a_different_configuration_is_refused(tmp_path) -> None:
    index = ImageIndex.build(_noise_images(5), ids=list("abcde"))
    folder = index.save(tmp_path / "idx")
    other = ImagePrism(config={"hash": HashConfig(hash_size=16)})
    with pytest.raises(ConfigError, match="hash_size=16"):
        ImageIndex.load(folder, prism=other)
    with pytest.raises(ConfigError, match="dimensions"):
        ImageIndex.load(folder, prism=ImagePrism(dimensions=["hash", "semantic"]))
    profile = tmp_path / "big.yaml"
    profile.write_text("weights: {hash: 1}\nsettings: {hash: {hash_size: 16}}\n")
    with pytest.raises(ConfigError, match="configures 'hash' differently"):
        index.search(_noise_images(1)[0], profile=profile)
    with pytest.raises(ConfigError, match="not in this index"):
        index.search(_noise_images(1)[0], dimension="semantic")
    with pytest.raises(ConfigError, match="at most one"):
        index.search(_noise_images(1)[0], dimension="hash", weights={"hash": 1})
    with pytest.raises(ConfigError, match="k=0"):
        index.search(_noise_images(1)[0], k=0)


def test_format_version_and_damage_are_checked(tmp_path) -> None:
    folder = ImageIndex.build(_noise_images(3), ids=["a", "b", "c"]).save(tmp_path / "idx")
    manifest = json.loads((folder / MANIFEST).read_text())
    (folder / MANIFEST).write_text(json.dumps({**manifest, "format_version": FORMAT_VERSION + 1}))
    with pytest.raises(InputError, match="format version"):
        ImageIndex.load(folder)
    (folder / MANIFEST).write_text(json.dumps({**manifest, "count": 4, "ids": ["a", "b", "c", "d"]}))
    with pytest.raises(InputError, match="damaged"):
        ImageIndex.load(folder)
    with pytest.raises(InputError, match="not an imageprism index"):
        ImageIndex.load(tmp_path / "nowhere")
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "a.txt").write_text("mine")
    with pytest.raises(InputError, match="non-empty directory"):
        ImageIndex.build(_noise_images(1), ids=["a"]).save(tmp_path / "notes")


def test_ids_must_be_unique_and_adds_are_all_or_nothing() -> None:
    noise = _noise_images(4)
    index = ImageIndex.build(noise[:2], ids=["a", "b"])
    with pytest.raises(InputError, match="'a' is already in the index"):
        index.add(noise[2:], ids=["c", "a"])
    with pytest.raises(InputError, match="pass ids="):
        index.add(noise[2:])
    prism = ImagePrism(dimensions=["hash", "semantic"])
    two = ImageIndex(prism)
    good = {"hash": np.zeros((len(HashConfig().row_labels), 8), np.uint8), "semantic": _unit(np.ones(8))}
    two.add_embeddings([good], ids=["x"])
    with pytest.raises(InputError, match="8-d vectors"):
        two.add_embeddings([{**good, "semantic": _unit(np.ones(9))}], ids=["y"])
    assert len(two) == 1 and two.ids == ("x",)
    assert [h.id for h in two.search_embedding(good, k=3)] == ["x"]
    assert index.ids == ("a", "b")


def test_failed_inputs_are_reported_and_skipped(tmp_path) -> None:
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"not an image")
    good = tmp_path / "good.png"
    Image.fromarray(_noise_images(1)[0]).save(good)
    index = ImageIndex()
    failures = index.add([bad, good, tmp_path / "missing.jpg"], on_error="skip")
    assert [f.index for f in failures] == [0, 2]
    assert index.ids == (str(good),)
    with pytest.raises(InputError):
        ImageIndex().add([good, bad])


def test_search_hit_is_a_plain_record() -> None:
    hit = SearchHit(id="a.jpg", score=0.5, scores={"hash": 0.5}, position=3)
    assert hit.to_dict() == {"id": "a.jpg", "score": 0.5, "scores": {"hash": 0.5}, "position": 3}
    assert "a.jpg" in repr(hit)


def test_searches_while_adding_from_other_threads() -> None:
    """Searches read faiss' memory without copying; adds must not move it underneath them."""
    import concurrent.futures

    prism = ImagePrism(dimensions=["hash", "semantic"])
    items = _random_embeddings(prism, 600, seed=13)
    ids = [f"i{i}" for i in range(len(items))]
    index = ImageIndex(prism)
    index.add_embeddings(items[:50], ids=ids[:50])

    def search_many(seed: int) -> set[str]:
        found = set()
        for query in _random_embeddings(prism, 25, seed=seed):
            found.update(h.id for h in index.search_embedding(query, k=5))
        return found

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        searches = [pool.submit(search_many, seed) for seed in range(20, 24)]
        for start in range(50, 600, 50):
            index.add_embeddings(items[start : start + 50], ids=ids[start : start + 50])
        seen = set().union(*(f.result() for f in searches))
    assert seen <= set(ids)
    whole = ImageIndex(prism)
    whole.add_embeddings(items, ids=ids)
    query = _random_embeddings(prism, 1, seed=30)[0]
    assert index.search_embedding(query, k=10) == whole.search_embedding(query, k=10)
