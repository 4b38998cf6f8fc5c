"""Load test of ``imageprism serve``: concurrent clients adding and searching a 100k-item index.

1. A 100,000-item index of the default configuration (hash, ``HashConfig()`` = robust: 26
   flip/rotation/crop variants, 78 x 64 bits per item) is built from synthetic embeddings
   through ``ImageIndex.add_embeddings`` (random codes, no images decoded) and saved.
2. **In process**, one request at a time, the same operations the server does: a search
   (embed the upload, ``search_embedding`` k=10) and an add (embed, near-duplicate search,
   ``add_embeddings``, ``save`` of the whole index: the service's commit today).
3. **Over HTTP**: the server (``python -m imageprism serve``, loopback, a free port) over a copy
   of that index; ``--clients`` threads, each with its own connection, send requests for
   ``--duration`` seconds, an add with probability ``--add-fraction`` (a distinct 128x128 PNG
   with its own id) else a search (a distinct 256x256 PNG: no query is an embedding-cache hit). Reported: requests/s, p50/p99 per
   kind, errors (any non-2xx answer or failed request), the server's memory (VmRSS / peak
   VmHWM) and its commit counters (group commit: writes per commit, time per commit).
4. The server is stopped, the index loaded from disk, and every acknowledged add looked up:
   ``lost`` must be 0. Then the server is started again: the time until its first answer.

Loopback only; clients are capped at 64 and the duration at 600 s. The load average is printed
before and after (2 shared cores: clients, server and other jobs compete).

Run:  python benchmarks/serve_load.py [--items 100000] [--clients 8] [--duration 30] [--add-fraction 0.2]
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))
from serve_process import ServeProcess, distinct_png  # noqa: E402

from imageprism import ImageIndex, ImagePrism  # noqa: E402

PHOTOS = sorted((REPO / "examples" / "images").glob("*.jpg"))
ADD_SIDE = 128
QUERY_SIDE = 256


def build_index(folder: Path, items: int) -> float:
    """Save an index of ``items`` synthetic default-hash embeddings; returns the seconds taken."""
    started = time.perf_counter()
    prism = ImagePrism()
    shape = prism.embed(PHOTOS[0])["hash"].shape
    index = ImageIndex(prism)
    rng = np.random.default_rng(0)
    for lo in range(0, items, 10_000):
        hi = min(items, lo + 10_000)
        codes = rng.integers(0, 256, (hi - lo, *shape), dtype=np.uint8)
        index.add_embeddings([{"hash": c} for c in codes], ids=[f"synthetic-{i}" for i in range(lo, hi)])
    index.save(folder)
    return time.perf_counter() - started


def in_process(folder: Path, scratch: Path, rounds: int) -> dict[str, list[float]]:
    """Latencies (s) of the server's two operations done directly, one at a time."""
    index = ImageIndex.load(folder)
    shutil.copytree(folder, scratch)
    times: dict[str, list[float]] = {"search": [], "add": []}
    index.search_embedding(index.prism.embed(PHOTOS[0]), k=10)  # warm up
    for i in range(rounds):
        query = distinct_png(2 * 10**7 + i, size=QUERY_SIDE)
        started = time.perf_counter()
        index.search_embedding(index.prism.embed(query), k=10)
        times["search"].append(time.perf_counter() - started)
        image = distinct_png(10**7 + i, size=ADD_SIDE)
        started = time.perf_counter()
        embedding = index.prism.embed(image)
        index.search_embedding(embedding, k=10)
        index.add_embeddings([embedding], ids=[f"direct-{i}"])
        index.save(scratch)
        times["add"].append(time.perf_counter() - started)
    return times


def memory_kb(pid: int) -> dict[str, int]:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0])
    return fields


def load(url: str, clients: int, duration: float, add_fraction: float) -> tuple[dict[str, list[float]], list[str], list[str], float]:
    """Run the clients; returns latencies per kind, acknowledged add ids, errors, wall seconds."""
    latencies: dict[str, list[float]] = {"search": [], "add": []}
    acknowledged: list[str] = []
    errors: list[str] = []
    lock = threading.Lock()
    stop_at = time.monotonic() + duration

    def client(worker: int) -> None:
        rng = random.Random(worker)
        with httpx.Client(base_url=url, timeout=120) as c:
            i = 0
            while time.monotonic() < stop_at:
                i += 1
                if rng.random() < add_fraction:
                    kind, item_id = "add", f"load-{worker}-{i}"
                    image = distinct_png(worker * 10**6 + i, size=ADD_SIDE)
                    request = {"files": [("file", (f"{item_id}.png", image))], "data": {"id": item_id}}
                    path = "/images"
                else:
                    kind, item_id = "search", ""
                    image = distinct_png(3 * 10**7 + worker * 10**6 + i, size=QUERY_SIDE)
                    request = {"files": [("file", ("query.png", image))], "data": {"k": "10"}}
                    path = "/search"
                started = time.perf_counter()
                try:
                    response = c.post(path, **request)  # type: ignore[arg-type]
                except httpx.HTTPError as exc:
                    with lock:
                        errors.append(f"{kind}: {type(exc).__name__}: {exc}")
                    continue
                elapsed = time.perf_counter() - started
                with lock:
                    if response.is_success:
                        latencies[kind].append(elapsed)
                        if kind == "add":
                            acknowledged.append(item_id)
                    else:
                        errors.append(f"{kind}: {response.status_code} {response.text[:200]}")

    threads = [threading.Thread(target=client, args=(w,)) for w in range(clients)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return latencies, acknowledged, errors, time.perf_counter() - started


def ms(values: list[float], q: float) -> str:
    if not values:
        return "-"
    return f"{1000 * float(np.quantile(values, q)):.0f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--duration", type=float, default=30.0, help="seconds of load")
    parser.add_argument("--add-fraction", type=float, default=0.2)
    parser.add_argument("--rounds", type=int, default=10, help="in-process requests of each kind")
    args = parser.parse_args()
    if not 1 <= args.clients <= 64 or not 0 < args.duration <= 600:
        parser.error("use 1-64 clients and a duration of at most 600 s")
    print(f"load average before: {os.getloadavg()}")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "index"
        print(f"built {args.items:,} synthetic items in {build_index(folder, args.items):.1f} s")
        direct = in_process(folder, Path(tmp) / "direct", args.rounds)
        server = ServeProcess(folder, ["--timeout", "120"], log=Path(tmp) / "server.log")
        with server, httpx.Client(base_url=server.url, timeout=120) as c:
            c.post("/search", files=[("file", PHOTOS[0].read_bytes())])  # warm up
            latencies, acknowledged, errors, wall = load(server.url, args.clients, args.duration, args.add_fraction)
            assert server.process is not None
            memory = memory_kb(server.process.pid)
            commits = c.get("/stats").json()["commits"]
        index = ImageIndex.load(folder)
        lost = [i for i in acknowledged if i not in index]
        extra = len(index) - args.items - len(acknowledged)
        started = time.perf_counter()
        with server, httpx.Client(base_url=server.url, timeout=120) as c:  # restart: load, then serve
            restarted_items = c.get("/health").json()["items"]
            restart = time.perf_counter() - started
    total = sum(len(v) for v in latencies.values())
    print(f"load average after: {os.getloadavg()}\n")
    print(f"{args.clients} clients, {wall:.1f} s, {args.items:,} items at the start, add fraction {args.add_fraction}\n")
    print("| | requests | per s | p50 ms | p99 ms | in process p50 ms (one at a time) | HTTP p50 / in process |")
    print("|---|---|---|---|---|---|---|")
    for kind in ("search", "add"):
        values, base = latencies[kind], direct[kind]
        ratio = f"{np.median(values) / np.median(base):.1f}x" if values else "-"
        print(f"| {kind} | {len(values)} | {len(values) / wall:.1f} | {ms(values, 0.5)} | {ms(values, 0.99)} | "
              f"{1000 * statistics.median(base):.0f} | {ratio} |")
    print(f"| all | {total} | {total / wall:.1f} | {ms(sum(latencies.values(), []), 0.5)} | {ms(sum(latencies.values(), []), 0.99)} | | |")
    print(f"\nerrors: {len(errors)}" + "".join(f"\n  {e}" for e in errors[:10]))
    print(f"server memory: VmRSS {memory.get('VmRSS', 0) / 1024:.0f} MiB, peak VmHWM {memory.get('VmHWM', 0) / 1024:.0f} MiB")
    per_commit = commits["writes"] / commits["commits"] if commits["commits"] else 0.0
    mean_ms = 1000 * commits["seconds"] / commits["commits"] if commits["commits"] else 0.0
    print(f"commits: {commits['commits']} for {commits['writes']} writes ({per_commit:.2f} per commit), "
          f"{mean_ms:.0f} ms each on average, {1000 * commits['max_seconds']:.0f} ms at most")
    print(f"acknowledged adds: {len(acknowledged)}, lost after restart: {len(lost)}, unacknowledged but present: {extra}")
    print(f"restart: {restarted_items:,} items served {restart:.1f} s after the process started")


if __name__ == "__main__":
    main()
