"""Approximate search for vectors: recall and speed against the exact paths, side by side in one run.

Data (seeded, unit float32):

* ``clip``: 512-d shaped like CLIP image embeddings: a shared mean direction (mean
  pairwise cosine about 0.5), topic clusters on a decaying spectrum (same-topic pairs
  about 0.68), and 10% near copies of an earlier item at cosine 0.9-0.99 (copies of
  copies too, so clusters form and some pairs sit just under 0.9);
* ``dino``: 384-d, the same recipe with a mean pairwise cosine about 0.1 (DINOv2-like);
* ``standins``: the tiny random-weight CLIP and DINOv2 stand-ins of the tests
  (``tests/data/parity``) on the 37 dev photos and 15 transforms of each.

Sections:

1. **candidates** (size ``--variants-size``): faiss structures over 90% of the
   vectors, queried with the other 10%: build seconds, bytes per vector, ms per
   query (k=10, one query at a time), recall@10 after exact re-ranking from the
   float vectors, and the recall of the near-duplicate pairs (cosine >= 0.9) among
   the 16 nearest candidates. Flat (exact), IVF-Flat, IVF-SQ8, IVF-PQ 4-bit
   fast-scan (the one the index uses), HNSW32.
2. **index** (``--index-sizes``): the chosen structure (:class:`imageprism._search.ann.AnnIndex`)
   against the exact flat scan of :class:`~imageprism.ImageIndex`: build seconds,
   ms per query, recall@10.
3. **dedup** (``--dedup-sizes``): ``greedy_labels`` exact (up to ``--exact-max``)
   and approximate (``exact=False``: the near pairs of all inputs through a cell
   partition, :func:`imageprism._search.cells.near_pairs`): seconds, pair recall (pairs grouped by the
   exact pass also grouped by the approximate one) and pair precision; every
   grouped input is checked to reach the threshold with its representative. Above
   ``--exact-max``: ``--sample`` inputs' labels are checked against the exact first
   representative among the approximate run's representatives before them.
4. **coverage** (``--dedup-sizes``): the cells of the approximate dedup over the same
   vectors; of the pairs at cosine >= 0.9 of ``--sample`` vectors (found exactly), the
   share with one vector living in a cell the other probes (the pairs it can find).
5. **standins**: dedup of the stand-ins' vectors, exact vs ``exact=False``.

Run:  python benchmarks/ann_recall.py [--dedup-sizes 100000,1000000] [--dino-sizes 20000]
          [--index-sizes 1000000] [--variants-size 100000] [--exact-max 100000] [--queries 200]
          [--threads 1] [--skip candidates,index,dedup,coverage,standins]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import faiss
import numpy as np

from imageprism._dedup import DedupColumn, greedy_labels
from imageprism._search import ann as _ann
from imageprism._search.ann import AnnParams

HERE = Path(__file__).resolve().parent
THRESHOLD = 0.9
SHAPES = {"clip": (512, 0.5), "dino": (384, 0.1)}


def clustered(n: int, d: int, mean_cos: float, seed: int = 0, dup_frac: float = 0.1, topics: int = 2000) -> np.ndarray:
    """Unit vectors: a shared mean direction, topic clusters on a decaying spectrum, near copies."""
    rng = np.random.default_rng(seed)
    rotation = np.linalg.qr(rng.standard_normal((d, d)))[0].astype(np.float32)
    spectrum = (np.arange(1, d + 1) ** -0.4).astype(np.float32)
    spectrum /= np.sqrt((spectrum**2).sum())
    centres = rng.standard_normal((topics, d), dtype=np.float32) * spectrum
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    mean = np.zeros(d, np.float32)
    mean[-1] = 1.0  # the weakest axis of the spectrum: the shared direction stands apart
    a = np.float32(np.sqrt(mean_cos))
    out = np.empty((n, d), np.float32)
    step = 65536
    for s in range(0, n, step):
        m = min(step, n - s)
        z = 0.6 * centres[rng.integers(topics, size=m)] + 0.8 * rng.standard_normal((m, d), dtype=np.float32) * spectrum
        z[:, -1] = 0
        z /= np.linalg.norm(z, axis=1, keepdims=True)
        out[s : s + m] = (a * mean + np.sqrt(1 - a * a) * z) @ rotation.T
    copies = np.flatnonzero(rng.random(n) < dup_frac)
    copies = copies[copies > 0]
    sources = (rng.random(len(copies)) * copies).astype(np.int64)  # any earlier item, copies included
    for s in range(0, len(copies), step):  # a source may itself be a copy: clusters form
        i, j = copies[s : s + step], sources[s : s + step]
        base = out[j]
        u = rng.standard_normal(base.shape, dtype=np.float32)
        u -= np.einsum("ij,ij->i", u, base)[:, None] * base
        u /= np.linalg.norm(u, axis=1, keepdims=True)
        c = rng.uniform(0.9, 0.99, len(i)).astype(np.float32)[:, None]
        out[i] = c * base + np.sqrt(1 - c * c) * u
    out /= np.linalg.norm(out, axis=1, keepdims=True)
    return out


def load() -> str:
    return f"{os.getloadavg()[0]:.1f}"


def exact_top(base: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    out = np.empty((len(queries), k), np.int64)
    for s in range(0, len(queries), 256):
        sims = queries[s : s + 256] @ base.T
        top = np.argpartition(-sims, k, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(sims, top, 1), axis=1)
        out[s : s + 256] = np.take_along_axis(top, order, 1)
    return out


def rerank(base: np.ndarray, query: np.ndarray, candidates: np.ndarray, k: int) -> np.ndarray:
    candidates = candidates[candidates >= 0]
    sims = base[candidates] @ query
    return candidates[np.argsort(-sims, kind="stable")[:k]]


# -- 1. candidates: faiss structures side by side ------------------------------------------


def candidates_section(name: str, x: np.ndarray, queries: int) -> None:
    faiss.omp_set_num_threads(_ann.THREADS)  # the structures compared on the searches' thread count
    n, d = x.shape
    split = n - queries
    base, q = x[:split], x[split:]
    truth = exact_top(base, q, 10)
    sims = q @ base.T
    dup_q, dup_r = np.nonzero(sims >= THRESHOLD)
    del sims
    nlist = AnnParams.for_size(split, d).nlist
    train = base[np.random.default_rng(0).choice(split, min(split, 32 * nlist), replace=False)]
    specs = {
        "flat (exact)": ("Flat", None, 0),
        "IVF-Flat": (f"IVF{nlist},Flat", "nprobe", 0),
        "IVF-SQ8 + re-rank": (f"IVF{nlist},SQ8", "nprobe", 100),
        "IVF-PQ4 fast-scan + re-rank": (f"IVF{nlist},PQ{d // 8}x4fs", "nprobe", 100),
        "HNSW32": ("HNSW32,Flat", "efSearch", 0),
    }
    print(f"\n## candidates: {name}, {split:,} x {d} indexed, {queries} queries, nlist {nlist}, load {load()}\n")
    print("| method | effort | build s | bytes/vector | query ms (k=10) | recall@10 | near-dup recall (16 cands) |")
    print("|---|---|---|---|---|---|---|")
    for label, (spec, knob, refine) in specs.items():
        index = faiss.index_factory(d, spec, faiss.METRIC_INNER_PRODUCT)
        start = time.perf_counter()
        if not index.is_trained:
            index.train(train)
        index.add(base)
        build = time.perf_counter() - start
        size = len(faiss.serialize_index(index)) / split
        efforts = {"nprobe": (max(nlist // 64, 4), nlist // 32, nlist // 8), "efSearch": (64, 256)}.get(knob or "", (0,))
        for effort in efforts:
            if knob == "nprobe":
                index.nprobe = effort
            elif knob == "efSearch":
                index.hnsw.efSearch = effort
            wide = max(refine, 16)
            start = time.perf_counter()
            hits = [rerank(base, q[i], index.search(q[i : i + 1], max(wide, 10))[1][0], 10) for i in range(len(q))]
            ms = (time.perf_counter() - start) / len(q) * 1e3
            recall = np.mean([len(set(h.tolist()) & set(t.tolist())) / 10 for h, t in zip(hits, truth)])
            _, found16 = index.search(q, 16)
            got = {(int(a), int(b)) for a, row in enumerate(found16) for b in row}
            dup = sum((int(a), int(b)) in got for a, b in zip(dup_q, dup_r)) / max(len(dup_q), 1)
            print(f"| {label} | {knob or '-'} {effort or ''} | {build:.1f} | {size:.0f} | {ms:.2f} | {recall:.4f} | {dup:.4f} ({len(dup_q)} pairs) |", flush=True)


# -- 2. index: ImageIndex exact vs approximate ------------------------------------------------


def index_section(name: str, x: np.ndarray, queries: int) -> None:
    from imageprism import ImageIndex, ImagePrism  # noqa: PLC0415
    from imageprism._search import topk  # noqa: PLC0415

    n, d = x.shape
    split = n - queries
    base, q = x[:split], x[split:]
    truth = exact_top(base, q, 10)
    items = {"semantic": base}  # stacked: no per-item objects
    ids = [str(i) for i in range(split)]
    prism = ImagePrism(dimensions=["semantic"])
    print(f"\n## index: {name}, {split:,} x {d}, {queries} single queries (ImageIndex.search_embedding, k=10), load {load()}\n")
    print("| method | build s | bytes/vector beyond the floats | query ms (k=10) | recall@10 | load |")
    print("|---|---|---|---|---|---|")
    for exact in (True, False):
        index = ImageIndex(prism, exact=exact)
        start = time.perf_counter()
        index.add_embeddings([{"semantic": v} for v in items["semantic"]], ids=ids)
        if not exact:
            index.search_embedding({"semantic": q[0]}, k=10)  # builds the approximate index (training included)
        build = time.perf_counter() - start
        settings = [(topk.QUERY_CELLS, topk.RERANK)] if exact else [(c, r) for c in (16, 8, 4) for r in (1000, 3000, 10000)]
        for divisor, rerank in settings:
            before = topk.QUERY_CELLS, topk.RERANK
            topk.QUERY_CELLS, topk.RERANK = divisor, rerank
            start = time.perf_counter()
            hits = [[int(h.id) for h in index.search_embedding({"semantic": v}, k=10)] for v in q]
            ms = (time.perf_counter() - start) / len(q) * 1e3
            topk.QUERY_CELLS, topk.RERANK = before
            recall = np.mean([len(set(h) & set(t.tolist())) / 10 for h, t in zip(hits, truth)])
            if exact:
                label, extra = "exact scan (exact=True)", "0"
            else:
                ann = index._searchers["semantic"].ann
                p = ann.params
                label = f"IVF{p.nlist}-PQ{p.m}x4fs, {p.nlist // divisor} cells probed, {rerank} re-ranked (exact=False)"
                extra = f"{p.m / 2 + 8 + (ann.centroids.nbytes + ann.codebook.nbytes) / split:.0f}"
            print(f"| {label} | {build:.1f} | {extra} | {ms:.2f} | {recall:.4f} | {load()} |", flush=True)
        if not exact:
            persist_row(index, prism, q)
        del index


def persist_row(index: object, prism: object, q: np.ndarray) -> None:
    """Save the approximate index, load it back, time its first query; its hits must not change."""
    import tempfile  # noqa: PLC0415

    from imageprism import ImageIndex  # noqa: PLC0415

    before = [index.search_embedding({"semantic": v}, k=10) for v in q[:20]]  # type: ignore[attr-defined]
    with tempfile.TemporaryDirectory(dir=".") as tmp:
        start = time.perf_counter()
        index.save(Path(tmp) / "index")  # type: ignore[attr-defined]
        save = time.perf_counter() - start
        start = time.perf_counter()
        loaded = ImageIndex.load(Path(tmp) / "index", prism=prism)  # type: ignore[arg-type]
        read = time.perf_counter() - start
        start = time.perf_counter()
        first = loaded.search_embedding({"semantic": q[0]}, k=10)
        first_s = time.perf_counter() - start
        same = [first] + [loaded.search_embedding({"semantic": v}, k=10) for v in q[1:20]] == before
    print(f"\nsaved (training included) in {save:.1f} s; loaded in {read:.1f} s; its first query "
          f"(encodes the codes with the saved training, no k-means) {first_s:.1f} s; 20 queries' hits "
          f"{'identical' if same else 'DIFFERENT'} after the round trip; load {load()}\n", flush=True)


# -- 3. dedup: greedy exact vs approximate -------------------------------------------------------


def pair_counts(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """(recall, precision) of the grouped pairs of ``b`` against those of ``a``."""

    def pairs(labels: np.ndarray) -> int:
        counts = np.unique(labels, return_counts=True)[1].astype(np.int64)
        return int((counts * (counts - 1) // 2).sum())

    joint = np.unique(a.astype(np.int64) * (len(a) + 1) + b, return_counts=True)[1].astype(np.int64)
    both = int((joint * (joint - 1) // 2).sum())
    return both / max(pairs(a), 1), both / max(pairs(b), 1)


def check_members(column: DedupColumn, labels: np.ndarray) -> float:
    """The lowest exact score of a member with its representative (1.0 when no groups)."""
    members = np.flatnonzero(labels != np.arange(len(labels)))
    scores = column.pair_scores(members, labels[members])
    return float(scores.min()) if len(scores) else 1.0


def sample_agreement(x: np.ndarray, column: DedupColumn, labels: np.ndarray, sample: int) -> float:
    """Share of sampled inputs whose label is the exact first representative (of this run) reaching the threshold."""
    n = len(labels)
    reps = np.flatnonzero(labels == np.arange(n))
    picks = np.sort(np.random.default_rng(7).choice(np.arange(n // 10, n), sample, replace=False))
    first = np.full(sample, n, np.int64)
    for s in range(0, len(reps), 65536):
        chunk = reps[s : s + 65536]
        q, r = np.nonzero(x[picks] @ x[chunk].T >= THRESHOLD - 1e-3)
        q, r = q[chunk[r] < picks[q]], chunk[r[chunk[r] < picks[q]]]
        ok = column.pair_scores(picks[q], r) >= THRESHOLD
        np.minimum.at(first, q[ok], r[ok])
    expected = np.where(first < n, first, picks)
    return float(np.mean(labels[picks] == expected))


def dedup_section(name: str, x: np.ndarray, exact_max: int, sample: int) -> None:
    n, d = x.shape
    column = DedupColumn(name, "vector", x)
    row = f"| {name} | {n:,} | "
    if n <= exact_max:
        start = time.perf_counter()
        exact = greedy_labels([column], THRESHOLD)
        t_exact = time.perf_counter() - start
        print(f"{row}exact | {t_exact:.1f} | {(exact == np.arange(n)).sum():,} | 1 | 1 | {check_members(column, exact):.4f} | {load()} |", flush=True)
    column = DedupColumn(name, "vector", x)  # fresh: no cached state from the exact pass
    start = time.perf_counter()
    approx = greedy_labels([column], THRESHOLD, exact=False)
    t_approx = time.perf_counter() - start
    unique = (approx == np.arange(n)).sum()
    if n <= exact_max:
        recall, precision = pair_counts(exact, approx)
        quality = f"{recall:.5f} | {precision:.5f}"
        speed = f" ({t_exact / t_approx:.1f}x faster)"
    else:
        share = sample_agreement(x, column, approx, sample)
        quality = f"sample of {sample}: {share:.4f} of labels exact | -"
        speed = ""
    print(f"{row}approximate{speed} | {t_approx:.1f} | {unique:,} | {quality} | {check_members(column, approx):.4f} | {load()} |", flush=True)


def coverage_section(name: str, x: np.ndarray, sample: int) -> None:
    """Share of the exact near pairs (cosine >= 0.9) of ``sample`` vectors that fall in probed cells."""
    from concurrent.futures import ThreadPoolExecutor  # noqa: PLC0415

    from threadpoolctl import threadpool_limits  # noqa: PLC0415

    from imageprism._search import cells  # noqa: PLC0415

    n = len(x)
    start = time.perf_counter()
    with threadpool_limits(1, user_api="blas"), ThreadPoolExecutor(cells.WORKERS) as pool:
        axes, k = cells.reduced_dims(x, THRESHOLD, near=True)
        codes = cells.reduce_vectors(x, axes, k)
        home, vector, cell = cells._cells(np.ascontiguousarray(codes[:, : cells._CELL_DIMS]), 0, pool)
    took = time.perf_counter() - start
    picks = np.sort(np.random.default_rng(9).choice(n, sample, replace=False))
    found_a, found_b = [], []
    for s in range(0, n, 65536):
        q, j = np.nonzero(codes[picks] @ codes[s : s + 65536].T >= THRESHOLD - 1e-4)  # a bound: loses no pair
        j += s
        ok = (np.einsum("ij,ij->i", x[picks[q]], x[j]) >= THRESHOLD) & (picks[q] != j)
        found_a.append(picks[q[ok]])
        found_b.append(j[ok])
    a, b = np.concatenate(found_a), np.concatenate(found_b)
    width = int(cell.max()) + 1
    probed = np.unique(vector * width + cell)
    covered = np.isin(a * width + home[b], probed) | np.isin(b * width + home[a], probed)
    print(f"| {name} | {n:,} | {width:,} | {k} | {len(a)} | {covered.mean():.4f} ({(~covered).sum()} missed) | {took:.1f} | {load()} |", flush=True)


# -- 4. stand-ins --------------------------------------------------------------------------------


def standins_section() -> None:
    sys.path.insert(0, str(HERE))
    from hash_robustness import DEV_IMAGES, TRANSFORMS  # noqa: PLC0415 (the transforms of the hash benchmark)
    from PIL import Image  # noqa: PLC0415

    from imageprism import ImagePrism, InstanceConfig, SemanticConfig  # noqa: PLC0415

    parity = HERE.parent / "tests" / "data" / "parity"
    photos: list[object] = []
    for path in sorted(p for p in DEV_IMAGES.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png")):
        with Image.open(path) as opened:
            image = opened.convert("RGB")
        photos += [image, *(t(image) for t in TRANSFORMS.values())]
    print(f"\n## stand-ins: {len(photos)} images (37 dev photos, 15 transforms each, and the originals), load {load()}\n")
    print("| model | d | threshold | exact unique | approximate unique | pair recall | pair precision |")
    print("|---|---|---|---|---|---|---|")
    for dim, config in (
        ("semantic", SemanticConfig(model_path=parity / "clip_vision_tiny.onnx")),
        ("instance", InstanceConfig(model_path=parity / "dinov2_tiny.onnx")),
    ):
        prism = ImagePrism(dimensions=[dim], config={dim: config})
        vectors = np.stack([e[dim] for e in prism.embed_batch(photos).embeddings])
        for threshold in (0.9, 0.8):
            exact = greedy_labels([DedupColumn(dim, "vector", vectors)], threshold)
            approx = greedy_labels([DedupColumn(dim, "vector", vectors)], threshold, exact=False)
            recall, precision = pair_counts(exact, approx)
            print(
                f"| {dim} stand-in | {vectors.shape[1]} | {threshold} | {(exact == np.arange(len(exact))).sum()} | "
                f"{(approx == np.arange(len(approx))).sum()} | {recall:.4f} | {precision:.4f} |",
                flush=True,
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sizes = lambda text: [int(v) for v in text.split(",") if v]  # noqa: E731
    parser.add_argument("--dedup-sizes", type=sizes, default=[100_000, 1_000_000])
    parser.add_argument("--dino-sizes", type=sizes, default=[20_000])
    parser.add_argument("--index-sizes", type=sizes, default=[1_000_000])
    parser.add_argument("--variants-size", type=int, default=100_000)
    parser.add_argument("--exact-max", type=int, default=100_000)
    parser.add_argument("--sample", type=int, default=1000)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--shapes", default="clip,dino")
    parser.add_argument("--threads", type=int, default=1, help="faiss OpenMP threads of the searches (imageprism._search.ann.THREADS) and of the candidates section")
    parser.add_argument("--skip", default="", help="sections to skip: candidates,index,dedup,coverage,standins")
    args = parser.parse_args()
    _ann.THREADS = args.threads
    skip = set(args.skip.split(","))
    print(f"# ann_recall: threshold {THRESHOLD}, {os.cpu_count()} cores, faiss {faiss.__version__}, "
          f"{args.threads} faiss threads, load {load()} at the start")
    shapes = [s for s in args.shapes.split(",") if s]
    if "candidates" not in skip and args.variants_size:
        for shape in shapes:
            candidates_section(shape, clustered(args.variants_size + args.queries, *SHAPES[shape]), args.queries)
    if "index" not in skip:
        for n in args.index_sizes:
            index_section("clip", clustered(n + args.queries, *SHAPES["clip"]), args.queries)
    if "dedup" not in skip:
        print(f"\n## dedup at threshold {THRESHOLD}, load {load()}\n")
        print("| data | n | method | seconds | unique | pair recall | pair precision | lowest member score | load |")
        print("|---|---|---|---|---|---|---|---|---|")
        for shape in shapes:
            for n in args.dedup_sizes if shape == "clip" else args.dino_sizes:  # the 1M goal is stated for 512-d
                dedup_section(shape, clustered(n, *SHAPES[shape]), args.exact_max, args.sample)
    if "coverage" not in skip:
        print(f"\n## coverage: near pairs of {args.sample} sampled vectors in probed cells, load {load()}\n")
        print("| data | n | cells | reduced axes | pairs | in probed cells | cells s | load |")
        print("|---|---|---|---|---|---|---|---|")
        for n in args.dedup_sizes:
            coverage_section("clip", clustered(n, *SHAPES["clip"]), args.sample)
    if "standins" not in skip:
        standins_section()
    print(f"\n# load {load()} at the end")


if __name__ == "__main__":
    main()
