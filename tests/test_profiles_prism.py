"""Profiles through ImagePrism: the profile's weights, missing policy, threshold and settings,
and how weights= and config= override them."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest
from PIL import Image

import imageprism.dimensions as dimensions
from imageprism import ImagePrism
from imageprism.dimensions import DimensionPlugin
from imageprism.dimensions.hash import HashConfig
from imageprism.errors import ConfigError, ProfileError


@dataclasses.dataclass(frozen=True)
class NoStyleConfig:
    """Config of a stand-in dimension that can never score a pair (like face without faces)."""


class NeverScores(DimensionPlugin):
    name: ClassVar[str] = "style"
    config_type: ClassVar[type] = NoStyleConfig

    def embed_batch(self, images: Sequence[Image.Image]) -> list[np.ndarray | None]:
        return [None for _ in images]

    def score(self, a: np.ndarray | None, b: np.ndarray | None) -> float | None:
        return None


@pytest.fixture
def unscorable_style(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(dimensions.REGISTRY, "style", f"{__name__}:NeverScores")


@pytest.fixture
def images() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(7)
    a = rng.integers(0, 256, size=(64, 80, 3), dtype=np.uint8)
    b = a.copy()
    b[:32] = 255 - b[:32]  # half the picture changed: the hash score drops well below 1
    return a, b


def profile_file(tmp_path: Path, text: str, name: str = "p.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize("missing", ["zero", "renormalize"])
def test_missing_policy_reaches_the_weighted_score(
    tmp_path: Path, unscorable_style: None, images: tuple[np.ndarray, np.ndarray], missing: str
) -> None:
    path = profile_file(tmp_path, f"weights: {{hash: 3, style: 1}}\nmissing: {missing}\n")
    result = ImagePrism(profile=path).compare(*images)
    assert result.scores["style"] is None
    hash_score = result.scores["hash"]
    assert 0.3 < hash_score < 0.95
    expected = hash_score if missing == "renormalize" else 0.75 * hash_score
    assert result.weighted_score == pytest.approx(expected)


def test_threshold_and_is_match(tmp_path: Path, images: tuple[np.ndarray, np.ndarray]) -> None:
    a, b = images
    strict = ImagePrism(profile=profile_file(tmp_path, "weights: {hash: 1}\nthreshold: 0.99\n"))
    assert strict.compare(a, a).is_match is True
    assert strict.compare(a, b).is_match is False
    assert strict.compare(a, b).threshold == 0.99


def test_profile_settings_configure_the_dimension(tmp_path: Path) -> None:
    path = profile_file(tmp_path, "weights: {hash: 1}\nsettings:\n  hash: {algorithms: [dhash], hash_size: 16}\n")
    prism = ImagePrism(profile=path)
    config = prism.plugins["hash"].config
    assert config == HashConfig(algorithms=("dhash",), hash_size=16)
    assert prism.embed(np.zeros((40, 40), dtype=np.uint8))["hash"].shape == (config.n_variants, 32)


def test_config_overrides_profile_settings(tmp_path: Path) -> None:
    path = profile_file(tmp_path, "weights: {hash: 1}\nsettings:\n  hash: {hash_size: 16}\n")
    mine = HashConfig(algorithms=("phash",))
    assert ImagePrism(profile=path, config={"hash": mine}).plugins["hash"].config == mine


def test_weights_override_profile_weights_but_keep_its_threshold_and_policy(
    tmp_path: Path, unscorable_style: None
) -> None:
    path = profile_file(tmp_path, "weights: {hash: 1, style: 1}\nmissing: renormalize\nthreshold: 0.6\n")
    prism = ImagePrism(profile=path, weights={"hash": 1})
    assert prism.weights == {"hash": 1.0}
    assert (prism.threshold, prism.missing) == (0.6, "renormalize")


def test_bad_settings_fail_at_construction(tmp_path: Path) -> None:
    path = profile_file(tmp_path, "weights: {hash: 1}\nsettings:\n  hash: {hash_sise: 16}\n")
    with pytest.raises(ProfileError, match=r"'settings.hash.hash_sise'.*did you mean 'hash_size'"):
        ImagePrism(profile=path)


def test_profile_and_dimensions_together_are_refused() -> None:
    with pytest.raises(ConfigError, match="profile= or dimensions="):
        ImagePrism(profile="dedup", dimensions=["hash"])


def test_weights_errors_name_imageprism_not_a_profile() -> None:
    with pytest.raises(ConfigError) as info:
        ImagePrism(weights={"hash": float("nan")})
    assert not isinstance(info.value, ProfileError)
    assert str(info.value).startswith("ImagePrism(weights=...): the weight of 'hash' must be finite")
