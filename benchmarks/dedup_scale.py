"""Dedup at scale: the index-backed exact greedy pass against the brute-force greedy pass.

On precomputed embeddings (no images, no models), seeded:

* ``hash``: 3 x 64-bit codes per item (the default hash embedding: 3 x 8 bytes),
  threshold 0.9 (at most 19 of 192 bits differ). 90% of the items are uniformly
  random codes (mostly distinct: the hard case for an index, nothing to skip); 10%
  are near copies of an earlier item with 0-6 bits flipped per row.
* ``vector``: 512-d unit float32 vectors, threshold 0.9. 90% isotropic random (the
  worst case for the principal-axis bound: no direction dominates), 10% near copies
  of an earlier item (noise 0.15, cosine about 0.92-0.99).

For each size: seconds for ``imageprism._dedup.greedy_labels`` (what
``ImagePrism.dedup`` and ``dedup_embeddings`` run after embedding) and, up to
``--brute-max``, for a brute-force greedy pass (each item against every
representative so far, vectorised with numpy per item: popcount over the
representatives' codes, or a BLAS matrix-vector product) and the ratio. Where both
ran, the labels are checked equal. BLAS and OpenMP may use both cores (the goals
say 2 cores); on a shared machine run it when it is quiet.

Run:  python benchmarks/dedup_scale.py [--hash-sizes 20000,100000,1000000]
          [--vector-sizes 10000,100000] [--brute-max-hash 100000] [--brute-max-vector 20000]
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import numpy as np

from imageprism._dedup import DedupColumn, greedy_labels

THRESHOLD = 0.9
GOALS = {("hash", 100_000): 5.0, ("hash", 1_000_000): 120.0, ("vector", 100_000): 30.0}


def hash_codes(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    codes = rng.integers(0, 256, (n, 3, 8), dtype=np.uint8)
    copies = np.flatnonzero(rng.random(n) < 0.1)
    copies = copies[copies > 0]
    sources = (rng.random(len(copies)) * copies).astype(np.int64)  # an earlier item
    bits = np.unpackbits(codes[sources], axis=-1)
    for row in range(3):
        flips = rng.integers(0, 7, len(copies))
        for j, k in enumerate(flips.tolist()):
            bits[j, row, rng.choice(64, k, replace=False)] ^= 1
    codes[copies] = np.packbits(bits, axis=-1)
    return codes


def vectors(n: int, d: int = 512, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    v = rng.standard_normal((n, d), dtype=np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    copies = np.flatnonzero(rng.random(n) < 0.1)
    copies = copies[copies > 0]
    sources = (rng.random(len(copies)) * copies).astype(np.int64)
    noisy = v[sources] + rng.standard_normal((len(copies), d), dtype=np.float32) * (0.15 / np.sqrt(d))
    v[copies] = noisy / np.linalg.norm(noisy, axis=1, keepdims=True)
    return v


def brute_hash(codes: np.ndarray, threshold: float) -> np.ndarray:
    """Each item against every representative so far: popcount of XOR over 64-bit words."""
    column = DedupColumn("hash", "bits", codes, bits_per_row=64)
    words = np.ascontiguousarray(codes.reshape(len(codes), -1)).view(np.uint64)
    reps = np.empty_like(words)
    rep_ids = np.empty(len(codes), np.int64)
    count = 0
    labels = np.empty(len(codes), np.int64)
    max_dist = int(np.floor(192 * (1 - threshold) + 1e-6))
    for i in range(len(codes)):
        dist = np.bitwise_count(reps[:count] ^ words[i]).sum(axis=1)
        hits = np.flatnonzero(dist <= max_dist)
        # exact score check of the few candidates (the same arithmetic as the hash dimension)
        hits = hits[column.pair_scores(np.full(len(hits), i), rep_ids[hits]) >= threshold]
        if len(hits):
            labels[i] = rep_ids[hits[0]]
        else:
            labels[i] = i
            reps[count], rep_ids[count] = words[i], i
            count += 1
    return labels


def brute_vector(v: np.ndarray, threshold: float) -> np.ndarray:
    """Each item against every representative so far: one BLAS matrix-vector product."""
    column = DedupColumn("vector", "vector", v)
    reps = np.empty_like(v)
    rep_ids = np.empty(len(v), np.int64)
    count = 0
    labels = np.empty(len(v), np.int64)
    for i in range(len(v)):
        hits = np.flatnonzero(reps[:count] @ v[i] >= threshold - 1e-4)
        hits = hits[column.pair_scores(np.full(len(hits), i), rep_ids[hits]) >= threshold]
        if len(hits):
            labels[i] = rep_ids[hits[0]]
        else:
            labels[i] = i
            reps[count], rep_ids[count] = v[i], i
            count += 1
    return labels


def run(kind: str, n: int, brute_max: int) -> dict[str, object]:
    data = hash_codes(n) if kind == "hash" else vectors(n)
    column = DedupColumn(kind, "bits", data, bits_per_row=64) if kind == "hash" else DedupColumn(kind, "vector", data)
    start = time.perf_counter()
    labels = greedy_labels([column], THRESHOLD)
    index_s = time.perf_counter() - start
    row: dict[str, object] = {
        "kind": kind, "n": n, "index_s": index_s, "unique": len(np.unique(labels)), "brute_s": None, "equal": None,
    }
    if n <= brute_max:
        start = time.perf_counter()
        brute = brute_hash(data, THRESHOLD) if kind == "hash" else brute_vector(data, THRESHOLD)
        row["brute_s"] = time.perf_counter() - start
        row["equal"] = bool(np.array_equal(labels, brute))
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hash-sizes", default="20000,100000,1000000")
    parser.add_argument("--vector-sizes", default="10000,20000,100000")
    parser.add_argument("--brute-max-hash", type=int, default=100_000)
    parser.add_argument("--brute-max-vector", type=int, default=20_000)
    args = parser.parse_args()
    sizes = [("hash", int(s), args.brute_max_hash) for s in args.hash_sizes.split(",") if s]
    sizes += [("vector", int(s), args.brute_max_vector) for s in args.vector_sizes.split(",") if s]
    print(f"# dedup_scale: threshold {THRESHOLD}, {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}, "
          f"numpy {np.__version__}, Python {platform.python_version()}")
    print("| embeddings | n | unique | index (s) | brute force (s) | brute / index | labels equal | goal |")
    print("|---|---|---|---|---|---|---|---|")
    for kind, n, brute_max in sizes:
        r = run(kind, n, brute_max)
        what = "3 x 64-bit hashes" if kind == "hash" else "512-d vectors"
        brute = "-" if r["brute_s"] is None else f"{r['brute_s']:.2f}"
        ratio = "-" if r["brute_s"] is None else f"{r['brute_s'] / r['index_s']:.1f}x"  # type: ignore[operator]
        equal = "-" if r["equal"] is None else ("yes" if r["equal"] else "NO")
        goal = GOALS.get((kind, n))
        goal_text = "-" if goal is None else f"<= {goal:g} s: {'met' if r['index_s'] <= goal else 'MISSED'}"  # type: ignore[operator]
        print(f"| {what} | {n:,} | {r['unique']:,} | {r['index_s']:.2f} | {brute} | {ratio} | {equal} | {goal_text} |",
              flush=True)


if __name__ == "__main__":
    main()
