"""Is LanceDB output worthwhile? Its native Hamming search on packed codes, against a numpy scan.

Issue 16 asked for LanceDB output "if measured worthwhile" (its Hamming search on packed
bits suits our codes). Side by side in one run, on ``--codes`` synthetic 3 x 64-bit codes
(``dedup_scale.py``'s): writing them as Parquet and as a LanceDB table, then the exact 10
nearest codes of ``--queries`` of them by LanceDB's flat Hamming search, by a numpy popcount
scan (distances checked equal), and by LanceDB's IVF_FLAT index on the binary vectors
(build time, query time, and the share of the exact 10 nearest distances it returns).

Not a dependency of imageprism: ``pip install lancedb`` to run it.

Run:  python benchmarks/lance_hamming.py [--codes 1000000] [--queries 200]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parent))
from dedup_scale import hash_codes


def load() -> str:
    return "load average %.2f %.2f %.2f" % os.getloadavg()


def main() -> None:
    import lancedb

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--codes", type=int, default=1_000_000)
    parser.add_argument("--queries", type=int, default=200)
    args = parser.parse_args()
    n = args.codes
    codes = hash_codes(n).reshape(n, 24)
    queries = np.random.default_rng(1).choice(n, args.queries, replace=False)
    print(f"# benchmarks/lance_hamming.py, {n:,} codes of 192 bits, {args.queries} queries, {load()}")
    vectors = pa.FixedSizeListArray.from_arrays(pa.array(codes.ravel(), pa.uint8()), 24)
    with tempfile.TemporaryDirectory(prefix="imageprism-lance-") as root:
        start = time.perf_counter()
        hashes = pa.FixedSizeBinaryArray.from_buffers(pa.binary(24), n, [None, pa.py_buffer(codes.tobytes())])
        pq.write_table(pa.table({"order": np.arange(n), "hash": hashes}), f"{root}/codes.parquet")
        parquet_write = time.perf_counter() - start
        start = time.perf_counter()
        table = lancedb.connect(root).create_table("codes", pa.table({"order": np.arange(n), "vector": vectors}))
        lance_write = time.perf_counter() - start

        def top10(query: int, nprobes: int | None = None) -> np.ndarray:
            search = table.search(codes[query]).distance_type("hamming").limit(10)
            if nprobes is not None:
                search = search.nprobes(nprobes)
            return np.sort(search.to_arrow().column("_distance").to_numpy()).astype(np.int64)

        start = time.perf_counter()
        flat = [top10(i) for i in queries]
        lance_flat = (time.perf_counter() - start) / len(queries)
        words = codes.view(np.uint64)
        start = time.perf_counter()
        exact = []
        for i in queries:
            d = np.bitwise_count(words ^ words[i]).sum(axis=1, dtype=np.int64)
            exact.append(np.sort(d[np.argpartition(d, 10)[:10]]))
        numpy_scan = (time.perf_counter() - start) / len(queries)
        same = all(np.array_equal(a, b) for a, b in zip(flat, exact))
        start = time.perf_counter()
        table.create_index(metric="hamming", vector_column_name="vector", index_type="IVF_FLAT", num_partitions=256)
        build = time.perf_counter() - start
        start = time.perf_counter()
        approx = [top10(i, nprobes=16) for i in queries]
        lance_ivf = (time.perf_counter() - start) / len(queries)
        recall = float(np.mean([np.mean(np.isin(a, b)) for a, b in zip(approx, exact)]))
    print("| step | LanceDB | numpy / Parquet |\n|---|---|---|")
    print(f"| write {n:,} codes (s) | {lance_write:.2f} | {parquet_write:.2f} (Parquet) |")
    print(f"| exact 10 nearest, flat scan (ms per query) | {lance_flat * 1e3:.1f} | {numpy_scan * 1e3:.1f} (popcount scan) |")
    print(f"| IVF_FLAT, 256 lists: build (s) / query, nprobes 16 (ms) / share of exact distances | "
          f"{build:.1f} / {lance_ivf * 1e3:.1f} / {recall:.2f} | - |")
    print(f"flat distances equal: {same}; {load()}")


if __name__ == "__main__":
    main()
