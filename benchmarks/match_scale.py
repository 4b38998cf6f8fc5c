"""``imageprism match`` on a generated library: time, throughput and peak memory, side by side.

A library of ``--library`` generated JPEG files (random 12x12 block patterns, 96x96
pixels, so unrelated images score near 0.6 on the hash) and input folders of
``--inputs`` and 4 x ``--inputs`` files: half are perturbed copies of library items
(brighter, re-encoded at quality 70; each must find its source), half are new.

Timed in one run, on the same files:

* library build: ``imageprism index build LIBRARY --out INDEX`` (embedding every file);
* ``imageprism match INDEX --inputs INPUTS --csv`` for N and 4N inputs, each in its own
  process, reporting wall time, inputs per second, pair comparisons per second and the
  process's peak RSS (``ru_maxrss``): inputs stream in chunks, so 4x the inputs should
  cost about 4x the time and about the same memory;
* the same match with faiss limited to one OpenMP thread (``OMP_NUM_THREADS=1``),
  since OpenMP threads spin badly on a machine shared with other jobs.

The script checks every planted copy found its source (recall) and that no new image
matched anything (precision). Prints a Markdown table with the load average.

Run:  python benchmarks/match_scale.py [--library 10000] [--inputs 500]
"""

from __future__ import annotations

import argparse
import csv
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parent.parent

_MEASURE = (
    "import resource, subprocess, sys, time\n"
    "t = time.perf_counter()\n"
    "with open(sys.argv[1], 'wb') as out:\n"
    "    code = subprocess.run(sys.argv[2:], stdout=out).returncode\n"
    "print(code, time.perf_counter() - t, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
)


def pattern(rng: np.random.Generator) -> np.ndarray:
    return np.kron(rng.integers(0, 256, (12, 12, 3)), np.ones((8, 8, 1))).astype(np.uint8)


def generate(folder: Path, library: int, inputs: int, seed: int = 0) -> dict[str, Path]:
    """Write the library and two input folders; returns their paths."""
    rng = np.random.default_rng(seed)
    lib = folder / "library"
    lib.mkdir()
    for i in range(library):
        Image.fromarray(pattern(rng)).save(lib / f"item{i:06d}.jpg", quality=90)
    dirs = {"library": lib}
    for name, count in (("small", inputs), ("large", 4 * inputs)):
        out = folder / name
        out.mkdir()
        for j in range(count):
            if j % 2 == 0:  # a perturbed copy of a library item
                source = int(rng.integers(0, library))
                with Image.open(lib / f"item{source:06d}.jpg") as image:
                    brighter = np.clip(np.asarray(image).astype(int) + 10, 0, 255).astype(np.uint8)
                Image.fromarray(brighter).save(out / f"copy{j:06d}_of_item{source:06d}.jpg", quality=70)
            else:
                Image.fromarray(pattern(rng)).save(out / f"new{j:06d}.jpg", quality=90)
        dirs[name] = out
    return dirs


def measure(args: list[str], out: Path, env: dict[str, str]) -> tuple[float, int]:
    """Wall seconds and peak RSS (kB) of ``python -m imageprism ARGS`` in a fresh process."""
    command = [sys.executable, "-c", _MEASURE, str(out), sys.executable, "-m", "imageprism", *args]
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
    code, seconds, rss = done.stdout.split()
    if code not in ("0",):
        raise SystemExit(f"imageprism {' '.join(args)} exited {code}: {done.stderr[-2000:]}")
    return float(seconds), int(rss)


def check(csv_path: Path) -> tuple[int, int, int, int]:
    """(copies found, copies, new images matched, new images) from a match CSV."""
    found = copies = wrong = new = 0
    with open(csv_path, newline="") as handle:
        for row in csv.DictReader(handle):
            name = Path(row["input"]).name
            if name.startswith("copy"):
                copies += 1
                found += row["match"].endswith(name.split("_of_")[1])
            else:
                new += 1
                wrong += bool(row["match"])
    return found, copies, wrong, new


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--library", type=int, default=10_000)
    parser.add_argument("--inputs", type=int, default=500)
    options = parser.parse_args()
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        t = time.perf_counter()
        dirs = generate(folder, options.library, options.inputs)
        print(f"generated {options.library} library files and {5 * options.inputs} inputs in {time.perf_counter() - t:.1f} s")
        index = folder / "index"
        build_s, build_rss = measure(["index", "build", str(dirs["library"]), "--out", str(index)], folder / "build.txt", env)
        rows = [("index build (library)", options.library, build_s, build_rss, None, None)]
        for threads in (None, "1"):
            run_env = env if threads is None else {**env, "OMP_NUM_THREADS": threads}
            for name in ("small", "large"):
                out = folder / f"{name}-{threads}.csv"
                seconds, rss = measure(["match", str(index), "--inputs", str(dirs[name]), "--csv"], out, run_env)
                n = options.inputs * (1 if name == "small" else 4)
                rows.append((f"match, faiss threads {threads or 'default'}", n, seconds, rss, check(out), n / seconds))
    print(f"\nload average during the run (1, 5, 15 min): {', '.join(f'{x:.1f}' for x in os.getloadavg())}; "
          f"{os.cpu_count()} cores\n")
    print("| step | items | seconds | items/s | pairs/s | peak RSS MB | copies found | new matched |")
    print("|---|---|---|---|---|---|---|---|")
    for label, n, seconds, rss, checked, rate in rows:
        pairs = "" if rate is None else f"{rate * options.library:,.0f}"
        found = "" if checked is None else f"{checked[0]}/{checked[1]}"
        wrong = "" if checked is None else f"{checked[2]}/{checked[3]}"
        print(f"| {label} | {n} | {seconds:.1f} | {n / seconds:.1f} | {pairs} | {rss / 1024:.0f} | {found} | {wrong} |")
    matches = [r for r in rows if r[4] is not None]
    for a, b in ((matches[0], matches[1]), (matches[2], matches[3])):
        print(f"\n{a[0]}: 4x the inputs took {b[2] / a[2]:.2f}x the time and {b[3] / a[3]:.2f}x the peak memory")
    print(f"one OpenMP thread vs default, {matches[1][1]} inputs: {matches[3][2] / matches[1][2]:.2f}x the time")


if __name__ == "__main__":
    main()
