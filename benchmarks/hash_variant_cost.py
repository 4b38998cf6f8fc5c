"""Cost of the hash variant rows in search and dedup: the default beside the pre-issue-18 default.

The default hash (``HashConfig()``: 26 variants, 78 rows of 64 bits since issue 18) and the
earlier default (``HashConfig(rotations=(), shifted_crops=())``: 16 variants, 48 rows),
side by side in one run on the same synthetic items (clustered random codes shaped like
each configuration's embeddings, from ``index_latency.synthetic``; no images needed):

* index query: ``ImageIndex.search_embedding(q, k=10)`` for planted near-duplicates
  (each query a perturbed copy of an indexed item, checked to come first), faiss on 1
  thread, median over ``--repeat`` rounds of all queries, the configurations taking turns;
* dedup: ``ImagePrism.dedup_embeddings`` of all items at 0.9 (best of ``--repeat``).

Random codes are a stand-in: real variant rows of one image are correlated, so the
candidate counts of real collections differ; the ratio shows what the extra rows cost.

Run:  python benchmarks/hash_variant_cost.py [--items 20000] [--queries 20] [--repeat 3]
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse
import statistics
import time

import faiss
import numpy as np
from index_latency import perturbed, synthetic

from imageprism import HashConfig, ImageIndex, ImagePrism

CONFIGS = {"default (26 variants)": HashConfig(), "pre-issue-18 (16 variants)": HashConfig(rotations=(), shifted_crops=())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=20_000)
    parser.add_argument("--queries", type=int, default=20)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    faiss.omp_set_num_threads(1)
    print(f"load average at start: {', '.join(f'{x:.1f}' for x in os.getloadavg())}")
    ids = [f"item-{i}" for i in range(args.items)]
    rng = np.random.default_rng(1)
    targets = rng.choice(args.items, args.queries, replace=False)
    setups = {}
    for name, config in CONFIGS.items():
        codes, vectors = synthetic(args.items, seed=2, rows=config.n_variants * len(config.algorithms))
        prism = ImagePrism(config={"hash": config})
        index = ImageIndex(prism)
        start = time.perf_counter()
        index.add_embeddings([{"hash": h} for h in codes], ids=ids)
        build = time.perf_counter() - start
        queries = [{"hash": perturbed(codes[t], vectors[t], rng)["hash"]} for t in targets]
        for q, t in zip(queries, targets):
            assert index.search_embedding(q, k=10)[0].position == t
        setups[name] = (prism, index, queries, [{"hash": h} for h in codes], build)
    query_ms: dict[str, list[float]] = {name: [] for name in CONFIGS}
    dedup_s: dict[str, list[float]] = {name: [] for name in CONFIGS}
    for _ in range(args.repeat):
        for name, (prism, index, queries, embeddings, _) in setups.items():
            start = time.perf_counter()
            for q in queries:
                index.search_embedding(q, k=10)
            query_ms[name].append((time.perf_counter() - start) * 1000 / len(queries))
            start = time.perf_counter()
            prism.dedup_embeddings(embeddings, threshold=0.9)
            dedup_s[name].append(time.perf_counter() - start)
    print(f"{args.items:,} items, {args.queries} queries x {args.repeat} rounds\n")
    print("| configuration | rows | add_embeddings (s) | ms per query, k=10 | dedup (s) |")
    print("|---|---|---|---|---|")
    for name, config in CONFIGS.items():
        print(f"| {name} | {config.n_variants * len(config.algorithms)} | {setups[name][4]:.2f} | "
              f"{statistics.median(query_ms[name]):.2f} | {min(dedup_s[name]):.2f} |")
    new, old = CONFIGS
    print(f"\nratios default / pre-issue-18: query {statistics.median(query_ms[new]) / statistics.median(query_ms[old]):.2f}x, "
          f"dedup {min(dedup_s[new]) / min(dedup_s[old]):.2f}x")
    print(f"load average at end: {', '.join(f'{x:.1f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
