"""ImageIndex.remove: removed items never match again, for every layout, and saving round-trips it."""

from __future__ import annotations

import numpy as np
import pytest

from imageprism import HashConfig, ImageIndex, ImagePrism
from imageprism.errors import InputError


def _embeddings(prism: ImagePrism, n: int, seed: int) -> list[dict[str, np.ndarray | None]]:
    rng = np.random.default_rng(seed)
    rows = (prism.plugins["hash"].bit_variants or 1) * 3
    out = []
    for i in range(n):
        emb: dict[str, np.ndarray | None] = {"hash": rng.integers(0, 256, (rows, 8), dtype=np.uint8)}
        if "semantic" in prism.dimensions:
            v = rng.standard_normal(32).astype(np.float32)
            emb["semantic"] = v / np.linalg.norm(v)
        if "face" in prism.dimensions:
            emb["face"] = None if i % 4 == 0 else rng.standard_normal((1, 16)).astype(np.float32)
        out.append(emb)
    return out


PRISMS = {
    "plain hash": lambda: ImagePrism(config={"hash": HashConfig.plain()}),
    "robust hash + semantic": lambda: ImagePrism(weights={"hash": 0.5, "semantic": 0.5}),
    "hash + face": lambda: ImagePrism(weights={"hash": 0.5, "face": 0.5}, config={"hash": HashConfig.plain()}),
}


@pytest.mark.parametrize("make", PRISMS.values(), ids=list(PRISMS))
def test_removed_items_never_match_and_the_rest_equal_a_fresh_index(make, tmp_path) -> None:
    prism = make()
    items = _embeddings(prism, 120, seed=1)
    ids = [f"i{i}" for i in range(len(items))]
    index = ImageIndex(prism)
    index.add_embeddings(items, ids=ids)
    gone = {"i0", "i7", "i8", "i119", "i50"}
    index.remove(sorted(gone))
    kept = [i for i, name in enumerate(ids) if name not in gone]
    fresh = ImageIndex(prism)
    fresh.add_embeddings([items[i] for i in kept], ids=[ids[i] for i in kept])
    assert index.ids == fresh.ids and len(index) == len(items) - len(gone)
    for name in gone:
        assert name not in index
        query = items[int(name[1:])]
        hits = index.search_embedding(query, k=len(items))  # every remaining item
        assert name not in {h.id for h in hits}
        assert hits == fresh.search_embedding(query, k=len(items))
    loaded = ImageIndex.load(index.save(tmp_path / "idx"), prism=prism)
    assert loaded.ids == fresh.ids
    assert loaded.search_embedding(items[3], k=10) == fresh.search_embedding(items[3], k=10)
    # adding after a removal keeps working, and a removed id may be used again
    index.add_embeddings([items[0]], ids=["i0"])
    assert index.search_embedding(items[0], k=1)[0].id == "i0"


def test_removing_unknown_ids_removes_nothing() -> None:
    prism = ImagePrism(config={"hash": HashConfig.plain()})
    index = ImageIndex(prism)
    items = _embeddings(prism, 5, seed=2)
    index.add_embeddings(items, ids=list("abcde"))
    with pytest.raises(InputError, match="'zz' is not in this index"):
        index.remove(["a", "zz"])
    assert index.ids == tuple("abcde")
    index.remove("c")  # one id as a plain string
    assert index.ids == tuple("abde")
    index.remove(index.ids)
    assert len(index) == 0 and index.search_embedding(items[0], k=3) == []
