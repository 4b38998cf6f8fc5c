"""A million images on one machine (issue 15): throughput on all cores, re-runs, a folder job, dedup at scale.

Images are generated here from the shared dev photos (random crops of 50-100% per side,
mirror images, 0.1-0.5 MP, JPEG quality 60-95, and one image in ten pure noise), in
``--work`` (default ``/tmp/imageprism-scale``; never committed). Every table is one run,
side by side, with the load average before and after (the machine may be shared: the
single- vs multi-worker ratio of the same run is the number to read).

1. ``throughput`` (``--rounds`` rounds taking turns, medians): images/s from JPEG paths: bare reduced-size decode (PIL ``draft`` to the
   hash's request, ``load``, gray; the floor), imgdd's folder API (dHash only, Rust/rayon,
   all cores), ``ImagePrism().embed_batch(paths, workers=k)`` for 1 and every core, the
   same on a thread pool (threads instead of processes), and the CLI
   ``imageprism embed DIR --json --workers k``; and the single worker's chunks in one thread
   (``workers=1`` decodes the next chunk on a second thread, so it already uses part of a
   second core); and two cheaper hash configurations on every core (no small rotations; the
   plain hashes), for what each part of the default costs. CPU seconds of every process are shown beside the wall times: on a shared
   machine they are the steadier measure of what the pool costs.
2. ``rerun``: ``embed_batch`` with a fresh ``PersistentCache`` over ``--rerun-files`` files,
   then again over the unchanged folder (file-identity layer), and the cost of reading and
   hashing every file's bytes (what a content digest would add).
3. ``folder``: ``imageprism embed DIR --cache C --workers all --json > /dev/null`` over
   ``--folder-files`` images: wall time, images/s, peak RSS; then the same job killed at
   half way (SIGKILL) and resumed.
4. ``parquet``: ``imageprism embed DIR --out FILE.parquet`` with ``--workers 1`` and every core,
   taking turns for ``--rounds`` rounds over ``--images`` images (the same JPEGs as
   ``throughput``), with ``--json`` beside them for reference; wall and CPU seconds, the load
   after each run, and whether the tables are byte-identical.
5. ``dedup``: ``greedy_labels`` on synthetic clustered codes shaped like the default robust
   hash (26 variants x 3 x 64 bits; ``benchmarks/dedup_scale.py``'s ``robust_codes``), brute
   force (an exhaustive faiss scan of every pair, then the greedy pass) where it finishes.

Run:  PYTHONPATH=. python benchmarks/scale.py [--only throughput,rerun,folder,parquet,dedup]
          [--images 1000] [--rounds 2] [--rerun-files 10000] [--folder-files 100000] [--dedup-sizes 10000,100000,1000000]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import resource
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from imageprism import HashConfig, ImagePrism, PersistentCache
from imageprism._workers import available_cores

HERE = Path(__file__).resolve().parent
DEV = HERE.parent.parent / "shared" / "data" / "dev-images"


def load() -> str:
    return f"{os.getloadavg()[0]:.1f}"


def generate(folder: Path, count: int, seed: int = 0) -> list[Path]:
    """``count`` small JPEGs (kept between runs: generated once per folder and count)."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"{i:07d}.jpg" for i in range(count)]
    if all(p.exists() for p in paths[-3:]) and len(list(folder.iterdir())) >= count:
        return paths
    rng = np.random.default_rng(seed)
    photos = []
    for p in sorted(DEV.iterdir()):
        if p.suffix.lower() in (".png", ".jpg"):
            with Image.open(p) as im:
                photos.append(im.convert("RGB"))
    for i, path in enumerate(paths):
        if path.exists():
            continue
        if i % 10 == 9:
            side = int(rng.integers(300, 600))
            image = Image.fromarray(rng.integers(0, 256, (side * 3 // 4, side, 3), dtype=np.uint8))
        else:
            photo = photos[i % len(photos)]
            w, h = photo.size
            cw, ch = int(w * rng.uniform(0.5, 1)), int(h * rng.uniform(0.5, 1))
            x, y = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
            scale = (rng.uniform(0.1, 0.5) * 1e6 / (cw * ch)) ** 0.5
            image = photo.crop((x, y, x + cw, y + ch)).resize((max(8, int(cw * scale)), max(8, int(ch * scale))))
            if rng.random() < 0.5:
                image = ImageOps.mirror(image)
        image.save(path, quality=int(rng.integers(60, 96)))
    return paths


def bare_decode(paths: list[Path]) -> None:
    request = ImagePrism().plugins["hash"].image_request
    side = request.min_side or 1
    for p in paths:
        with Image.open(p) as im:
            scale = side / min(im.size)
            if scale < 1:
                im.draft("L", (int(im.size[0] * scale + 0.999), int(im.size[1] * scale + 0.999)))
            im.convert("L")


def threads_embed(paths: list[Path], workers: int) -> None:
    prism = ImagePrism()
    chunks = [paths[i : i + 64] for i in range(0, len(paths), 64)]
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(lambda c: prism._embed_chunk(c, 0), chunks))


def cpu_seconds() -> float:
    """User + system CPU seconds of this process and of its finished children (workers, CLI runs)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def timed(run: object) -> float:
    start = time.perf_counter()
    run()  # type: ignore[operator]
    return time.perf_counter() - start


def cli(args: list[str], **kw: object) -> subprocess.Popen[bytes]:
    env = dict(os.environ, PYTHONPATH=str(HERE.parent))
    return subprocess.Popen([sys.executable, "-m", "imageprism", *args], env=env,
                            stdout=subprocess.DEVNULL, **kw)  # type: ignore[call-overload]


def throughput(work: Path, count: int, rounds: int) -> None:
    folder = work / f"jpegs-{count}"
    paths = generate(folder, count)
    cores = available_cores()
    import imgdd

    rows = [
        ("bare reduced-size decode, 1 thread (floor)", lambda: bare_decode(paths)),
        (f"imgdd.hash(folder), dHash only, Rust, {cores} cores", lambda: imgdd.hash(str(folder))),
        ("embed_batch, default robust hash, workers=1", lambda: ImagePrism().embed_batch(paths, workers=1)),
        ("same, one thread (no decode-ahead thread)", lambda: ImagePrism()._embed_chunk(paths, 0)),
        (f"embed_batch, default robust hash, workers={cores}", lambda: ImagePrism().embed_batch(paths, workers=cores)),
        (f"same chunks on {cores} threads (not processes)", lambda: threads_embed(paths, cores)),
        # cheaper hash configurations, for the cost of each part of the default (not the default's figures)
        (f"embed_batch, robust without the small rotations (24 variants), workers={cores}",
         lambda: ImagePrism(config={"hash": HashConfig(rotations=())}).embed_batch(paths, workers=cores)),
        (f"embed_batch, plain hashes (3 rows), workers={cores}",
         lambda: ImagePrism(config={"hash": HashConfig.plain()}).embed_batch(paths, workers=cores)),
        ("CLI embed DIR --json --workers 1", lambda: cli(["embed", str(folder), "--json", "--workers", "1"]).wait()),
        (f"CLI embed DIR --json --workers {cores}", lambda: cli(["embed", str(folder), "--json", "--workers", str(cores)]).wait()),
    ]
    print(f"\n## throughput: {count} JPEGs (0.1-0.5 MP), {cores} cores, load {load()}; "
          f"median of {rounds} rounds taking turns (each round runs every row once)")
    print("| pipeline | s | images/s | x single-worker embed_batch | CPU s (all processes) | load |")
    print("|---|---|---|---|---|---|")
    walls: dict[str, list[float]] = {name: [] for name, _ in rows}
    cpus: dict[str, list[float]] = {name: [] for name, _ in rows}
    loads: dict[str, str] = {}
    for _ in range(rounds):
        for name, run in rows:
            before = cpu_seconds()
            walls[name].append(timed(run))
            cpus[name].append(cpu_seconds() - before)
            loads[name] = load()
    results = {name: float(np.median(w)) for name, w in walls.items()}
    cpu = {name: float(np.median(c)) for name, c in cpus.items()}
    single = results["embed_batch, default robust hash, workers=1"]
    for name, seconds in results.items():
        print(f"| {name} | {seconds:.2f} | {count / seconds:.0f} | {single / seconds:.2f}x | {cpu[name]:.2f} | {loads[name]} |")
    floor = results["bare reduced-size decode, 1 thread (floor)"]
    print(f"\nsingle worker / bare decode: {single / floor:.2f}x; load after: {load()}")
    # CPU seconds are what the work costs whatever else runs: the pool's overhead is its CPU time over the
    # single worker's, and on idle cores the wall ratio would be about workers / that overhead
    for name in (f"embed_batch, default robust hash, workers={cores}", f"CLI embed DIR --json --workers {cores}"):
        base = cpu["embed_batch, default robust hash, workers=1" if name.startswith("embed") else "CLI embed DIR --json --workers 1"]
        print(f"{name}: CPU {cpu[name] / base:.2f}x the single worker's")
    one = results["same, one thread (no decode-ahead thread)"]
    print(f"workers={cores} vs one thread without decode-ahead: {one / results[f'embed_batch, default robust hash, workers={cores}']:.2f}x; "
          f"workers=1 (decoding ahead on a second thread) vs one thread: {one / single:.2f}x")


def rerun(work: Path, count: int) -> None:
    paths = generate(work / f"jpegs-{count}", count)
    db = work / f"rerun-{count}.sqlite3"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    cores = available_cores()
    first = timed(lambda: ImagePrism(cache=PersistentCache(db)).embed_batch(paths, workers=cores))
    second = timed(lambda: ImagePrism(cache=PersistentCache(db)).embed_batch(paths, workers=cores))
    digest = timed(lambda: [hashlib.blake2b(p.read_bytes(), digest_size=16).digest() for p in paths])
    print(f"\n## rerun: {count} files, workers={cores}, load {load()}")
    print("| run | s | share of the first run |")
    print("|---|---|---|")
    print(f"| first run (fresh PersistentCache) | {first:.2f} | 100% |")
    print(f"| re-run, unchanged folder | {second:.2f} | {100 * second / first:.1f}% |")
    print(f"| reading + BLAKE2b of every file (a content digest's cost) | {digest:.2f} | {100 * digest / first:.1f}% |")


def folder_job(work: Path, count: int) -> None:
    folder = work / f"jpegs-{count}"
    start = time.perf_counter()
    generate(folder, count)
    made = time.perf_counter() - start
    db = work / f"folder-{count}.sqlite3"
    cores = available_cores()
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    job = ["embed", str(folder), "--json", "--cache", str(db), "--workers", str(cores)]
    print(f"\n## folder job: {count} generated images ({made:.0f} s to generate), workers={cores}, load {load()}")
    print("| run | wall s | images/s | peak RSS of a process (MB) |")
    print("|---|---|---|---|")
    wall = timed(lambda: cli(job).wait())
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(f"| full job, fresh cache | {wall:.1f} | {count / wall:.0f} | {peak:.0f} |")
    again = timed(lambda: cli(job).wait())
    print(f"| same job again (nothing changed) | {again:.1f} | {count / again:.0f} | |")
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    start = time.perf_counter()
    child = cli(job)
    done = 0
    while child.poll() is None:
        time.sleep(0.5)
        try:
            with sqlite3.connect(db, timeout=1) as conn:
                done = conn.execute("SELECT COUNT(DISTINCT path) FROM files").fetchone()[0]
        except sqlite3.Error:
            continue
        if done >= count // 2:
            child.send_signal(signal.SIGKILL)
            break
    child.wait()
    killed = time.perf_counter() - start
    resumed = timed(lambda: cli(job).wait())
    print(f"| killed at {done} files (SIGKILL) | {killed:.1f} | | |")
    print(f"| resumed to the end | {resumed:.1f} | {(count - done) / resumed:.0f} (new files) | |")
    print(f"| killed + resumed, total | {killed + resumed:.1f} | {count / (killed + resumed):.0f} | |")
    print(f"load after: {load()}")


def parquet(work: Path, count: int, rounds: int) -> None:
    """``embed DIR --out FILE.parquet`` on one worker and on every core, side by side (``--json`` for reference)."""
    folder = work / f"jpegs-{count}"
    generate(folder, count)
    cores = available_cores()
    tables = {k: work / f"embed-w{k}.parquet" for k in (1, cores)}
    runs = {
        **{f"embed DIR --out FILE.parquet --workers {k}": ["--out", str(tables[k]), "--force", "--workers", str(k)] for k in (1, cores)},
        **{f"embed DIR --json --workers {k}": ["--json", "--workers", str(k)] for k in (1, cores)},
    }
    print(f"\n## embed --out: {count} JPEGs (0.1-0.5 MP), {cores} cores, {rounds} rounds taking turns, load {load()}")
    print("| round | command | s | images/s | CPU s (all processes) | load after |")
    print("|---|---|---|---|---|---|")
    walls: dict[str, list[float]] = {name: [] for name in runs}
    for r in range(1, rounds + 1):
        for name, flags in runs.items():
            before = cpu_seconds()
            seconds = timed(lambda flags=flags: cli(["embed", str(folder), *flags]).wait())
            walls[name].append(seconds)
            print(f"| {r} | {name} | {seconds:.2f} | {count / seconds:.0f} | {cpu_seconds() - before:.2f} | {load()} |", flush=True)
    one, many = (min(walls[f"embed DIR --out FILE.parquet --workers {k}"]) for k in (1, cores))
    same = tables[1].read_bytes() == tables[cores].read_bytes()
    print(f"\n--out, best of {rounds}: workers={cores} {one / many:.2f}x workers=1 ({count / one:.0f} -> {count / many:.0f} images/s); "
          f"tables byte-identical: {same}; load after: {load()}")
    for k in (1, cores):
        out, json_ = min(walls[f"embed DIR --out FILE.parquet --workers {k}"]), min(walls[f"embed DIR --json --workers {k}"])
        print(f"workers={k}: --out takes {out / json_:.2f}x the time of --json")


def dedup(sizes: list[int], brute_max: int) -> None:
    """``greedy_labels`` on synthetic robust hashes (``dedup_scale.robust_codes``), brute force up to ``brute_max``."""
    from dedup_scale import run

    print(f"\n## dedup of robust hashes (26 variants x 3 x 64 bits, threshold 0.9), load {load()}")
    print("| n | greedy_labels s | per 1k items (ms) | candidates per item | brute force s | labels equal | load |")
    print("|---|---|---|---|---|---|---|")
    for n in sizes:
        r = run("robust", n, brute_max)
        seconds = float(r["index_s"])  # type: ignore[arg-type]
        brute = "-" if r["brute_s"] is None else f"{r['brute_s']:.1f}"
        equal = "-" if r["equal"] is None else ("yes" if r["equal"] else "NO")
        print(f"| {n:,} | {seconds:.1f} | {1e6 * seconds / n:.1f} | {r['candidates']} | {brute} | {equal} | {r['load']} |", flush=True)
    print(f"load after: {load()}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default="throughput,rerun,folder,parquet,dedup")
    parser.add_argument("--work", type=Path, default=Path("/tmp/imageprism-scale"))
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--rerun-files", type=int, default=10_000)
    parser.add_argument("--folder-files", type=int, default=100_000)
    parser.add_argument("--dedup-sizes", default="10000,100000,1000000")
    parser.add_argument("--brute-max", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=2, help="turns of the throughput and parquet comparisons (median / best reported)")
    args = parser.parse_args()
    parts = args.only.split(",")
    print(f"# benchmarks/scale.py: {available_cores()} cores, load {load()}, Python {sys.version.split()[0]}")
    if "throughput" in parts:
        throughput(args.work, args.images, args.rounds)
    if "rerun" in parts:
        rerun(args.work, args.rerun_files)
    if "folder" in parts:
        folder_job(args.work, args.folder_files)
    if "parquet" in parts:
        parquet(args.work, args.images, args.rounds)
    if "dedup" in parts:
        dedup([int(s) for s in args.dedup_sizes.split(",") if s], args.brute_max)
    shutil.rmtree(args.work / "unused", ignore_errors=True)


if __name__ == "__main__":
    main()
