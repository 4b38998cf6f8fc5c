"""The README's Spark recipe runs in local mode (mapInArrow with ArrowEmbedder and the dedup kernels).

Skips with a reason where Java or pyspark is missing: pyspark is a 430 MB download, so it is
not in the ``test`` extra (``pip install pyspark`` to run this).
"""

from __future__ import annotations

import os
import re
import shutil
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def _block(marker: str) -> str:
    blocks = re.findall(r"```python\n(.*?)```", (REPO / "README.md").read_text(encoding="utf-8"), re.DOTALL)
    found = [b for b in blocks if marker in b]
    assert len(found) == 1, f"expected one README block with {marker!r}"
    return found[0]


def test_readme_spark_recipe_runs_in_local_mode(monkeypatch: pytest.MonkeyPatch) -> None:
    if shutil.which("java") is None:
        pytest.skip("no java on PATH: Spark needs a JVM")
    pytest.importorskip("pyspark", reason="pyspark is not installed (pip install pyspark; not in the test extra: 430 MB)")
    monkeypatch.chdir(REPO)
    monkeypatch.setenv("PYSPARK_PYTHON", sys.executable)  # executors run this interpreter (and see PYTHONPATH)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    namespace: dict[str, object] = {"__name__": "__readme__"}
    exec(compile(_block("photos = ["), "README dedup block", "exec"), namespace)  # defines photos
    exec(compile(_block("mapInArrow"), "README Spark block", "exec"), namespace)
    assert len(namespace["labels"]) == len(namespace["photos"])  # type: ignore[arg-type]
