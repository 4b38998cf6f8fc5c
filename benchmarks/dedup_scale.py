"""Dedup at scale: the index-backed exact greedy pass against the brute-force greedy pass.

On precomputed embeddings (no images, no models), seeded:

* ``robust``: the default robust hash, 26 variant groups x 3 x 64 bits per item
  (:func:`robust_codes`: variant groups derived from the whole image at the rates
  measured on real photos, 10% near copies made by re-encoding, mirroring, cropping
  or rotating an earlier item), threshold 0.9 (some group of one item within 19 of
  192 bits of the other's whole image). Candidates per item: rows of the variant table
  read per item, and rows verified on every word.
* ``hash``: plain hashes, 3 x 64-bit codes per item (``HashConfig.plain()``),
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

Run:  PYTHONPATH=. python benchmarks/dedup_scale.py [--robust-sizes 10000,100000,1000000]
          [--hash-sizes 20000,100000,1000000] [--vector-sizes 10000,100000]
          [--brute-max-robust 10000] [--brute-max-hash 100000] [--brute-max-vector 20000]
      PYTHONPATH=. python benchmarks/dedup_scale.py --per-query 1000000   (CPU time per query, two chunk plans)
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import numpy as np

from imageprism import _dedup as dedup
from imageprism._dedup import DedupColumn, greedy_labels
from imageprism._search.range import range_finder

THRESHOLD = 0.9
GOALS = {("hash", 100_000): 5.0, ("hash", 1_000_000): 120.0, ("vector", 100_000): 30.0, ("robust", 1_000_000): 120.0}
VARIANTS = 26


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


#: fraction of bits in which each variant group of HashConfig.robust() differs from its parent group,
#: averaged over the 37 shared dev photos (the mirrored crops are measured against the mirror, the
#: other variants against the whole image); printed by ``measured_variant_rates()``
VARIANT_RATES = (
    0.0, 0.469, 0.486, 0.514, 0.461, 0.504, 0.502, 0.456,  # whole image: identity, mirror, flip, rot180, transpose, rot90, rot270, transverse
    0.143, 0.14, 0.327, 0.326, 0.416, 0.42, 0.44, 0.44,  # centre crops 0.9, 0.75, 0.6, 0.5 and their mirrors
    0.14, 0.145,  # rotations +4, -4 degrees
    0.403, 0.398, 0.405, 0.394, 0.406, 0.41, 0.386, 0.423,  # 0.7 crops shifted in 8 directions
)
#: the group each variant is derived from (the mirrored crops from the mirror)
VARIANT_PARENTS = (0,) * 9 + (1,) + (0, 1) * 3 + (0,) * 10


def measured_variant_rates() -> list[float]:
    """The per-variant rates of VARIANT_RATES, measured again on the dev photos (the mirrored crops against the mirror)."""
    from pathlib import Path

    from PIL import Image

    from imageprism.dimensions.hash import HashConfig, compute_hashes

    config = HashConfig.robust()
    folder = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "dev-images"
    photos = sorted(p for p in folder.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    codes = np.stack([compute_hashes(Image.open(p).convert("L"), config=config) for p in photos])
    bits = np.unpackbits(codes, axis=-1).reshape(len(codes), config.n_variants, -1)
    return [float(np.mean(bits[:, v] != bits[:, parent])) for v, parent in enumerate(VARIANT_PARENTS)]


def _bernoulli(rng: np.random.Generator, shape: tuple[int, ...], p: float) -> np.ndarray:
    """uint64 words whose bits are 1 with probability ``p`` (to 1/256): p's binary digits, AND/OR of random words."""
    out = np.zeros(shape, np.uint64)
    level = round(p * 256)
    for k in range(8):  # from the last binary digit of p to the first
        word = rng.integers(0, 2**64, shape, dtype=np.uint64, endpoint=False)
        out = (out | word) if (level >> k) & 1 else (out & word)
    return out


def _derive_variants(identity: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Words ``(n, 26, 3)`` of each variant group: its parent's bits with VARIANT_RATES of them flipped."""
    words = np.empty((len(identity), len(VARIANT_RATES), 3), np.uint64)
    words[:, 0] = identity
    for v in range(1, len(VARIANT_RATES)):  # parents come first
        words[:, v] = words[:, VARIANT_PARENTS[v]] ^ _bernoulli(rng, identity.shape, VARIANT_RATES[v])
    return words


#: the edits a near copy is made with, and their shares: (variant group its whole image becomes, share)
COPY_EDITS = ((0, 0.5), (1, 0.2), (8, 0.1), (16, 0.1), (5, 0.1))  # re-encode, mirror, crop 0.9, rotate +4, rot90
#: a mirror's group for each group (the whole image and the centre crops have mirrored twins)
_MIRROR = np.array([1, 0, *range(2, 8), 9, 8, 11, 10, 13, 12, 15, 14, *range(16, 26)])


def robust_codes(n: int, seed: int = 0, copies: float = 0.1) -> np.ndarray:
    """``n`` synthetic default robust hashes ``(n, 78, 8)``: 26 variant groups x (pHash, dHash, aHash) x 64 bits.

    Originals: a uniformly random whole-image code; every other variant group is its
    parent group (the whole image, or the mirror for the mirrored crops) with the share
    of bits flipped that real photos show (:data:`VARIANT_RATES`: about 14% for a 0.9 crop
    or a 4-degree rotation, 33-44% for smaller or shifted crops, about 50% for the other
    flips and rotations). A ``copies`` share of the items are near copies of an earlier
    item (copies of copies make chains and clusters), made with one of
    :data:`COPY_EDITS`: a re-encode keeps every group, a mirror swaps each group with its
    mirrored twin, and a crop, small rotation or 90-degree rotation takes the source's
    group of that edit as its whole image and derives its own groups from it; then 0-4%
    of all bits flip (encoding noise).
    """
    rng = np.random.default_rng(seed)
    words = np.empty((n, len(VARIANT_RATES), 3), np.uint64)
    for lo in range(0, n, 65536):
        hi = min(n, lo + 65536)
        words[lo:hi] = _derive_variants(rng.integers(0, 2**64, (hi - lo, 3), dtype=np.uint64, endpoint=False), rng)
    is_copy = rng.random(n) < copies
    is_copy[0] = False
    items = np.flatnonzero(is_copy)
    sources = (rng.random(len(items)) * items).astype(np.int64)  # an earlier item
    edits = np.array([e for e, _ in COPY_EDITS])[rng.choice(len(COPY_EDITS), len(items), p=[w for _, w in COPY_EDITS])]
    noise = rng.integers(0, 5, len(items)) / 100.0
    done = ~is_copy
    while len(items):  # in waves: a copy is made once its source (maybe a copy) is final
        ready = done[sources]
        i, src, edit, rate = items[ready], sources[ready], edits[ready], noise[ready]
        made = words[src]
        mirror = edit == 1
        made[mirror] = made[mirror][:, _MIRROR]
        derived = (edit != 0) & ~mirror
        made[derived] = _derive_variants(made[derived, edit[derived]], rng)
        for level in np.unique(rate).tolist():
            pick = rate == level
            made[pick] ^= _bernoulli(rng, made[pick].shape, level)
        words[i] = made
        done[i] = True
        items, sources, edits, noise = items[~ready], sources[~ready], edits[~ready], noise[~ready]
    return words.view(np.uint8).reshape(n, 3 * len(VARIANT_RATES), 8)


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


def brute_variants(codes: np.ndarray, threshold: float) -> np.ndarray:
    """Every pair found by exhaustive search, then the greedy pass over them.

    faiss ``IndexBinaryFlat`` (a C++ popcount scan of every row, no index) over every
    variant group of every item, searched with each item's whole image within ``D``
    bits: every pair where some group of one item is within ``D`` of the other's whole
    image. The pairs are scored exactly and the greedy pass (each item joins its first
    matching representative) runs over those reaching the threshold.
    """
    import faiss

    from imageprism.columnar.dedup import greedy_from_edges

    n = len(codes)
    column = DedupColumn("hash", "bit_variants", codes, bits_per_row=64, variants=VARIANTS)
    rows = np.ascontiguousarray(codes.reshape(n * VARIANTS, 24))
    index = faiss.IndexBinaryFlat(192)
    index.add(rows)
    max_dist = int(np.floor(192 * (1 - threshold) + 1e-6))
    lims, _, found = index.range_search(np.ascontiguousarray(rows[::VARIANTS]), max_dist + 1)  # distances < radius
    x = np.repeat(np.arange(n), np.diff(lims.astype(np.int64)))
    y = found.astype(np.int64) // VARIANTS
    i, j = np.minimum(x, y), np.maximum(x, y)
    pairs = np.unique(i[i != j] * n + j[i != j])
    i, j = pairs // n, pairs % n
    keep = column.pair_scores(i, j) >= threshold
    return greedy_from_edges(n, i[keep], j[keep])


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
    if kind == "robust":
        data = robust_codes(n)
        column = DedupColumn(kind, "bit_variants", data, bits_per_row=64, variants=VARIANTS)
    elif kind == "hash":
        data = hash_codes(n)
        column = DedupColumn(kind, "bits", data, bits_per_row=64)
    else:
        data = vectors(n)
        column = DedupColumn(kind, "vector", data)
    finders: list[object] = []

    def recorded(*args: object, **kwargs: object) -> object:  # keep the finder to read its counters
        finders.append(range_finder(*args, **kwargs))  # type: ignore[arg-type]
        return finders[-1]

    load = os.getloadavg()[0]
    dedup.range_finder = recorded  # type: ignore[assignment]
    start = time.perf_counter()
    try:
        labels = greedy_labels([column], THRESHOLD)
    finally:
        dedup.range_finder = range_finder
    index_s = time.perf_counter() - start
    row: dict[str, object] = {
        "kind": kind, "n": n, "index_s": index_s, "unique": len(np.unique(labels)), "brute_s": None, "equal": None,
        "load": f"{load:.1f}-{os.getloadavg()[0]:.1f}", "candidates": None,
    }
    index = getattr(finders[0], "index", None) if finders else None
    if index is not None:
        row["candidates"] = f"{index.candidates / n:.0f} read, {index.verified / n:.1f} verified"
    if n <= brute_max:
        brute = {"robust": brute_variants, "hash": brute_hash, "vector": brute_vector}[kind]
        start = time.perf_counter()
        row["equal"] = bool(np.array_equal(labels, brute(data, THRESHOLD)))
        row["brute_s"] = time.perf_counter() - start
    return row


def per_query(n: int, queries: int = 4096) -> None:
    """CPU time per query of the robust variant table at ``n`` items: the cost model's chunk plan and 10 chunks with one flip."""
    from imageprism._search import hamming

    queries = min(queries, n)
    words, nbits = hamming.packed_words(robust_codes(n), VARIANTS, 64)
    radius = int(np.floor(192 * (1 - THRESHOLD) + 1e-6))
    rates = hamming.near_rates(list(words.T.copy()), nbits)  # what ChunkIndex plans with: buckets measured on the table
    plans = {"cost model": hamming.chunk_plan(nbits, radius, len(words), n, rates), "1 flip": ((20, 1),) * 2 + ((19, 1),) * 8}
    print(f"\n## one table of {n:,} x {VARIANTS} rows, {queries} whole-image queries on one thread, load {os.getloadavg()[0]:.1f}")
    print("| plan | build CPU s | CPU us per query | wall us per query | rows read per query |")
    print("|---|---|---|---|---|")
    original = hamming.chunk_plan
    for name, plan in plans.items():
        hamming.chunk_plan = lambda *args, plan=plan: plan  # type: ignore[misc]
        try:
            cpu = time.process_time()
            index = hamming.ChunkIndex(words, nbits, radius, queries=n)
            build = time.process_time() - cpu
        finally:
            hamming.chunk_plan = original
        rows = index.rows(np.arange(queries) * VARIANTS)
        cpu, wall = time.process_time(), time.perf_counter()
        _, _, read, _ = index._search(rows)
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        print(f"| {name} {plan} | {build:.1f} | {1e6 * cpu / queries:.0f} | {1e6 * wall / queries:.0f} | {read / queries:.0f} |", flush=True)
        del index


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--robust-sizes", default="10000,100000,1000000")
    parser.add_argument("--hash-sizes", default="20000,100000,1000000")
    parser.add_argument("--vector-sizes", default="10000,20000,100000")
    parser.add_argument("--brute-max-robust", type=int, default=10_000)
    parser.add_argument("--brute-max-hash", type=int, default=100_000)
    parser.add_argument("--brute-max-vector", type=int, default=20_000)
    parser.add_argument("--per-query", type=int, default=0, help="only: CPU time per query of the robust table at this size")
    args = parser.parse_args()
    if args.per_query:
        per_query(args.per_query)
        return
    sizes = [("robust", int(s), args.brute_max_robust) for s in args.robust_sizes.split(",") if s]
    sizes += [("hash", int(s), args.brute_max_hash) for s in args.hash_sizes.split(",") if s]
    sizes += [("vector", int(s), args.brute_max_vector) for s in args.vector_sizes.split(",") if s]
    print(f"# dedup_scale: threshold {THRESHOLD}, {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}, "
          f"numpy {np.__version__}, Python {platform.python_version()}")
    print("| embeddings | n | unique | index (s) | candidates per item | brute force (s) | brute / index | labels equal | load | goal |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    names = {"robust": "robust hash, 26 x 3 x 64 bits", "hash": "plain hash, 3 x 64 bits", "vector": "512-d vectors"}
    for kind, n, brute_max in sizes:
        r = run(kind, n, brute_max)
        brute = "-" if r["brute_s"] is None else f"{r['brute_s']:.2f}"
        ratio = "-" if r["brute_s"] is None else f"{r['brute_s'] / r['index_s']:.1f}x"  # type: ignore[operator]
        equal = "-" if r["equal"] is None else ("yes" if r["equal"] else "NO")
        goal = GOALS.get((kind, n))
        goal_text = "-" if goal is None else f"<= {goal:g} s: {'met' if r['index_s'] <= goal else 'MISSED'}"  # type: ignore[operator]
        print(f"| {names[kind]} | {n:,} | {r['unique']:,} | {r['index_s']:.2f} | {r['candidates'] or '-'} | {brute} | {ratio} | "
              f"{equal} | {r['load']} | {goal_text} |", flush=True)


if __name__ == "__main__":
    main()
