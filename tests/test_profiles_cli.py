"""``imageprism profiles`` and ``imageprism compare --profile``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from imageprism._profiles import list_profiles
from imageprism._types import Profile
from imageprism.cli import main


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_profiles_lists_every_builtin_with_weights(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "profiles")
    assert code == 0
    blocks = out.strip().split("\n\n")
    assert [b.split(":", 1)[0] for b in blocks] == [p.value for p in Profile]
    for block, spec in zip(blocks, list_profiles(), strict=True):
        assert spec.summary in block
        for dim, weight in spec.weights.items():
            assert f"{dim} {weight:.2f}" in block
        assert f"missing    {spec.missing}" in block
        expected = "none (ranking only)" if spec.threshold is None else f"{spec.threshold:g}"
        assert f"threshold  {expected}" in block


def test_profiles_json_matches_the_python_api(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "profiles", "--json")
    assert code == 0
    assert json.loads(out) == [spec.as_dict() for spec in list_profiles()]


def test_profiles_shows_a_user_file_and_its_settings(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "mine.yaml"
    path.write_text("description: Mine?\nweights: {hash: 1}\nsettings:\n  hash: {hash_size: 16}\n", encoding="utf-8")
    code, out, _ = run(capsys, "profiles", str(path), "dedup")
    assert code == 0
    assert out.startswith("mine: Mine?\n  weights    hash 1.00\n  threshold  none (ranking only)\n  missing    zero\n")
    assert "  settings   hash: hash_size=16\n" in out
    assert "\ndedup: " in out


def test_profiles_reports_a_broken_file_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("weights: {hash: -1}\n", encoding="utf-8")
    code, out, err = run(capsys, "profiles", str(path))
    assert code == 1 and out == ""
    assert err.startswith(f"imageprism profiles: error: profile {path}: key 'weights'")
    assert "must not be negative" in err and err.count("\n") == 1


def _save(path: Path, array: np.ndarray) -> str:
    Image.fromarray(array).save(path)
    return str(path)


def test_compare_with_a_profile_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, size=(96, 128, 3), dtype=np.uint8)
    a = _save(tmp_path / "a.png", base)
    b = _save(tmp_path / "b.png", base)
    profile = tmp_path / "hash_only.yaml"
    profile.write_text("weights: {hash: 2}\nthreshold: 0.95\n", encoding="utf-8")
    code, out, _ = run(capsys, "compare", "--profile", str(profile), "--json", a, b)
    assert code == 0
    result = json.loads(out)
    assert result["scores"] == {"hash": 1.0}
    assert result["weighted_score"] == 1.0
    assert result["threshold"] == 0.95 and result["is_match"] is True


def test_compare_with_an_unknown_profile_fails_cleanly(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a = _save(tmp_path / "a.png", np.zeros((8, 8), dtype=np.uint8))
    code, _, err = run(capsys, "compare", "--profile", "copyrite", a, a)
    assert code == 1
    assert "unknown profile 'copyrite' (did you mean 'copyright'?)" in err
