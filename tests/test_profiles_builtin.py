"""The six built-in profiles: present, valid, and consistent with the reasoning in their descriptions."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from imageprism._profiles import blend, list_profiles, load_profile
from imageprism._types import Profile

REPO = Path(__file__).resolve().parent.parent


def test_profiles_folder_holds_exactly_the_six_builtins() -> None:
    assert sorted(p.stem for p in (REPO / "profiles").glob("*")) == sorted(p.value for p in Profile)
    assert all(p.suffix == ".yaml" for p in (REPO / "profiles").iterdir())


@pytest.mark.parametrize("profile", list(Profile), ids=[p.value for p in Profile])
def test_builtin_is_complete(profile: Profile) -> None:
    spec = load_profile(profile)
    assert spec.source.name == f"{profile.value}.yaml"
    assert math.isclose(sum(spec.weights.values()), 1.0)
    assert all(w > 0 for w in spec.weights.values())
    # the description says what question it answers, then why the weights are what they are
    question, _, reasoning = spec.description.partition("\n")
    assert question.endswith("?") and len(reasoning) > 200
    for dim in spec.weights:
        assert dim.lower() in reasoning.lower()
    if spec.threshold is not None:
        assert f"Threshold {spec.threshold:g}" in reasoning
    assert spec.configs() == {}  # built-ins use the default config of each dimension


def test_dimension_choices() -> None:
    specs = {s.name: s for s in list_profiles()}
    assert set(specs["copyright"].weights) == {"hash", "instance", "semantic"}
    assert set(specs["identity"].weights) == {"face"}
    assert "face" in specs["forgery"].weights
    assert specs["identity"].missing == specs["forgery"].missing == "zero"
    dedup = specs["dedup"].weights
    assert dedup["hash"] == max(dedup.values())
    assert specs["ecommerce"].weights["hash"] == min(specs["ecommerce"].weights.values())


# The worked examples in each description, on the score scales of the public contract:
# (profile, scores, should match). If weights or thresholds change, these say which
# sentence of the description went stale.
EXAMPLES = [
    ("ecommerce", {"instance": 0.75, "semantic": 0.85, "hash": 0.55}, True, 0.76),
    ("ecommerce", {"instance": 0.4, "semantic": 0.8, "hash": 0.5}, False, 0.53),
    ("ecommerce", {"instance": 0.0, "semantic": 0.5, "hash": 0.5}, False, 0.2),
    ("ecommerce", {"instance": 0.6, "semantic": 0.8, "hash": 0.5}, True, 0.65),
    ("ecommerce", {"instance": 0.58, "semantic": 0.8, "hash": 0.5}, False, None),
    ("copyright", {"hash": 0.97, "instance": 0.97, "semantic": 0.97}, True, 0.97),
    ("copyright", {"hash": 0.65, "instance": 0.8, "semantic": 0.9}, True, 0.77),
    ("copyright", {"hash": 0.5, "instance": 0.6, "semantic": 0.9}, False, 0.63),
    ("copyright", {"hash": 0.5, "instance": 0.0, "semantic": 0.5}, False, 0.28),
    ("dedup", {"hash": 0.9, "instance": 0.9}, True, 0.9),
    ("dedup", {"hash": 0.9, "instance": 0.85}, False, None),
    ("dedup", {"hash": 0.6, "instance": 0.75}, False, 0.65),
    ("identity", {"face": 0.3}, True, 0.3),
    ("identity", {"face": 0.05}, False, 0.05),
    ("identity", {"face": None}, False, 0.0),
    ("forgery", {"face": 0.9, "hash": 0.95, "instance": 0.95}, True, 0.93),
    ("forgery", {"face": 0.3, "hash": 1.0, "instance": 1.0}, False, 0.65),
    ("forgery", {"face": 0.5, "hash": 1.0, "instance": 1.0}, True, 0.75),
    ("forgery", {"face": 0.6, "hash": 0.9, "instance": 0.9}, True, 0.75),
    ("forgery", {"face": None, "hash": 1.0, "instance": 1.0}, False, 0.5),
]


@pytest.mark.parametrize(("name", "scores", "matches", "stated"), EXAMPLES)
def test_worked_examples_in_descriptions(
    name: str, scores: dict[str, float | None], matches: bool, stated: float | None
) -> None:
    spec = load_profile(name)
    assert set(scores) == set(spec.weights)
    score = blend(scores, spec.weights, spec.missing)
    if stated is not None:
        assert round(score, 2) == pytest.approx(stated, abs=0.005)
    assert spec.threshold is not None
    assert (score >= spec.threshold - 1e-9) is matches
