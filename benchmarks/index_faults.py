"""The issue's index fault cases, measured on whichever imageprism is on ``PYTHONPATH`` (before/after table).

1. ``imageprism index add INDEX photo.jpg`` on an index of ``--items`` items, hit by
   SIGKILL, SIGINT or SIGTERM at a random instant of the second half of its run (the
   load comes first, the save last; ``--runs`` per signal),
   or run under ``RLIMIT_FSIZE`` (a full disk) at several limits. After each, the index
   is loaded: ``old`` (N items), ``new`` (N + 1) or ``unloadable`` (the message).
2. Every tampered-index case of ``tests/index_tamper_cases.py``: loaded and searched
   in a forked process limited to ``--timeout`` seconds and 2 GiB more address space:
   outcome, time, peak memory above the parent's.

Run from a checkout:  PYTHONPATH=. python benchmarks/index_faults.py [--items 200000] [--runs 8]
(for "before": PYTHONPATH=/path/to/older/checkout python benchmarks/index_faults.py).
"""

from __future__ import annotations

import argparse
import collections
import os
import random
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

import index_tamper_cases as cases  # noqa: E402

from imageprism import ImageIndex, ImagePrism  # noqa: E402

PHOTO = HERE.parent / "examples" / "images" / "coffee.jpg"


def _build(folder: Path, n: int) -> None:
    prism = ImagePrism()
    rows = prism.embed(np.zeros((32, 32), np.uint8))["hash"].shape[0]
    codes = np.random.default_rng(0).integers(0, 256, (n, rows, 8), dtype=np.uint8)
    index = ImageIndex(prism)
    index.add_embeddings([{"hash": c} for c in codes], ids=[f"item{i}" for i in range(n)])
    index.save(folder)


def _state(folder: Path, n: int) -> str:
    try:
        size = len(ImageIndex.load(folder))
    except Exception as exc:  # noqa: BLE001 - the outcome reported
        return f"unloadable ({type(exc).__name__}: {str(exc)[:70]})"
    return {n: "old", n + 1: "new"}.get(size, f"wrong size {size}")


def _add(folder: Path, limit: int | None = None) -> subprocess.Popen[str]:
    def fsize() -> None:
        if limit is not None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return subprocess.Popen(
        [sys.executable, "-m", "imageprism", "index", "add", str(folder), str(PHOTO)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=fsize,
        cwd=folder.parent,  # not the checkout: `-m` would put it before PYTHONPATH
    )


def crashes(root: Path, n: int, runs: int) -> None:
    pristine = root / "pristine"
    _build(pristine, n)
    work = root / "work"
    shutil.copytree(pristine, work)
    start = time.perf_counter()
    proc = _add(work)
    proc.communicate()
    whole = time.perf_counter() - start
    print(f"\n`index add` of one photo to {n:,} items takes {whole:.2f} s unhurt ({_state(work, n)})\n")
    print("| fault | outcomes | tracebacks |")
    print("|---|---|---|")
    rng = random.Random(0)
    for sig in (signal.SIGKILL, signal.SIGINT, signal.SIGTERM):
        outcomes: collections.Counter[str] = collections.Counter()
        tracebacks = 0
        for _ in range(runs):
            shutil.rmtree(work)
            shutil.copytree(pristine, work)
            proc = _add(work)
            time.sleep(rng.uniform(0.5 * whole, 1.05 * whole))  # the load comes first, the save last
            proc.send_signal(sig)
            _, err = proc.communicate()
            tracebacks += "Traceback" in err and sig != signal.SIGINT
            outcomes[_state(work, n)] += 1
        print(f"| {sig.name} at a random instant of the second half, {runs} runs | {dict(outcomes)} | {tracebacks} |")
    for limit in (0, 4096, 1 << 20):
        shutil.rmtree(work)
        shutil.copytree(pristine, work)
        proc = _add(work, limit)
        _, err = proc.communicate()
        last = err.strip().splitlines()[-1][:90] if err.strip() else ""
        print(f"| full disk (RLIMIT_FSIZE {limit} bytes) | {_state(work, n)}, exit {proc.returncode}: {last} | "
              f"{int('Traceback' in err)} |")


def tampered(root: Path, timeout: float) -> None:
    pristine = root / "tamper" / "idx"
    cases.make_index(pristine)
    print("\n| tampered index | outcome | time | peak memory |")
    print("|---|---|---|---|")
    for i, (name, edit) in enumerate(cases.CASES.items()):
        work = root / f"case{i}"
        shutil.copytree(pristine.parent, work)
        edit(work / "idx")
        outcome, seconds, peak = cases.run_case(work / "idx", timeout=timeout)
        outcome = outcome.replace(str(work), "...").replace("\n", " ")
        print(f"| {name} | {outcome[:100]} | {seconds:.2f} s | {peak:.0f} MB |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=200_000)
    parser.add_argument("--runs", type=int, default=8)
    parser.add_argument("--timeout", type=float, default=10.0)
    args = parser.parse_args()
    import imageprism

    la = os.getloadavg()
    print(f"imageprism from {Path(imageprism.__file__).parent.parent}; load average {la[0]:.2f} {la[1]:.2f} {la[2]:.2f}")
    with tempfile.TemporaryDirectory() as tmp:
        crashes(Path(tmp), args.items, args.runs)
        tampered(Path(tmp), args.timeout)


if __name__ == "__main__":
    main()
