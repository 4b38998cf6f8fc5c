"""Loading a tampered index: a clear ImagePrismError (or a correct load) in bounded time and memory, nothing touched.

The cases (tests/index_tamper_cases.py) are the issue's: manifests that made the
loader raise EOFError, AttributeError, KeyError or RecursionError, file names out of
the directory (``../outside.npy``, an absolute path, a symlink), a FIFO, a header
declaring 10^9 rows, a profile path to a billion-laughs YAML or a FIFO. Each is loaded
in a forked process with a 10 s and 2 GiB limit, so a hang or a blow-up fails the test
instead of the run.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import index_tamper_cases as cases
import pytest

from imageprism import ImageIndex, IndexFormatError

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("pristine") / "idx"
    cases.make_index(folder)
    return folder


def _snapshot(folder: Path) -> dict[str, bytes | str]:
    """Every entry of ``folder`` and of its parent: regular files by content, others by kind."""
    out: dict[str, bytes | str] = {}
    for root in (folder, folder.parent):
        for p in root.iterdir():
            out[str(p)] = p.read_bytes() if p.is_file() and not p.is_symlink() else ("dir" if p.is_dir() else "special")
    return out


@pytest.mark.parametrize("case", list(cases.CASES))
def test_a_tampered_index_gives_a_clear_error_in_bounded_time_and_memory(case: str, pristine: Path, tmp_path: Path) -> None:
    work = tmp_path / "copy"
    shutil.copytree(pristine.parent, work)
    folder = work / pristine.name
    cases.CASES[case](folder)
    before = _snapshot(folder)
    outcome, seconds, peak_mb = cases.run_case(folder, timeout=10.0)
    assert outcome.startswith(("error ", "loaded")), outcome  # never a traceback, a hang or a crash
    if case in cases.MUST_FAIL:
        assert outcome.startswith("error IndexFormatError"), outcome
    assert seconds < 5 and peak_mb < 200, (outcome, seconds, peak_mb)
    assert _snapshot(folder) == before  # loading changes nothing, inside or out


def test_a_path_out_of_the_index_is_named_in_the_error(pristine: Path, tmp_path: Path) -> None:
    shutil.copytree(pristine.parent, tmp_path / "copy")
    folder = tmp_path / "copy" / pristine.name
    cases.CASES["file ../outside.npy"](folder)
    with pytest.raises(IndexFormatError, match=r"'\.\./outside\.npy' is not a plain file name inside the index"):
        ImageIndex.load(folder)


def test_an_index_of_format_version_1_still_loads(tmp_path: Path) -> None:
    """Version 1 (imageprism before crash-safe saves): one file per array, ids in the manifest."""
    folder = tmp_path / "v1"
    folder.mkdir()
    cases.write_version_1(folder)
    index = ImageIndex.load(folder)
    assert index.ids == ("a", "b", "c")
    hits = index.search_embedding(index.embedding("b"), k=1)  # type: ignore[arg-type]
    assert hits[0].id == "b" and hits[0].score == pytest.approx(1.0)
    index.add_embeddings([index.embedding("a")], ids=["d"])  # type: ignore[list-item]
    index.save(folder)  # rewritten in the current format; the version-1 files are gone
    assert sorted(p.name for p in folder.iterdir() if not p.name.startswith("g0")) == ["lock", "manifest.json"]
    assert ImageIndex.load(folder).ids == ("a", "b", "c", "d")
