"""Profiles: loading, validation messages, per-dimension settings and blending."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import imageprism.dimensions as dimensions
from imageprism._profiles import ProfileSpec, blend, list_profiles, load_profile, normalize_weights
from imageprism._types import Dimension, Profile
from imageprism.errors import ConfigError, DimensionUnavailableError, ProfileError

VALID = """\
description: >
  Is it the same thing?

  Because.
weights:
  hash: 3
  instance: 1
missing: renormalize
threshold: 0.8
"""


def write(tmp_path: Path, text: str, name: str = "mine.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


# -- loading -----------------------------------------------------------------------------------


def test_user_file_loads_by_path_and_by_string(tmp_path: Path) -> None:
    path = write(tmp_path, VALID)
    for given_as in (path, str(path)):
        spec = load_profile(given_as)
        assert spec.name == "mine"
        assert spec.source == path
        assert dict(spec.weights) == {"hash": 0.75, "instance": 0.25}
        assert spec.missing == "renormalize"
        assert spec.threshold == 0.8
        assert spec.description == "Is it the same thing?\nBecause."
        assert spec.summary == "Is it the same thing?"
        assert spec.dimensions == ["hash", "instance"]
        assert dict(spec.settings) == {}


def test_yml_suffix_and_defaults(tmp_path: Path) -> None:
    spec = load_profile(write(tmp_path, "weights: {semantic: 2}\n", name="plain.yml"))
    assert (spec.name, spec.missing, spec.threshold, spec.description) == ("plain", "zero", None, "")
    assert dict(spec.weights) == {"semantic": 1.0}


def test_builtin_by_member_and_by_name_are_the_same() -> None:
    for profile in Profile:
        by_member = load_profile(profile)
        by_name = load_profile(profile.value)
        by_odd_case = load_profile(f" {profile.value.upper()} ")
        assert by_member == by_name == by_odd_case
        assert by_member.name == profile.value


def test_spec_is_immutable(tmp_path: Path) -> None:
    spec = load_profile(write(tmp_path, VALID))
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.threshold = 0.1  # type: ignore[misc]
    with pytest.raises(TypeError):
        spec.weights["hash"] = 1.0  # type: ignore[index]


def test_as_dict_is_plain_data(tmp_path: Path) -> None:
    spec = load_profile(write(tmp_path, VALID + "settings:\n  hash:\n    algorithms: [phash, dhash]\n"))
    assert spec.as_dict() == {
        "name": "mine",
        "description": "Is it the same thing?\nBecause.",
        "weights": {"hash": 0.75, "instance": 0.25},
        "missing": "renormalize",
        "threshold": 0.8,
        "settings": {"hash": {"algorithms": ["phash", "dhash"]}},
        "source": str(tmp_path / "mine.yaml"),
    }


@pytest.mark.parametrize(
    ("given_as", "expected"),
    [
        ("copyrite", ["unknown profile 'copyrite'", "did you mean 'copyright'", "ecommerce, copyright, dedup"]),
        ("my_profile.json", ["unknown profile 'my_profile.json'", ".yaml or .yml"]),
        (42, ["got int 42", "ecommerce, copyright, dedup, visual_search, identity, forgery"]),
        (None, ["got NoneType None", "built-in profiles are"]),
    ],
)
def test_unknown_profile_lists_builtins(given_as: object, expected: list[str]) -> None:
    with pytest.raises(ProfileError) as info:
        load_profile(given_as)  # type: ignore[arg-type]
    for fragment in expected:
        assert fragment in str(info.value)


def test_path_without_yaml_suffix(tmp_path: Path) -> None:
    with pytest.raises(ProfileError, match=r"profile file .*copyright\.json must end in \.yaml or \.yml"):
        load_profile(tmp_path / "copyright.json")


def test_missing_file_and_directory(tmp_path: Path) -> None:
    with pytest.raises(ProfileError, match=r"profile file not found: .*nope\.yaml"):
        load_profile(tmp_path / "nope.yaml")
    folder = tmp_path / "folder.yaml"
    folder.mkdir()
    with pytest.raises(ProfileError, match="is not a file"):
        load_profile(folder)


def test_non_utf8_file(tmp_path: Path) -> None:
    path = tmp_path / "latin.yaml"
    path.write_bytes("description: caf\u00e9\nweights: {hash: 1}\n".encode("latin-1"))
    with pytest.raises(ProfileError, match=r"latin.yaml is not UTF-8"):
        load_profile(path)


# -- malformed files: every message names the file, the key and the problem ----------------------

MALFORMED = {
    "unknown top-level key": (
        "weights: {hash: 1}\nthreshhold: 0.5\n",
        [
            "'threshhold'",
            "unknown key",
            "did you mean 'threshold'",
            "description, weights, missing, threshold, settings",
        ],
    ),
    "unknown dimension": (
        "weights: {hash: 1, colour: 1}\n",
        ["'weights'", "unknown dimension 'colour'", "hash, semantic, instance, style, face"],
    ),
    "misspelt dimension": (
        "weights: {hsah: 1}\n",
        ["'weights'", "unknown dimension 'hsah'", "did you mean 'hash'"],
    ),
    "negative weight": (
        "weights: {hash: 1, semantic: -0.5}\n",
        ["'weights'", "'semantic'", "must not be negative", "-0.5"],
    ),
    "non-numeric weight": (
        "weights: {hash: lots}\n",
        ["'weights'", "'hash'", "must be a number", "'lots'"],
    ),
    "quoted number weight": (
        "weights: {hash: '0.5'}\n",
        ["'weights'", "'hash'", "must be a number", "str '0.5'"],
    ),
    "boolean weight": (
        "weights: {hash: yes}\n",
        ["'weights'", "'hash'", "must be a number", "True"],
    ),
    "NaN weight": (
        "weights: {hash: .nan}\n",
        ["'weights'", "'hash'", "must be finite", "nan"],
    ),
    "infinite weight": (
        "weights: {hash: 1, semantic: .inf}\n",
        ["'weights'", "'semantic'", "must be finite", "inf"],
    ),
    "all-zero weights": (
        "weights: {hash: 0, semantic: 0.0}\n",
        ["'weights'", "all weights are zero", "positive weight"],
    ),
    "empty weights": (
        "weights: {}\n",
        ["'weights'", "no weights given", "hash, semantic"],
    ),
    "weights not a mapping": (
        "weights: [hash, semantic]\n",
        ["'weights'", "must be a mapping of dimension to weight", "got list"],
    ),
    "dimension given twice": (
        "weights: {hash: 1, HASH: 2}\n",
        ["'weights'", "'hash' is given twice"],
    ),
    "weights missing": (
        "description: no weights here\n",
        ["'weights'", "missing", "mapping of dimension to weight"],
    ),
    "malformed YAML syntax": (
        "weights:\n  hash: 1\n    semantic: 2\n",
        ["malformed YAML", "line 3, column"],
    ),
    "unclosed bracket": (
        "weights: {hash: 1\n",
        ["malformed YAML", "line 2"],
    ),
    "top level is a list": (
        "- hash\n- semantic\n",
        ["top level must be a mapping", "description, weights, missing, threshold, settings", "got a list"],
    ),
    "top level is a string": (
        "just some text\n",
        ["top level must be a mapping", "got a string"],
    ),
    "empty file": (
        "",
        ["the file is empty", "'weights'"],
    ),
    "bad missing policy": (
        "weights: {hash: 1}\nmissing: ignore\n",
        ["'missing'", "must be one of: zero, renormalize", "'ignore'"],
    ),
    "threshold above 1": (
        "weights: {hash: 1}\nthreshold: 1.5\n",
        ["'threshold'", "between 0 and 1", "1.5"],
    ),
    "negative threshold": (
        "weights: {hash: 1}\nthreshold: -0.1\n",
        ["'threshold'", "between 0 and 1", "-0.1"],
    ),
    "non-numeric threshold": (
        "weights: {hash: 1}\nthreshold: high\n",
        ["'threshold'", "between 0 and 1", "'high'"],
    ),
    "NaN threshold": (
        "weights: {hash: 1}\nthreshold: .nan\n",
        ["'threshold'", "between 0 and 1", "nan"],
    ),
    "description not text": (
        "description: [a, b]\nweights: {hash: 1}\n",
        ["'description'", "must be text", "got a list"],
    ),
    "settings not a mapping": (
        "weights: {hash: 1}\nsettings: [hash]\n",
        ["'settings'", "must be a mapping of dimension to its settings", "got a list"],
    ),
    "settings for an unknown dimension": (
        "weights: {hash: 1}\nsettings: {colour: {x: 1}}\n",
        ["'settings.colour'", "unknown dimension", "hash, semantic, instance, style, face"],
    ),
    "settings for an unweighted dimension": (
        "weights: {hash: 1}\nsettings: {semantic: {x: 1}}\n",
        ["'settings.semantic'", "has settings but no weight", "add it to 'weights'"],
    ),
    "settings of a dimension not a mapping": (
        "weights: {hash: 1}\nsettings: {hash: 16}\n",
        ["'settings.hash'", "must be a mapping of setting name to value", "got a number"],
    ),
}


@pytest.mark.parametrize("case", list(MALFORMED), ids=list(MALFORMED))
def test_malformed_profile_message_names_file_key_and_problem(tmp_path: Path, case: str) -> None:
    text, fragments = MALFORMED[case]
    path = write(tmp_path, text, name="broken.yaml")
    with pytest.raises(ProfileError) as info:
        load_profile(path)
    message = str(info.value)
    assert f"profile {path}" in message
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"
    assert isinstance(info.value, ValueError)


# -- per-dimension settings ----------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class FakeConfig:
    size: int = 8
    names: tuple[str, ...] = ("a",)

    def __post_init__(self) -> None:
        if not isinstance(self.size, int) or self.size < 2:
            raise ConfigError(f"size must be an integer >= 2, got {self.size!r}")


class FakePlugin:
    name: ClassVar[str] = "style"
    config_type: ClassVar[type] = FakeConfig


@pytest.fixture
def fake_style(monkeypatch: pytest.MonkeyPatch) -> None:
    """Register a stand-in ``style`` plugin so settings are checked against a known config class."""
    monkeypatch.setitem(dimensions.REGISTRY, "style", f"{__name__}:FakePlugin")


def test_settings_build_config_objects(tmp_path: Path, fake_style: None) -> None:
    path = write(tmp_path, "weights: {style: 1}\nsettings:\n  style:\n    size: 16\n    names: [x, y]\n")
    spec = load_profile(path)
    assert spec.settings["style"]["names"] == ("x", "y")
    assert spec.configs() == {"style": FakeConfig(size=16, names=("x", "y"))}


def test_unknown_setting_names_file_dimension_key_and_valid_keys(tmp_path: Path, fake_style: None) -> None:
    path = write(tmp_path, "weights: {style: 1}\nsettings:\n  style:\n    sise: 16\n")
    spec = load_profile(path)  # loading does not need the dimension module
    with pytest.raises(ProfileError) as info:
        spec.configs()
    message = str(info.value)
    expected = (f"profile {path}", "'settings.style.sise'", "unknown setting", "did you mean 'size'", "size, names")
    for fragment in expected:
        assert fragment in message, message


@pytest.mark.parametrize(
    ("settings", "fragment"),
    [
        ("size: 1", "size must be an integer >= 2, got 1"),  # ConfigError from the config class
        ("size: big", "size must be an integer >= 2, got 'big'"),
    ],
)
def test_bad_setting_value_is_wrapped(tmp_path: Path, fake_style: None, settings: str, fragment: str) -> None:
    path = write(tmp_path, f"weights: {{style: 1}}\nsettings:\n  style:\n    {settings}\n")
    with pytest.raises(ProfileError) as info:
        load_profile(path).configs()
    message = str(info.value)
    assert f"profile {path}" in message and "'settings.style'" in message and fragment in message
    assert "valid settings are: size, names" in message


def test_type_error_from_config_class_is_wrapped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    @dataclasses.dataclass(frozen=True)
    class Strict:
        required: int

    monkeypatch.setattr(FakePlugin, "config_type", Strict)
    monkeypatch.setitem(dimensions.REGISTRY, "style", f"{__name__}:FakePlugin")
    path = write(tmp_path, "weights: {style: 1}\nsettings:\n  style: {}\n")
    with pytest.raises(ProfileError, match=r"'settings.style'.*missing 1 required positional argument"):
        load_profile(path).configs()


def test_settings_for_unavailable_dimension_name_the_profile(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(dimensions.REGISTRY, "face", raising=False)
    path = write(tmp_path, "weights: {face: 1}\nsettings:\n  face: {det_threshold: 0.5}\n")
    with pytest.raises(DimensionUnavailableError, match=rf"profile {path}: key 'settings.face'.*not available"):
        load_profile(path).configs()


def test_hash_settings_against_the_real_config(tmp_path: Path) -> None:
    pytest.importorskip("imageprism.dimensions.hash", reason="the hash dimension module is not in this checkout yet")
    config_type = dimensions.plugin_class("hash").config_type
    valid = [f.name for f in dataclasses.fields(config_type)]
    path = write(tmp_path, "weights: {hash: 1}\nsettings:\n  hash:\n    no_such_setting: 1\n")
    with pytest.raises(ProfileError) as info:
        load_profile(path).configs()
    assert "'settings.hash.no_such_setting'" in str(info.value)
    assert ", ".join(valid) in str(info.value)
    assert load_profile(write(tmp_path, "weights: {hash: 1}\nsettings: {hash: {}}\n", "ok.yaml")).configs() == {
        "hash": config_type()
    }
    tuned = write(tmp_path, "weights: {hash: 1}\nsettings:\n  hash: {algorithms: [phash], hash_size: 16}\n", "t.yaml")
    assert load_profile(tuned).configs() == {"hash": config_type(algorithms=("phash",), hash_size=16)}
    too_big = write(tmp_path, "weights: {hash: 1}\nsettings:\n  hash: {hash_size: 1000}\n", "big.yaml")
    with pytest.raises(ProfileError, match=r"big.yaml: key 'settings.hash': .*hash_size=1000 is invalid"):
        load_profile(too_big).configs()


# -- normalize_weights -------------------------------------------------------------------------


def test_normalize_weights_accepts_members_strings_and_numpy() -> None:
    weights = normalize_weights(
        {Dimension.HASH: 3, "Semantic": np.float32(1.0), "face": 0}, source="ImagePrism(weights=...)"
    )
    assert weights == {"hash": 0.75, "semantic": 0.25, "face": 0.0}
    assert math.isclose(sum(weights.values()), 1.0)


def test_normalize_weights_huge_values_do_not_overflow() -> None:
    weights = normalize_weights({"hash": 1e308, "semantic": 1e308}, source="x")
    assert weights == {"hash": 0.5, "semantic": 0.5}


def test_normalize_weights_error_class_and_source() -> None:
    with pytest.raises(ConfigError) as info:
        normalize_weights({"hash": -1}, source="ImagePrism(weights=...)")
    assert type(info.value) is ConfigError
    assert str(info.value).startswith("ImagePrism(weights=...): the weight of 'hash' must not be negative")
    with pytest.raises(ProfileError, match=r"^mine: unknown dimension 5"):
        normalize_weights({5: 1}, source="mine", error=ProfileError)


@given(st.dictionaries(st.sampled_from([d.value for d in Dimension]), st.floats(0, 1e6), min_size=1))
def test_normalize_weights_sum_to_one_and_keep_ratios(raw: dict[str, float]) -> None:
    if max(raw.values()) == 0:
        with pytest.raises(ConfigError):
            normalize_weights(raw, source="x")
        return
    weights = normalize_weights(raw, source="x")
    assert list(weights) == list(raw)
    assert math.isclose(sum(weights.values()), 1.0, rel_tol=1e-12)
    top = max(raw, key=raw.__getitem__)
    for dim, value in raw.items():
        assert math.isclose(weights[dim] * raw[top], value * weights[top], rel_tol=1e-9, abs_tol=1e-300)


# -- blend -------------------------------------------------------------------------------------


def test_blend_is_the_weighted_sum() -> None:
    assert blend({"hash": 0.5, "semantic": 1.0}, {"hash": 0.25, "semantic": 0.75}) == pytest.approx(0.875)


def test_blend_missing_zero_counts_none_and_absent_as_zero() -> None:
    weights = {"hash": 0.5, "face": 0.5}
    assert blend({"hash": 0.8, "face": None}, weights, "zero") == pytest.approx(0.4)
    assert blend({"hash": 0.8}, weights, "zero") == pytest.approx(0.4)


def test_blend_renormalize_spreads_the_missing_weight() -> None:
    weights = {"hash": 0.2, "semantic": 0.3, "face": 0.5}
    scores = {"hash": 0.5, "semantic": 1.0, "face": None}
    assert blend(scores, weights, missing="renormalize") == pytest.approx((0.2 * 0.5 + 0.3 * 1.0) / 0.5)
    # with every score present, both policies agree
    full = {"hash": 0.5, "semantic": 1.0, "face": 0.1}
    assert blend(full, weights, "renormalize") == pytest.approx(blend(full, weights, "zero"))


def test_blend_with_nothing_scored_is_zero() -> None:
    for missing in ("zero", "renormalize"):
        assert blend({"face": None}, {"face": 1.0}, missing) == 0.0
        assert blend({}, {"face": 1.0}, missing) == 0.0


def test_blend_ignores_unweighted_scores_and_a_faulty_total() -> None:
    assert blend({"hash": 0.6, "style": 0.1}, {"hash": 1.0}) == pytest.approx(0.6)
    assert blend({"hash": 0.6, "semantic": 0.2}, {"hash": 3.0, "semantic": 1.0}) == pytest.approx(0.5)


def test_blend_rejects_unknown_policy() -> None:
    with pytest.raises(ConfigError, match=r"unknown missing-score policy 'skip'.*zero, renormalize"):
        blend({"hash": 1.0}, {"hash": 1.0}, "skip")


score_or_none = st.one_of(st.none(), st.floats(-1.0, 1.0))


@given(
    st.dictionaries(st.sampled_from([d.value for d in Dimension]), st.floats(0.01, 10.0), min_size=1),
    st.dictionaries(st.sampled_from([d.value for d in Dimension]), score_or_none),
)
def test_blend_bounds(raw_weights: dict[str, float], scores: dict[str, float | None]) -> None:
    weights = normalize_weights(raw_weights, source="x")
    scored = [s for d, s in scores.items() if d in weights and s is not None]
    renormalized = blend(scores, weights, "renormalize")
    zero = blend(scores, weights, "zero")
    if not scored:
        assert renormalized == zero == 0.0
        return
    # renormalize is a weighted mean of the scores that exist
    assert min(scored) - 1e-9 <= renormalized <= max(scored) + 1e-9
    # zero pulls the mean towards 0 by the share of weight that scored
    share = sum(w for d, w in weights.items() if scores.get(d) is not None)
    assert zero == pytest.approx(renormalized * share, abs=1e-9)


def test_builtin_list_is_complete() -> None:
    specs = list_profiles()
    assert [s.name for s in specs] == [p.value for p in Profile]
    assert all(isinstance(s, ProfileSpec) for s in specs)
