"""Search index latency: one query against N indexed items, side by side.

Items are synthetic embeddings shaped like the real ones (no model needed): the
plain ``hash`` embedding (3 x 64 bits, packed), a 512-d unit vector (the size of
CLIP ViT-B/32's ``semantic`` embedding), and, in a second index, the default hash
(``HashConfig()`` = ``robust()``: 26 flip/rotation/crop variants since issue 18, 78 x 64 bits). They come in clusters, and every query
is a perturbed copy of an indexed item (a planted near-duplicate), so the timed
queries also check that the planted item comes first.

Timed, per query, excluding the query's own embedding (``search_embedding``):

* ``hash``: ``search_embedding(q, k=10, dimension="hash")`` (faiss ``IndexBinaryFlat``).
* ``semantic``: the same with ``dimension="semantic"`` (faiss ``IndexFlatIP``, 512-d).
* ``hash, default robust config``: ranked by the best alignment (variants + 1 binary scans,
  then the candidates scored by the plugin).
* ``blend``: ranked by the index's weights (0.5 hash + 0.5 semantic): every item's
  fast scores on both dimensions, blended, then the exact re-scoring.
* baselines on the same data: a numpy matrix-vector product plus ``argpartition``
  for the vectors, and a numpy popcount table over the packed codes.

Each of ``--repeat`` rounds runs every step once per query, steps taking turns, and
the medians are reported. faiss runs with 1 and with 2 OpenMP threads (the machine
has 2 cores); the thread count is set before each step.

Run:  python benchmarks/index_latency.py [--items 100000] [--queries 20] [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Callable

import faiss
import numpy as np

from imageprism import HashConfig, ImageIndex, ImagePrism
from imageprism._math import hamming_similarity

DIM = 512
VARIANTS = HashConfig()  # the default (= HashConfig.robust()): 26 flip/rotation/crop variants


def synthetic(n: int, seed: int, rows: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """``n`` hash embeddings (n, rows, 8) and unit vectors (n, DIM), in 1000 clusters."""
    rng = np.random.default_rng(seed)
    clusters = 1000
    centre_of = rng.integers(clusters, size=n)
    hashes = rng.integers(0, 256, (clusters, rows, 8), dtype=np.uint8)[centre_of]
    for lo in range(0, n, 10_000):  # in chunks: the random draws would need GBs at once
        hi = min(n, lo + 10_000)
        hashes[lo:hi] ^= np.packbits(rng.random((hi - lo, rows, 64), dtype=np.float32) < 0.2, axis=-1)
    vectors = rng.standard_normal((clusters, DIM)).astype(np.float32)[centre_of]
    vectors += rng.standard_normal((n, DIM)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return hashes, vectors


def perturbed(hashes: np.ndarray, vectors: np.ndarray, rng: np.random.Generator) -> dict[str, np.ndarray]:
    h = hashes ^ np.packbits(rng.random((len(hashes), 64)) < 0.03, axis=-1)
    v = vectors + 0.05 * rng.standard_normal(DIM).astype(np.float32)
    return {"hash": h, "semantic": (v / np.linalg.norm(v)).astype(np.float32)}


def medians(steps: dict[str, Callable[[], object]], repeat: int) -> dict[str, float]:
    times: dict[str, list[float]] = {name: [] for name in steps}
    for fn in steps.values():
        fn()  # warm-up
    for _ in range(repeat):
        for name, fn in steps.items():
            start = time.perf_counter()
            fn()
            times[name].append((time.perf_counter() - start) * 1000)
    return {name: statistics.median(values) for name, values in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=20)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    hashes, vectors = synthetic(args.items, seed=0)
    prism = ImagePrism(weights={"hash": 0.5, "semantic": 0.5}, config={"hash": HashConfig.plain()})
    ids = [f"item-{i}" for i in range(args.items)]
    embeddings = [{"hash": h, "semantic": v} for h, v in zip(hashes, vectors)]
    start = time.perf_counter()
    index = ImageIndex(prism)
    index.add_embeddings(embeddings, ids=ids)
    build_s = time.perf_counter() - start

    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        index.save(tmp)
        save_s = time.perf_counter() - start
        size_mb = sum(os.path.getsize(os.path.join(tmp, f)) for f in os.listdir(tmp)) / 1e6
        start = time.perf_counter()
        ImageIndex.load(tmp, prism=prism)
        load_s = time.perf_counter() - start

    rng = np.random.default_rng(1)
    targets = rng.choice(args.items, args.queries, replace=False)
    queries = [perturbed(hashes[t], vectors[t], rng) for t in targets]
    codes = hashes.reshape(len(hashes), -1)
    del embeddings

    rows = VARIANTS.n_variants * len(VARIANTS.algorithms)
    variant_hashes, _ = synthetic(args.items, seed=2, rows=rows)
    variant_index = ImageIndex(ImagePrism(config={"hash": VARIANTS}))
    start = time.perf_counter()
    variant_index.add_embeddings([{"hash": h} for h in variant_hashes], ids=ids)
    variant_build_s = time.perf_counter() - start
    variant_queries = [perturbed(variant_hashes[t], vectors[t], rng) for t in targets]
    for q, t in zip(variant_queries, targets):
        assert variant_index.search_embedding(q, k=10)[0].position == t

    for q, t in zip(queries, targets):  # the planted near-duplicate comes first
        for how in ({"dimension": "hash"}, {"dimension": "semantic"}, {}):
            top = index.search_embedding(q, k=10, **how)[0]
            assert top.position == t, (how, top, t)

    Query = dict[str, np.ndarray]

    def per_query(fn: Callable[[Query], object], batch: list[Query] = queries) -> Callable[[], None]:
        def run() -> None:
            for q in batch:
                fn(q)
        return run

    def threads(n: int, fn: Callable[[Query], object], batch: list[Query] = queries) -> Callable[[], None]:
        inner = per_query(fn, batch)

        def run() -> None:
            faiss.omp_set_num_threads(n)
            inner()
        return run

    steps: dict[str, Callable[[], None]] = {}
    for n in (1, 2):
        steps[f"hash, k=10 (faiss {n} thread)"] = threads(n, lambda q: index.search_embedding(q, k=10, dimension="hash"))
        steps[f"semantic 512-d, k=10 (faiss {n} thread)"] = threads(
            n, lambda q: index.search_embedding(q, k=10, dimension="semantic")
        )
        steps[f"blend hash+semantic, k=10 (faiss {n} thread)"] = threads(n, lambda q: index.search_embedding(q, k=10))
        steps[f"hash, default robust config ({VARIANTS.n_variants} variants), k=10 (faiss {n} thread)"] = threads(
            n, lambda q: variant_index.search_embedding({"hash": q["hash"]}, k=10), variant_queries
        )
    steps["baseline: numpy matvec + argpartition, 512-d"] = per_query(
        lambda q: np.argpartition(-(vectors @ q["semantic"]), 10)[:10]
    )
    steps["baseline: numpy popcount table, hash"] = per_query(
        lambda q: np.argpartition(-hamming_similarity(codes, np.broadcast_to(q["hash"].ravel(), codes.shape)), 10)[:10]
    )
    result = medians(steps, args.repeat)

    print(f"{args.items:,} items, {args.queries} queries x {args.repeat} rounds, load average {os.getloadavg()[0]:.1f}\n")
    print(f"add_embeddings: {build_s:.2f} s; save: {save_s:.2f} s ({size_mb:.0f} MB); load: {load_s:.2f} s; "
          f"add_embeddings with {VARIANTS.n_variants} hash variants: {variant_build_s:.2f} s\n")
    print("| query | ms per query |")
    print("|---|---|")
    per = {name: total / args.queries for name, total in result.items()}
    for name, ms in per.items():
        print(f"| {name} | {ms:.2f} |")
    print()
    for n in (1, 2):
        print(f"blend / (hash + semantic), {n} thread: "
              f"{per[f'blend hash+semantic, k=10 (faiss {n} thread)'] / (per[f'hash, k=10 (faiss {n} thread)'] + per[f'semantic 512-d, k=10 (faiss {n} thread)']):.2f}x")
    print(f"semantic (1 thread) / numpy matvec baseline: "
          f"{per['semantic 512-d, k=10 (faiss 1 thread)'] / per['baseline: numpy matvec + argpartition, 512-d']:.2f}x")
    print(f"hash (1 thread) / numpy popcount baseline: "
          f"{per['hash, k=10 (faiss 1 thread)'] / per['baseline: numpy popcount table, hash']:.3f}x")


if __name__ == "__main__":
    main()
