"""Dedup linkage cost: connected components against the greedy pass, side by side on the same embeddings.

The synthetic embeddings of ``dedup_scale.py`` (seeded; threshold 0.9): 3 x 64-bit
hashes and 512-d vectors, 90% random, 10% near copies of an earlier item (itself
possibly a copy, so chains occur), plus hashes with 26 variant groups of 3 x 64 bits
(the default hash's layout: the best alignment of either side's variants against the
other's whole image), whose variants are random bits for random items and copied with
the item for near copies. For each size the three groupings run in turn, ``--repeat``
rounds, best time kept: ``greedy_labels`` (``linkage="representative"``),
``connected_labels`` with the default hop cap (2) and without a cap. The load average
is printed with every row (the machine is shared).

Run:  python benchmarks/dedup_linkage.py [--hash-sizes 20000,100000] [--variant-sizes 20000]
          [--vector-sizes 10000,20000] [--repeat 2]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from dedup_scale import THRESHOLD, hash_codes, vectors  # noqa: E402

from imageprism._dedup import DedupColumn, connected_labels, greedy_labels  # noqa: E402

VARIANTS = 26


def variant_codes(n: int, seed: int = 0) -> np.ndarray:
    """``(n, 26 * 3, 8)`` random codes; 10% are near copies of an earlier item, every variant row flipped
    in about 0-6 of its 64 bits (as a real copy's transformed views would follow its source's)."""
    rng = np.random.default_rng(seed)
    codes = rng.integers(0, 256, (n, VARIANTS * 3, 8), dtype=np.uint8)
    copies = np.flatnonzero(rng.random(n) < 0.1)
    copies = copies[copies > 0]
    sources = (rng.random(len(copies)) * copies).astype(np.int64)
    for start in range(0, len(copies), 4096):  # chunks in order: a copy of an earlier chunk's copy chains
        part, src = copies[start : start + 4096], sources[start : start + 4096]
        bits = np.unpackbits(codes[src], axis=-1)
        rate = rng.integers(0, 7, (len(part), VARIANTS * 3, 1)) / 64
        codes[part] = np.packbits(bits ^ (rng.random(bits.shape) < rate), axis=-1)
    return codes


def column(kind: str, n: int) -> DedupColumn:
    if kind == "hash":
        return DedupColumn("hash", "bits", hash_codes(n), bits_per_row=64)
    if kind == "variants":
        return DedupColumn("hash", "bit_variants", variant_codes(n), bits_per_row=64, variants=VARIANTS)
    return DedupColumn("semantic", "vector", vectors(n))


def timed(fn: object) -> tuple[float, np.ndarray]:
    start = time.perf_counter()
    labels = fn()  # type: ignore[operator]
    return time.perf_counter() - start, labels


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hash-sizes", default="20000,100000")
    parser.add_argument("--variant-sizes", default="20000")
    parser.add_argument("--vector-sizes", default="10000,20000")
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    sizes = [("hash", int(s)) for s in args.hash_sizes.split(",") if s]
    sizes += [("variants", int(s)) for s in args.variant_sizes.split(",") if s]
    sizes += [("vector", int(s)) for s in args.vector_sizes.split(",") if s]
    what = {"hash": "3 x 64-bit hashes", "variants": f"{VARIANTS} variants x 3 x 64 bits", "vector": "512-d vectors"}
    print(f"# dedup_linkage: threshold {THRESHOLD}, {os.cpu_count()} cores, best of {args.repeat}")
    print("| embeddings | n | representative (s) | connected, 2 hops (s) | connected, no cap (s) | "
          "2 hops / repr. | no cap / repr. | groups repr. / 2 hops / no cap | load |")
    print("|---|---|---|---|---|---|---|---|---|")
    for kind, n in sizes:
        col = column(kind, n)
        runs = {
            "representative": lambda col=col: greedy_labels([col], THRESHOLD),
            "hops2": lambda col=col: connected_labels([col], THRESHOLD)[0],
            "nocap": lambda col=col: connected_labels([col], THRESHOLD, max_hops=None)[0],
        }
        best = {name: float("inf") for name in runs}
        groups = {}
        for _ in range(args.repeat):
            for name, fn in runs.items():  # in turn, so load swings hit all three alike
                seconds, labels = timed(fn)
                best[name] = min(best[name], seconds)
                groups[name] = len(np.unique(labels))
        r, h, c = best["representative"], best["hops2"], best["nocap"]
        print(f"| {what[kind]} | {n:,} | {r:.2f} | {h:.2f} | {c:.2f} | {h / r:.2f}x | {c / r:.2f}x | "
              f"{groups['representative']:,} / {groups['hops2']:,} / {groups['nocap']:,} | "
              f"{os.getloadavg()[0]:.1f} |", flush=True)


if __name__ == "__main__":
    main()
