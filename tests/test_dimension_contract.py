"""The common contract, run for every registered dimension (and the toy one of test_toy_dimension).

On stored embeddings of each dimension's declared layout (real hashes; synthetic vectors
and faces, so no model is needed): ``compare_embeddings`` gives the plugin's score; dedup
equals the brute-force greedy pass over the plugin's score; the index's top-k equals the
brute-force ranking, survives removal and a save/load round trip; cache tokens are
distinct per dimension. A new dimension added to ``REGISTRY`` is tested here for free.
"""

from __future__ import annotations

import numpy as np
import pytest
from test_toy_dimension import ToyDimension

from imageprism import ImageIndex, ImagePrism
from imageprism.dimensions import REGISTRY, DimensionPlugin

TOY = {"toy": ToyDimension}
NAMES = [*REGISTRY, "toy"]


def _prism(name: str) -> ImagePrism:
    return ImagePrism(dimensions=[name], registry=TOY)


def _embeddings(prism: ImagePrism, name: str, n: int, seed: int) -> list[dict[str, np.ndarray | None]]:
    """Clustered embeddings of the plugin's layout (near-duplicates occur)."""
    plugin: DimensionPlugin = prism.plugins[name]
    rng = np.random.default_rng(seed)
    layout = plugin.layout
    out: list[dict[str, np.ndarray | None]] = []
    if layout.kind == "bits":  # real hashes of smooth random textures and of their dimmed copies
        bases = [np.kron(rng.integers(0, 256, (8, 8)), np.ones((8, 8))).astype(np.uint8) for _ in range(n // 3 + 1)]
        pick = rng.integers(0, len(bases), n)
        images = [np.clip(bases[p].astype(int) + int(rng.integers(-20, 20)), 0, 255).astype(np.uint8) for p in pick]
        return [{name: e[name]} for e in prism.embed_batch(images).embeddings if e is not None]
    centres = rng.standard_normal((max(n // 4, 1), 32))
    for i in range(n):
        v = centres[rng.integers(len(centres))] + 0.3 * rng.standard_normal(32)
        v = (v / np.linalg.norm(v)).astype(np.float32)
        if layout.kind == "vector":
            out.append({name: v})
        else:  # pairwise (faces): some inputs have none, others one or two rows
            out.append({name: None if i % 5 == 0 else np.stack([v, v[::-1]])[: 1 + i % 2]})
    return out


def _brute_force_labels(plugin: DimensionPlugin, items: list[np.ndarray | None], threshold: float) -> list[int]:
    labels, reps = [], []
    for x in range(len(items)):
        match = next((r for r in reps if (s := plugin.score(items[x], items[r])) is not None and s >= threshold), None)
        if match is None:
            reps.append(x)
        labels.append(x if match is None else match)
    return labels


@pytest.mark.parametrize("name", NAMES)
def test_the_dimension_contract(name: str, tmp_path) -> None:
    prism = _prism(name)
    plugin = prism.plugins[name]
    assert plugin.name == name and isinstance(plugin.config, plugin.config_type)
    items = _embeddings(prism, name, 90, seed=1)
    values = [e[name] for e in items]
    # compare: the plugin's score, blended by the prism's one weight
    for a, b in [(0, 1), (2, 2), (5, 7)]:
        result = prism.compare_embeddings(items[a], items[b])
        assert result.scores[name] == plugin.score(values[a], values[b])
    # dedup: the brute-force greedy pass over the plugin's score
    for threshold in (0.8, 0.95):
        got = prism.dedup_embeddings(items, threshold=threshold).labels.tolist()
        assert got == _brute_force_labels(plugin, values, threshold)
    # the index: exact top-k, removal, save/load
    index = ImageIndex(prism)
    ids = [f"i{i}" for i in range(len(items))]
    index.add_embeddings(items, ids=ids)
    for q in (values[0], values[3], values[10]):
        ranked = sorted((-prism.blend.score({name: plugin.score(q, v)}), p) for p, v in enumerate(values))
        expected = [(p, -s) for s, p in ranked[:5]]
        assert [(h.position, h.score) for h in index.search_embedding({name: q}, k=5)] == expected
    index.remove(["i3"])
    assert "i3" not in {h.id for h in index.search_embedding({name: values[3]}, k=len(items))}
    loaded = ImageIndex.load(index.save(tmp_path / name), prism=prism)
    assert loaded.ids == index.ids
    assert loaded.search_embedding({name: values[10]}, k=7) == index.search_embedding({name: values[10]}, k=7)


def test_cache_tokens_differ_per_dimension() -> None:
    tokens = {name: _prism(name).plugins[name].cache_token for name in NAMES}
    assert len(set(tokens.values())) == len(NAMES)
    assert all(token.startswith(f"{name}:") for name, token in tokens.items())
