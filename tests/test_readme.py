"""The README's Python examples run as written (from the repository root), so they stay true."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
BLOCKS = re.findall(r"```python\n(.*?)```", (REPO / "README.md").read_text(encoding="utf-8"), re.S)


def test_readme_has_python_examples() -> None:
    assert BLOCKS


def test_readme_python_blocks_run_in_order(monkeypatch: pytest.MonkeyPatch) -> None:
    """Blocks run top to bottom in one namespace, as a reader pastes them into one session."""
    monkeypatch.chdir(REPO)
    namespace: dict[str, object] = {"__name__": "__readme__"}
    for index, code in enumerate(BLOCKS):
        if "# readme-test: skip" in code:
            continue  # needs model files that cannot be downloaded here; marked in the README
        exec(compile(code, f"README.md python block {index}", "exec"), namespace)


def test_ci_runs_the_readme_commands() -> None:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    for marker in ("<!-- ci:quickstart -->", "<!-- ci:test -->"):
        assert marker in text
    assert os.access(REPO / ".ci" / "run", os.X_OK)
