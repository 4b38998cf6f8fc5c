"""Hostile profile YAML: each file is refused with a ProfileError, in well under a second and a
few MiB, measured in a fresh process; the CLI reports it in one line."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
from bounded import python_code, run_bounded

from imageprism import ImagePrism
from imageprism._profiles import MAX_PROFILE_BYTES, MAX_PROFILE_DEPTH, load_profile
from imageprism.errors import ProfileError

_LEVELS = ['&a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]'] + [
    f"&{chr(98 + i)} [{','.join(['*' + chr(97 + i)] * 9)}]" for i in range(8)
]
#: 9 ** 9 = 387 million "lol"s once expanded, in a setting's value, where an error message would show it
BILLION_LAUGHS = "weights: {hash: 1}\nsettings:\n  hash:\n    hash_size: [" + ", ".join(_LEVELS) + "]\n"


def bombs(folder: Path) -> dict[str, Path]:
    """The hostile profiles, written to ``folder``."""
    files = {
        "billion_laughs": BILLION_LAUGHS,
        "deep_flow": "weights: {hash: 1}\nsettings: " + "[" * 30_000 + "]" * 30_000 + "\n",
        "deep_block": "weights: {hash: 1}\n" + "".join(" " * i + f"k{i}:\n" for i in range(200)) + " " * 200 + "x: 1\n",
        "huge_scalar": "description: " + "x" * (40 * 2**20) + "\nweights: {hash: 1}\n",
        "just_too_big": "weights: {hash: 1}\n#" + "y" * MAX_PROFILE_BYTES + "\n",
        "one_alias": "w: &w {hash: 1}\nweights: *w\n",
    }
    paths = {}
    for name, text in files.items():
        paths[name] = folder / f"{name}.yaml"
        paths[name].write_text(text, encoding="utf-8")
    return paths


EXPECTED = {
    "billion_laughs": "anchors and aliases",
    "deep_flow": "nest",  # libyaml refuses it itself, as too deep, before our own depth check
    "deep_block": f"nested deeper than {MAX_PROFILE_DEPTH} levels",
    "huge_scalar": f"larger than {MAX_PROFILE_BYTES:,} bytes",
    "just_too_big": f"larger than {MAX_PROFILE_BYTES:,} bytes",
    "one_alias": "anchors and aliases",
}

_SCRIPT = """
import json, resource, sys, time
from imageprism._profiles import load_profile
from imageprism.errors import ImagePrismError
load_profile("dedup")  # warm up
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
out = {}
for path in sys.argv[1:]:
    start = time.perf_counter()
    try:
        load_profile(path)
        outcome = "accepted"
    except ImagePrismError as exc:
        outcome = type(exc).__name__ + ": " + str(exc)
    out[path] = [outcome, time.perf_counter() - start]
out["rss_growth_mib"] = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
print(json.dumps(out))
"""


def test_yaml_bombs_are_profile_errors_in_bounded_time_and_memory(tmp_path: Path) -> None:
    paths = bombs(tmp_path)
    outcome = run_bounded(python_code(_SCRIPT) + [str(p) for p in paths.values()], timeout=120)
    outcome.assert_clean()
    assert outcome.returncode == 0, outcome.stderr
    out = json.loads(outcome.stdout)
    for name, path in paths.items():
        message, seconds = out[str(path)]
        assert message.startswith("ProfileError: profile ") and str(path) in message, (name, message)
        assert EXPECTED[name] in message, (name, message)
        assert seconds < 0.5, f"{name} took {seconds:.2f} s"
    assert out["rss_growth_mib"] < 20, f"peak memory grew by {out['rss_growth_mib']:.0f} MiB"


def test_a_profile_at_the_limits_still_loads(tmp_path: Path) -> None:
    path = tmp_path / "padded.yaml"
    body = "weights: {hash: 1}\nsettings: {hash: {algorithms: [phash, dhash]}}\n"
    path.write_text(body + "#" * (MAX_PROFILE_BYTES - len(body) - 1) + "\n", encoding="utf-8")
    assert path.stat().st_size == MAX_PROFILE_BYTES
    assert load_profile(path).weights == {"hash": 1.0}


def test_a_fifo_as_profile_is_refused_without_waiting(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "p.yaml")
    with pytest.raises(ProfileError, match="is not a file"):
        ImagePrism(profile=tmp_path / "p.yaml")


def test_the_cli_reports_a_bomb_in_one_line(tmp_path: Path) -> None:
    bomb = bombs(tmp_path)["billion_laughs"]
    photo = str(Path(__file__).resolve().parent.parent / "examples" / "images" / "coffee.jpg")
    outcome = run_bounded([sys.executable, "-m", "imageprism", "compare", "--profile", str(bomb), photo, photo], timeout=60)
    outcome.assert_clean()
    assert outcome.returncode != 0 and "anchors and aliases" in outcome.stderr
    assert len(outcome.stderr.strip().splitlines()) == 1 and outcome.peak_mib < 300
