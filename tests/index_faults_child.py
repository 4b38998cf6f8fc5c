"""Crash an index save at every I/O step, in processes of its own (run by tests/test_index_faults.py).

``python tests/index_faults_child.py sweep FOLDER SIGNAL`` builds a base index in
FOLDER, then for each scenario (a plain append, a merge of segments, a compaction)
and each step ``k`` of the save (every ``os.open``, ``os.fsync``, ``os.replace`` and
``os.unlink``) forks a process that runs the change and is hit by SIGNAL
(``KILL``: ``kill -9`` of itself; ``INT``: a real SIGINT, raised as
``KeyboardInterrupt``) just before step ``k``, or, with ``RLIMIT_FSIZE``, writes
into a full disk. The forking process then loads the index and prints one JSON line
per step: was it exactly the state before the change, or after it? A save after the
crash must work and leave no file the manifest does not name.

``python tests/index_faults_child.py loop FOLDER`` saves cycles of changes to an
existing index forever (cycle ``g`` commits generation ``g``), printing each committed cycle
(for kills from outside).
"""

from __future__ import annotations

import json
import os
import resource
import signal
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from imageprism import HashConfig, ImageIndex, ImagePrism  # noqa: E402
from imageprism._index_files import LOCK, MANIFEST, read_manifest  # noqa: E402
from imageprism._search import topk  # noqa: E402
from imageprism.errors import ImagePrismError  # noqa: E402


def make_prism() -> ImagePrism:
    """Three layouts: packed bits, vectors, and pairwise (``None`` allowed)."""
    return ImagePrism(weights={"hash": 0.4, "semantic": 0.3, "face": 0.3}, config={"hash": HashConfig.plain()})


def items(n: int, seed: int) -> list[dict[str, np.ndarray | None]]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        v = rng.standard_normal(16).astype(np.float32)
        face = None if i % 3 == 0 else rng.standard_normal((1 + i % 2, 8)).astype(np.float32)
        out.append({"hash": rng.integers(0, 256, (3, 8), dtype=np.uint8), "semantic": v / np.linalg.norm(v), "face": face})
    return out


def change(index: ImageIndex, cycle: int, *, add: int = 20, remove: int = 2) -> None:
    """Cycle ``cycle``'s change: ``add`` new items (ids ``c<cycle>-<i>``), then remove the ``remove`` oldest."""
    index.add_embeddings(items(add, seed=1000 + cycle), ids=[f"c{cycle}-{i}" for i in range(add)])
    if remove:
        index.remove(list(index.ids[:remove]))


def state(index: ImageIndex) -> tuple[list[str], list[list[object]]]:
    """Ids and every stored embedding, as plain lists (for exact comparison)."""
    rows = []
    for item in index.ids:
        emb = index.embedding(item)
        rows.append([None if emb[d] is None else emb[d].tolist() for d in sorted(emb)])  # type: ignore[union-attr]
    return list(index.ids), rows


def _crash_at(k: int, how: str) -> None:
    """Hit this process with ``how`` just before its ``k``-th file-system step."""
    count = [0]

    def wrap(fn):  # type: ignore[no-untyped-def]
        def step(*args, **kwargs):  # type: ignore[no-untyped-def]
            if count[0] == k:
                os.kill(os.getpid(), signal.SIGKILL if how == "KILL" else signal.SIGINT)
            count[0] += 1
            return fn(*args, **kwargs)

        return step

    for name in ("open", "fsync", "replace", "unlink"):
        setattr(os, name, wrap(getattr(os, name)))


def _run_forked(folder: Path, cycle: int, how: str, k: int) -> int:
    """Run one change and save in a child hit at step ``k``; returns its exit status."""
    pid = os.fork()
    if pid == 0:  # the child: never returns
        code = 0
        try:
            index = ImageIndex.load(folder, prism=make_prism())
            change(index, cycle, add=SCENARIOS[cycle][0], remove=SCENARIOS[cycle][1])
            if how == "FULL":
                resource.setrlimit(resource.RLIMIT_FSIZE, (k, k))
            else:
                _crash_at(k, how)
            index.save(folder)
        except KeyboardInterrupt:
            code = 3
        except ImagePrismError:
            code = 4
        except BaseException:  # noqa: BLE001 - reported to the parent as a failure
            code = 5
        os._exit(code)
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])


#: cycle -> (items added, items removed): a plain append, a merge of small segments, a compaction
SCENARIOS = {1: (3, 0), 2: (12, 2), 3: (5, 25)}
#: the sweep's index is approximate (``exact=False``), searched approximately from this many
#: items: 74 before the scenarios, 87 after the second, whose save then trains the approximate
#: index and writes its state files (hit at every step like the rest); the third keeps them
SWEEP_RERANK = 80


def sweep(folder: Path, how: str) -> None:
    topk.RERANK = SWEEP_RERANK  # inherited by the forked savers
    base = ImageIndex(make_prism(), exact=False)
    base.add_embeddings(items(60, seed=1), ids=[f"base-{i}" for i in range(60)])
    base.save(folder)
    for cycle in (4, 5):  # small segments and a deleted file, so the scenarios merge and compact
        change(base, cycle, add=10, remove=3)
        base.save(folder)
    for cycle, (add, remove) in SCENARIOS.items():
        backup = {p.name: p.read_bytes() for p in folder.iterdir()}
        before = state(ImageIndex.load(folder, prism=make_prism()))
        expected = ImageIndex.load(folder, prism=make_prism())
        change(expected, cycle, add=add, remove=remove)
        after = state(expected)
        for k in [0, 200, 2000, 20000, 1 << 30] if how == "FULL" else range(200):
            leftovers = _unnamed(folder)
            status = _run_forked(folder, cycle, how, k)
            try:
                now = state(ImageIndex.load(folder, prism=make_prism()))
                outcome = "old" if now == before else "new" if now == after else "neither"
            except Exception as exc:  # noqa: BLE001 - the outcome the test fails on
                outcome = f"unloadable: {type(exc).__name__}: {exc}"
            report = {"cycle": cycle, "step": k, "status": status, "outcome": outcome}
            if status == 0:  # the save ran to its end: it had to clean the crashed saves' files
                report.update(leftovers_before=len(leftovers), leftovers_after=_unnamed(folder))
            print(json.dumps(report), flush=True)
            if status == 0:
                break
            if outcome != "old":  # committed: back to the old state (the crashed save's files stay)
                for name, data in backup.items():
                    (folder / name).write_bytes(data)


def _unnamed(folder: Path) -> list[str]:
    """Files of ``folder`` that its committed manifest does not name."""
    names = read_manifest(folder).names() | {MANIFEST, LOCK}
    return sorted(p.name for p in folder.iterdir() if p.name not in names)


def loop(folder: Path) -> None:
    index = ImageIndex.load(folder, prism=make_prism())
    cycle = read_manifest(folder).generation  # cycle g + 1 commits generation g + 1
    print("ready", cycle, flush=True)
    while True:
        cycle += 1
        change(index, cycle)
        index.save(folder)
        print("committed", cycle, flush=True)


if __name__ == "__main__":
    mode, target = sys.argv[1], Path(sys.argv[2])
    if mode == "sweep":
        sweep(target, sys.argv[3])
    else:
        loop(target)
