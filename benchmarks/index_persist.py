"""What saving after ``index add`` costs on a large index: an incremental save against a full rewrite.

A synthetic index of ``--items`` items (default 1,000,000) with the default ``hash``
(``HashConfig()``: 16 variants, 48 x 64 bits packed, 384 bytes an item) is saved once.
Then, ``--rounds`` times, ``--add`` items (default 100) are added with
``add_embeddings`` and timed two ways, taking turns:

* ``incremental``: ``save`` to the index's own directory: the new rows as a segment
  (merged with trailing segments not twice its size), a new manifest, one rename.
* ``rewrite``: ``save`` of the same index to a fresh directory: every row written
  again (what the format before generation-numbered segments did on every save).

Also timed once: ``load`` of the whole index (what ``imageprism index add`` does
first). Bytes written per incremental save are counted from the directory listing.
Prints a Markdown table, the ratio, and the load average.

Run:  python benchmarks/index_persist.py [--items 1000000] [--add 100] [--rounds 10] [--dir /tmp]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from imageprism import ImageIndex, ImagePrism
from imageprism._index_files import read_manifest


def _items(n: int, rows: int, seed: int) -> list[dict[str, np.ndarray]]:
    codes = np.random.default_rng(seed).integers(0, 256, (n, rows, 8), dtype=np.uint8)
    return [{"hash": c} for c in codes]


def _size(folder: Path) -> dict[str, int]:
    return {p.name: p.stat().st_size for p in folder.iterdir()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--add", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--dir", default=None, help="where to write (default: the temp directory)")
    args = parser.parse_args()

    prism = ImagePrism()
    rows = prism.embed(np.zeros((32, 32), np.uint8))["hash"].shape[0]
    index = ImageIndex(prism)
    codes = np.random.default_rng(0).integers(0, 256, (args.items, rows, 8), dtype=np.uint8)
    index._columns["hash"].append(codes)  # bulk fill (the public add_embeddings takes one mapping per item)
    index._ids = [f"item{i}" for i in range(args.items)]
    index._positions = {name: i for i, name in enumerate(index._ids)}
    index._sync()

    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        folder = Path(tmp) / "idx"
        start = time.perf_counter()
        index.save(folder)
        first = time.perf_counter() - start
        start = time.perf_counter()
        loaded = ImageIndex.load(folder)
        load = time.perf_counter() - start
        assert len(loaded) == args.items
        del loaded

        incremental, rewrite, written = [], [], []
        for r in range(args.rounds):
            index.add_embeddings(_items(args.add, rows, seed=r + 1), ids=[f"new{r}-{i}" for i in range(args.add)])
            before = _size(folder)
            start = time.perf_counter()
            index.save(folder)
            incremental.append(time.perf_counter() - start)
            after = _size(folder)
            written.append(sum(size for name, size in after.items() if before.get(name) != size))
            own = index._saved  # saving elsewhere makes that directory the index's own: put it back after
            other = Path(tmp) / f"rewrite{r}"
            start = time.perf_counter()
            index.save(other)
            rewrite.append(time.perf_counter() - start)
            shutil.rmtree(other)
            index._saved = own
        segments = [s.rows for s in read_manifest(folder).segments]
        check = ImageIndex.load(folder)
        assert check.ids == index.ids

    load_avg = os.getloadavg()
    print(f"{args.items:,} items of {rows} x 64 bits, +{args.add} items per round, {args.rounds} rounds; "
          f"load average {load_avg[0]:.2f} {load_avg[1]:.2f} {load_avg[2]:.2f}\n")
    print("| step | median | max |")
    print("|---|---|---|")
    print(f"| first save (all {args.items:,} rows) | {first:.2f} s | |")
    print(f"| load (all rows) | {load:.2f} s | |")
    print(f"| incremental save (+{args.add}) | {1000 * statistics.median(incremental):.1f} ms | "
          f"{1000 * max(incremental):.1f} ms |")
    print(f"| full rewrite save | {1000 * statistics.median(rewrite):.1f} ms | {1000 * max(rewrite):.1f} ms |")
    print(f"\nbytes written per incremental save: median {statistics.median(written):,.0f}, max {max(written):,}")
    print(f"segments at the end: {segments}")
    print(f"rewrite / incremental (medians): {statistics.median(rewrite) / statistics.median(incremental):.0f}x")


if __name__ == "__main__":
    main()
