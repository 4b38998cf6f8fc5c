"""The ImagePrism contract for the hash dimension: construction, compare, embed, cache, errors."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

import imageprism
from imageprism import (
    CompareResult,
    ConfigError,
    Dimension,
    DimensionUnavailableError,
    EmbeddingCache,
    HashConfig,
    ImageLoadError,
    ImagePrism,
    InputError,
)

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "images"
CAT, CAT_EDIT, COFFEE, ROCKET = (EXAMPLES / n for n in ("chelsea.jpg", "chelsea_small_bright.jpg", "coffee.jpg", "rocket.jpg"))


def test_default_is_hash_only_and_constructs_without_models() -> None:
    prism = ImagePrism()
    assert prism.dimensions == ("hash",)
    assert prism.weights == {"hash": 1.0}


def test_enum_and_string_dimensions_are_equivalent() -> None:
    assert ImagePrism(dimensions=[Dimension.HASH]).weights == ImagePrism(dimensions=["hash"]).weights
    assert ImagePrism(dimensions=["HASH"]).dimensions == ("hash",)


def test_near_duplicate_scores_high_and_unrelated_near_half() -> None:
    prism = ImagePrism()
    same = prism.compare(CAT, CAT_EDIT)
    other = prism.compare(CAT, COFFEE)
    assert same.scores["hash"] > 0.9
    assert 0.3 < other.scores["hash"] < 0.7
    assert same.weighted_score == pytest.approx(same.scores["hash"])


def test_compare_is_symmetric_and_identity_is_one() -> None:
    prism = ImagePrism()
    assert prism.compare(CAT, COFFEE).scores == prism.compare(COFFEE, CAT).scores
    assert prism.compare(ROCKET, ROCKET).scores["hash"] == 1.0


def test_result_is_immutable() -> None:
    result = ImagePrism().compare(CAT, COFFEE)
    assert isinstance(result, CompareResult)
    with pytest.raises(dataclasses.FrozenInstanceError):
        result.weighted_score = 1.0  # type: ignore[misc]
    with pytest.raises(TypeError):
        result.scores["hash"] = 1.0  # type: ignore[index]
    assert "hash=" in repr(result)
    assert result.is_match is None  # no profile threshold


def test_comparing_one_image_with_many_embeds_it_once() -> None:
    cache = EmbeddingCache()
    prism = ImagePrism(cache=cache)
    for other in (CAT_EDIT, COFFEE, ROCKET):
        prism.compare(CAT, other)
    stats = cache.stats
    assert stats.misses == 4 and stats.hits == 2 and stats.entries == 4


def test_cache_key_includes_config() -> None:
    cache = EmbeddingCache()
    ImagePrism(cache=cache).embed(CAT)
    ImagePrism(cache=cache, config={"hash": HashConfig(hash_size=16)}).embed(CAT)
    assert cache.stats.entries == 2 and cache.stats.hits == 0


def test_embed_returns_compact_arrays_and_hex_round_trip() -> None:
    prism = ImagePrism()
    emb = prism.embed(COFFEE)
    assert set(emb) == {"hash"}
    cfg = prism.plugins["hash"].config
    assert emb["hash"].dtype == np.uint8 and emb["hash"].shape == (len(cfg.row_labels), 8)
    assert len(cfg.row_labels) == 3 * cfg.n_variants  # phash, dhash, ahash per flip/rotation/crop variant
    assert np.array_equal(cfg.from_hex(cfg.to_hex(emb["hash"])), emb["hash"])


def test_embed_batch_accounts_for_every_input() -> None:
    prism = ImagePrism(batch_size=2)
    inputs = [CAT, b"not an image", COFFEE, "/no/such/file.png", ROCKET]
    batch = prism.embed_batch(inputs, on_error="skip")
    assert len(batch) == 5
    assert [f.index for f in batch.failures] == [1, 3]
    assert all(isinstance(f.error, ImageLoadError) for f in batch.failures)
    assert "/no/such/file.png" in batch.failures[1].input
    for i in (0, 2, 4):
        assert np.array_equal(batch.embeddings[i]["hash"], prism.embed(inputs[i])["hash"])
    with pytest.raises(ImageLoadError, match="not an image"):
        prism.embed_batch(inputs)
    with pytest.raises(InputError, match="on_error"):
        prism.embed_batch(inputs, on_error="ignore")  # type: ignore[arg-type]


def test_compare_embeddings_equals_compare() -> None:
    prism = ImagePrism()
    direct = prism.compare(CAT, CAT_EDIT)
    stored = prism.compare_embeddings(prism.embed(CAT), prism.embed(CAT_EDIT))
    assert stored.scores == direct.scores
    with pytest.raises(InputError, match="no 'hash' entry"):
        prism.compare_embeddings({}, prism.embed(CAT))


def test_weights_are_normalised() -> None:
    prism = ImagePrism(weights={"hash": 3})
    assert prism.weights == {"hash": 1.0}


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"dimensions": ["colour"]}, "unknown dimension 'colour'"),
        ({"dimensions": []}, "empty"),
        ({"weights": {"hash": -1}}, "negative"),
        ({"weights": {"hash": 0}}, "all weights are zero"),
        ({"weights": {"hash": "a lot"}}, "must be a number"),
        ({"config": {"hash": {"hash_size": 16}}}, "must be a HashConfig"),
        ({"config": {"semantic": HashConfig()}}, "not among the dimensions"),
        ({"profile": "no-such-profile"}, "no-such-profile"),
        ({"batch_size": 0}, "batch_size"),
        ({"max_pixels": -5}, "max_pixels"),
    ],
)
def test_bad_construction_names_the_value(kwargs: dict, needle: str) -> None:
    with pytest.raises(ConfigError) as info:
        ImagePrism(**kwargs)
    assert needle in str(info.value)
    assert isinstance(info.value, ValueError)


def test_unavailable_dimension_is_a_clear_error_not_a_stub(monkeypatch: pytest.MonkeyPatch) -> None:
    from imageprism import dimensions

    monkeypatch.delitem(dimensions.REGISTRY, "face")
    with pytest.raises(DimensionUnavailableError, match="'face' is not available") as info:
        ImagePrism(dimensions=["face"])
    assert "hash" in str(info.value)  # lists what is available


def test_bad_hash_config_values() -> None:
    with pytest.raises(ConfigError, match="md5"):
        HashConfig(algorithms=("md5",))
    with pytest.raises(ConfigError, match="hash_size=1"):
        HashConfig(hash_size=1)


def test_public_api_all_is_sorted_and_complete() -> None:
    names = imageprism.__all__
    assert names == sorted(names)
    for name in names:
        assert hasattr(imageprism, name), name
    public = {n for n in vars(imageprism) if not n.startswith("_")} - {"dimensions", "errors", "cli", "columnar", "ray", "serve"}
    assert public <= set(names) | {"__version__"}, public - set(names)
