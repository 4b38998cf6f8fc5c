"""Ray Data on one node against the single-machine path: embedding, exact dedup, the band plan's limits.

Side by side in one run (load average printed before each part):

1. **Embedding**: ``--images`` generated JPEGs (crops, flips, re-encodes and resizes of the
   shared dev photos, 96-320 px; written to a temporary folder, deleted after) embedded with
   the default robust hash by ``ImagePrism.embed_batch`` and by ``imageprism.ray.embed_dataset``
   on a local Ray cluster (``ray.init(num_cpus=N)``), codes checked equal.
2. **Dedup**: ``--codes`` synthetic 3 x 64-bit codes (``benchmarks/dedup_scale.py``'s: 90%
   random, 10% near copies) at each ``--thresholds``: the single-machine greedy pass
   (``greedy_labels``, multi-index hashing), the same band-plan kernels in one process
   (``columnar.dedup_codes``) and ``dedup_dataset`` on the cluster (twice: the first call
   starts Ray's worker processes, the second finds them running), labels checked equal;
   the band plan, the expected and the measured candidate pairs. A threshold the plan
   refuses at the default budget is reported as refused (and run with the budget raised
   when ``--force-budget`` is given).
3. **Scaling model**: per threshold (radius), the plan chosen, expected candidates per item
   as a function of n, and the largest n the plan accepts at the default budget.

Run:  python benchmarks/distributed.py [--images 10000] [--codes 1000000] [--thresholds 0.95,0.9] [--cpus 2]
      [--shuffle hash_shuffle]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from dedup_scale import hash_codes

from imageprism import ImagePrism
from imageprism._dedup import DedupColumn, greedy_labels
from imageprism.columnar.dedup import (
    DEFAULT_BUDGET,
    CodeLayout,
    band_keys,
    candidate_pairs,
    dedup_codes,
    plan_bands,
)
from imageprism.columnar.schema import DimensionField, embedding_schema, numpy_to_column
from imageprism.errors import DedupBudgetError

DEV = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "dev-images"
LAYOUT = CodeLayout(3, 8, 64)


def load() -> str:
    return "load average %.2f %.2f %.2f" % os.getloadavg()


def make_images(folder: Path, n: int) -> list[str]:
    from PIL import Image, ImageOps

    sources = [Image.open(p).convert("RGB") for p in sorted(DEV.iterdir()) if p.suffix.lower() in (".png", ".jpg", ".jpeg")]
    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        img = sources[i % len(sources)]
        w, h = img.size
        x, y = int(rng.integers(0, w // 4)), int(rng.integers(0, h // 4))
        img = img.crop((x, y, x + w * 3 // 4, y + h * 3 // 4))
        if rng.random() < 0.5:
            img = ImageOps.mirror(img)
        side = int(rng.integers(96, 320))
        img = img.resize((side, max(16, side * img.size[1] // img.size[0])))
        path = folder / f"img{i:06d}.jpg"
        img.save(path, quality=int(rng.integers(60, 95)))
        paths.append(str(path))
    return paths


def bench_embedding(ray: object, n: int, cpus: int) -> None:
    import imageprism.ray as ipr

    folder = Path(tempfile.mkdtemp(prefix="imageprism-distributed-"))
    try:
        paths = make_images(folder, n)
        print(f"\n## Embedding {n} generated JPEGs (default robust hash), {load()}")
        t = time.perf_counter()
        ref = ImagePrism().embed_batch(paths)
        single = time.perf_counter() - t
        t = time.perf_counter()
        ds = ray.data.from_items([{"path": p, "order": i} for i, p in enumerate(paths)])  # type: ignore[attr-defined]
        out = ipr.embed_dataset(ds, batch_size=64, concurrency=cpus).materialize()
        got = {}
        for batch in out.select_columns(["order", "hash"]).iter_batches(batch_size=None, batch_format="pyarrow"):
            got.update(zip(batch.column("order").to_pylist(), batch.column("hash").to_pylist()))
        distributed = time.perf_counter() - t
        same = all(got[i] == e["hash"].tobytes() for i, e in enumerate(ref.embeddings))
        print("| path | seconds | images/s |\n|---|---|---|")
        print(f"| ImagePrism.embed_batch (one process, prefetch thread) | {single:.1f} | {n / single:.0f} |")
        print(f"| ray embed_dataset, {cpus} actors (incl. actor start) | {distributed:.1f} | {n / distributed:.0f} |")
        print(f"ray / single time: {distributed / single:.2f}x; codes identical: {same}; {load()}")
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def measured_candidates(codes: np.ndarray, threshold: float) -> tuple[int, int]:
    """(key rows, candidate pairs) of the band plan on these codes, counted in one process."""
    plan = plan_bands(LAYOUT, threshold, len(codes), budget=float("inf"))
    keys, _, base = band_keys(codes, plan)
    r, _ = candidate_pairs(keys, base, max_pairs=float("inf"))
    return len(keys), len(r)


def ray_dedup(ray: object, blocks: list, n: int, threshold: float, budget: float, shuffle: str) -> tuple[float, np.ndarray]:
    """Seconds and labels of one ``dedup_dataset`` call, its output read back on the driver."""
    import imageprism.ray as ipr

    start = time.perf_counter()
    out = ipr.dedup_dataset(ray.data.from_arrow(blocks), threshold=threshold, order_by="order", budget=budget,  # type: ignore[attr-defined]
                            shuffle_strategy=shuffle)
    labels = np.empty(n, np.int64)
    for batch in out.select_columns(["order", "representative"]).iter_batches(batch_size=None, batch_format="pyarrow"):
        labels[batch.column("order").to_numpy()] = batch.column("representative").to_numpy()
    return time.perf_counter() - start, labels


def bench_dedup(ray: object, n: int, thresholds: list[float], force: bool, shuffle: str) -> None:
    import pyarrow as pa

    codes = hash_codes(n)
    field = DimensionField("hash", "bits", (3, 8), 64, 1)
    hash_field = embedding_schema([field]).field("hash")
    table = pa.table({"order": np.arange(n), "hash": numpy_to_column(list(codes), field)},
                     schema=pa.schema([pa.field("order", pa.int64()), hash_field]))
    blocks = [table.slice(s, n // 8 + 1) for s in range(0, n, n // 8 + 1)]
    print(f"\n## Exact dedup of {n:,} codes (3 x 64 bits, 10% near copies)")
    print("| threshold | radius | plan | single-machine greedy (s) | band kernels, one process (s) | "
          "ray dedup_dataset (s) | ray / single | ray again, workers warm (s) | labels equal | expected candidates | "
          "measured candidates |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for t in thresholds:
        print(f"<!-- {load()} -->")
        try:
            plan = plan_bands(LAYOUT, t, n)
            budget = DEFAULT_BUDGET
        except DedupBudgetError as exc:
            print(f"| {t} | {LAYOUT.radius(t)} | refused at the default budget: {exc} |")
            if not force:
                continue
            budget = float("inf")
            plan = plan_bands(LAYOUT, t, n, budget=budget)
        start = time.perf_counter()
        ref = greedy_labels([DedupColumn("hash", "bits", codes, bits_per_row=64)], t)
        single = time.perf_counter() - start
        start = time.perf_counter()
        kernels = dedup_codes(codes, np.arange(n), LAYOUT, t, budget=budget)
        in_process = time.perf_counter() - start
        (distributed, labels), (warm, again) = (ray_dedup(ray, blocks, n, t, budget, shuffle) for _ in range(2))
        keys, cands = measured_candidates(codes, t)
        expected = plan.candidates_per_item(n) * n
        equal = bool(np.array_equal(ref, kernels) and np.array_equal(ref, labels) and np.array_equal(ref, again))
        print(f"| {t} | {plan.radius} | {plan.bands} bands x {min(plan.widths)}-{max(plan.widths)} bits, {plan.flips} flips, "
              f"{keys / n:.0f} keys/item | {single:.1f} | {in_process:.1f} | {distributed:.1f} | {distributed / single:.2f}x | "
              f"{warm:.1f} | {equal} | {expected:,.0f} | {cands:,} |")
    print(f"<!-- {load()} -->")


def largest_n(layout: CodeLayout, threshold: float, budget: float = DEFAULT_BUDGET) -> str:
    lo, hi = 1, 10**12
    while lo < hi:
        mid = (lo + hi + 1) // 2
        try:
            plan_bands(layout, threshold, mid, budget=budget)
            lo = mid
        except DedupBudgetError:
            hi = mid - 1
    return "> 10^12" if lo == 10**12 else f"{lo:,}"


def scaling_model(thresholds: list[float]) -> None:
    print(f"\n## Scaling model (random codes; budget {DEFAULT_BUDGET:g} candidates per item)")
    print("| codes | threshold | radius | plan at n = 10^6 | keys/item | candidates/item at 10^5 | at 10^6 | at 10^7 | "
          "largest n accepted |")
    print("|---|---|---|---|---|---|---|---|---|")
    robust = CodeLayout(48, 8, 64, 16)
    for layout, name, ts in ((LAYOUT, "3 x 64 bits", thresholds), (robust, "robust, 16 variants", [0.95, 0.9, 0.85])):
        for t in ts:
            plan = plan_bands(layout, t, 10**6, budget=float("inf"))
            per = [plan.candidates_per_item(n) for n in (10**5, 10**6, 10**7)]
            print(f"| {name} | {t} | {plan.radius} | {plan.bands} bands of {min(plan.widths)}-{max(plan.widths)} bits, "
                  f"{plan.flips} flips | {plan.keys_per_item} | {per[0]:.3g} | {per[1]:.3g} | {per[2]:.3g} | "
                  f"{largest_n(layout, t)} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=10_000)
    parser.add_argument("--codes", type=int, default=1_000_000)
    parser.add_argument("--thresholds", default="0.95,0.9")
    parser.add_argument("--cpus", type=int, default=2)
    parser.add_argument("--force-budget", action="store_true", help="run refused thresholds with an unlimited budget")
    parser.add_argument("--skip", default="", help="comma list of parts to skip: embed,dedup,model")
    parser.add_argument("--shuffle", default="sort_shuffle_pull_based", help="dedup_dataset's shuffle_strategy (e.g. hash_shuffle)")
    args = parser.parse_args()
    skip = set(filter(None, args.skip.split(",")))
    thresholds = [float(t) for t in args.thresholds.split(",")]
    print(f"# benchmarks/distributed.py, {os.cpu_count()} cores, {load()}")
    if "model" not in skip:
        scaling_model([0.99, 0.97, 0.95, 0.93, 0.9, 0.88, 0.85])
    if skip >= {"embed", "dedup"}:
        return
    import ray

    ray.init(num_cpus=args.cpus, include_dashboard=False, log_to_driver=False, configure_logging=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    try:
        if "embed" not in skip:
            bench_embedding(ray, args.images, args.cpus)
        if "dedup" not in skip:
            bench_dedup(ray, args.codes, thresholds, args.force_budget, args.shuffle)
    finally:
        ray.shutdown()


if __name__ == "__main__":
    main()
