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
    ("ecommerce", {"instance": 0.75, "semantic": 0.85, "hash": 0.62}, True, 0.77),
    ("ecommerce", {"instance": 0.4, "semantic": 0.8, "hash": 0.6}, False, 0.54),
    ("ecommerce", {"instance": 0.0, "semantic": 0.5, "hash": 0.6}, False, 0.21),
    ("ecommerce", {"instance": 0.6, "semantic": 0.8, "hash": 0.6}, True, 0.66),
    ("ecommerce", {"instance": 0.58, "semantic": 0.8, "hash": 0.6}, False, None),
    ("copyright", {"hash": 0.97, "instance": 0.97, "semantic": 0.97}, True, 0.97),
    ("copyright", {"hash": 0.8, "instance": 0.8, "semantic": 0.9}, True, 0.82),
    ("copyright", {"hash": 0.6, "instance": 0.6, "semantic": 0.9}, False, 0.66),
    ("copyright", {"hash": 0.6, "instance": 0.0, "semantic": 0.5}, False, 0.31),
    ("dedup", {"hash": 0.9, "instance": 0.9}, True, 0.9),
    ("dedup", {"hash": 0.9, "instance": 0.85}, False, None),
    ("dedup", {"hash": 0.65, "instance": 0.75}, False, 0.68),
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
        assert score == pytest.approx(stated, abs=0.0051)  # the descriptions round to 2 decimals
    assert spec.threshold is not None
    assert (score >= spec.threshold - 1e-9) is matches


def _readme_section() -> str:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    start = text.index("<!-- section:profiles -->")
    end = text.index("<!-- section:", start + 1)
    return text[start:end]


def test_readme_table_matches_the_profiles() -> None:
    rows = [line for line in _readme_section().splitlines() if line.startswith("| `")]
    specs = {s.name: s for s in list_profiles()}
    assert [row.split("`")[1] for row in rows] == list(specs)
    for row in rows:
        name, _question, weights, threshold = (cell.strip().strip("`") for cell in row.strip("|").split("|"))
        spec = specs[name]
        pairs = [item.split() for item in weights.split(",")]
        assert [dim for dim, _ in pairs] == list(spec.weights), row
        assert [float(w) for _, w in pairs] == pytest.approx(list(spec.weights.values())), row
        if spec.threshold is None:
            assert threshold.startswith("none"), row
        else:
            assert float(threshold) == spec.threshold, row


def test_readme_example_profile_loads(tmp_path: Path) -> None:
    section = _readme_section()
    block = section.split("```yaml\n", 1)[1].split("```", 1)[0]
    path = tmp_path / "my_profile.yaml"
    path.write_text(block, encoding="utf-8")
    spec = load_profile(path)
    assert spec.summary == "Is B a re-edit of A?"
    assert dict(spec.weights) == pytest.approx({"hash": 2 / 3, "instance": 1 / 3})
    assert (spec.missing, spec.threshold) == ("zero", 0.8)
    pytest.importorskip("imageprism.dimensions.hash", reason="the hash dimension module is not installed")
    config = spec.configs()["hash"]
    assert (config.algorithms, config.hash_size) == (("phash", "dhash"), 16)  # type: ignore[attr-defined]


def test_hash_scale_behind_the_thresholds(dev_images: list[Path]) -> None:
    """The hash-scale premises the dedup and copyright thresholds are argued from, on real photos."""
    import io
    import itertools

    from PIL import Image

    from imageprism import ImagePrism

    prism = ImagePrism()
    embeddings = [prism.embed(p) for p in dev_images]
    unrelated = [
        prism.compare_embeddings(a, b).scores["hash"] for a, b in itertools.combinations(embeddings, 2)
    ]
    assert 0.55 < sum(unrelated) / len(unrelated) < 0.65  # unrelated photos land near 0.6 (robust hash)
    assert sorted(unrelated)[int(0.99 * len(unrelated))] < 0.75  # and rarely above 0.7
    copies, crops = [], []
    for path, embedding in zip(dev_images, embeddings, strict=True):
        image = Image.open(path).convert("RGB")
        small = io.BytesIO()
        image.resize((image.width // 2, image.height // 2)).save(small, "JPEG", quality=75)
        copies.append(prism.compare_embeddings(embedding, prism.embed(small.getvalue())).scores["hash"])
        w, h = image.size
        crop = image.crop((w // 10, h // 10, w - w // 10, h - h // 10))
        crops.append(prism.compare_embeddings(embedding, prism.embed(crop)).scores["hash"])
    assert min(copies) > 0.9  # a re-encoded copy stays above the near-duplicate line
    assert sum(crops) / len(crops) > 0.85  # the default hash also catches centre crops
    assert min(crops) > 0.75
    dedup = load_profile(Profile.DEDUP)
    assert dedup.threshold is not None
    assert all(blend({"hash": c, "instance": 0.95}, dedup.weights) >= dedup.threshold for c in copies)
