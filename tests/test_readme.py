"""The README's Python examples run as written (from the repository root), so they stay true."""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
BLOCKS = re.findall(r"```python\n(.*?)```", (REPO / "README.md").read_text(encoding="utf-8"), re.S)


def test_readme_has_python_examples() -> None:
    assert BLOCKS


def test_readme_python_blocks_run_in_order(monkeypatch: pytest.MonkeyPatch) -> None:
    """Blocks run top to bottom in one namespace, as a reader pastes them into one session.

    A ``print(...)`` whose comment starts with a value (a number, a bracket, a quote, or the
    first word of what is printed) must print what the comment says: numbers compare at
    the precision the comment gives them (at least 2 decimals), and the comment may go on after the value
    (``# 0.974: same photo``).
    """
    monkeypatch.chdir(REPO)
    namespace: dict[str, object] = {"__name__": "__readme__"}
    checked = 0
    for index, code in enumerate(BLOCKS):
        if "# readme-test: skip" in code:
            continue  # needs model files that cannot be downloaded here; marked in the README
        printed: dict[int, str] = {}

        def record(*values: object, sep: str = " ", end: str = "\n", **_: object) -> None:
            line = sys._getframe(1).f_lineno
            printed.setdefault(line, sep.join(str(v) for v in values))

        namespace["print"] = record
        exec(compile(code, f"README.md python block {index}", "exec"), namespace)
        lines = code.splitlines()
        for line, text in printed.items():
            comment = lines[line - 1].partition("  # ")[2].strip()
            if comment and _quotes_a_value(comment, text):
                assert _says(text, comment), f"README block {index} line {line}: prints {text!r}, comment says {comment!r}"
                checked += 1
    assert checked >= 5  # the check is live


_NUMBER = re.compile(r"-?\d+(?:\.\d+)?(?:e-?\d+)?")


def _quotes_a_value(comment: str, printed: str) -> bool:
    if comment[0] in "-0123456789[{('\"":
        return True
    first = printed.split()[0] if printed.split() else ""
    return bool(first) and comment.split()[0].rstrip(":,") == first.rstrip(":,")


def _says(printed: str, comment: str) -> bool:
    """Whether ``comment`` starts with ``printed``, numbers rounded to the comment's precision."""
    p_parts, c_parts = _NUMBER.split(printed), _NUMBER.split(comment)
    p_nums, c_nums = _NUMBER.findall(printed), _NUMBER.findall(comment)
    if len(c_nums) < len(p_nums):
        return False
    for i, text in enumerate(p_parts):
        expected = c_parts[i] if i < len(c_parts) else ""
        last = i == len(p_parts) - 1
        if (not last and " ".join(text.split()) != " ".join(expected.split())) or (
            last and not " ".join(expected.split()).startswith(" ".join(text.split()))
        ):
            return False
        if not last:
            got, said = float(p_nums[i]), c_nums[i]
            places = max(len(said.partition(".")[2]) if "." in said and "e" not in said else 0, 2)
            if round(got, places) != round(float(said), places):  # "1.0" says 1.00, so 0.974 does not pass
                return False
    return True


def test_ci_runs_the_readme_commands() -> None:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    for marker in ("<!-- ci:quickstart -->", "<!-- ci:test -->"):
        assert marker in text
    assert os.access(REPO / ".ci" / "run", os.X_OK)
