"""Hash speed: embedding three perceptual hashes from a JPEG path, against imagehash.

Measures, side by side in one run, single thread, CPU milliseconds per image:

* ``imagehash``: ``Image.open(path)`` then ``phash``, ``dhash`` and ``average_hash``;
* ``bare reduced decode``: ``Image.open(path)`` + ``draft`` (the same request imageprism
  makes) + ``load``, the floor for any hash computed from a reduced decode;
* ``imageprism plain``: ``ImagePrism(config={"hash": HashConfig.plain()}).embed(path)``
  (the three plain hashes, reduced decode), with an embedding cache that keeps
  nothing so every call does the full work;
* ``imageprism robust``: the same with the default ``HashConfig()`` (= ``robust()``:
  flips, 90-degree and small rotations, centre and shifted crops, see hash_robustness.py);
* ``imageprism robust-16``: the default before issue 18, ``HashConfig(rotations=(),
  shifted_crops=())`` (flips, 90-degree rotations and centre crops: 16 variants);
* ``imageprism compat``: the same with ``HashConfig.imagehash_compatible()``
  (full-size decode, hex strings equal to imagehash's).

Test photos: the shared dev images, upscaled (LANCZOS) to about 1, 3, 6 and 12
megapixels and saved as JPEG quality 90 in ``benchmarks/.data/hash_speed/``
(gitignored, rebuilt when missing); and the row ``small``: ``--small`` JPEGs of 0.1-0.5 MP
made as ``benchmarks/scale.py`` makes its folder (random crops of the dev photos, mirrors,
quality 60-95, one in ten noise), in ``benchmarks/.data/hash_speed/small/``.

Run:  python benchmarks/hash_speed.py [--images 6] [--small 40] [--repeat 9] [--sizes small,1,3,6,12]
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")  # single thread, before numpy loads

import argparse
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import imagehash
from PIL import Image

from imageprism import EmbeddingCache, HashConfig, ImagePrism
from imageprism.dimensions._base import ImageRequest
from scale import generate  # benchmarks/scale.py: the small JPEGs of its throughput folder

HERE = Path(__file__).resolve().parent
DEV_IMAGES = HERE.parent.parent / "shared" / "data" / "dev-images"
DATA = HERE / ".data" / "hash_speed"


def build_photos(megapixels: int, count: int) -> list[Path]:
    """JPEG q90 copies of the first ``count`` colour dev photos at about ``megapixels`` MP."""
    sources = [p for p in sorted(DEV_IMAGES.iterdir()) if p.suffix.lower() in (".png", ".jpg")]
    out = []
    DATA.mkdir(parents=True, exist_ok=True)
    for src in sources[:count]:
        target = DATA / f"{src.stem}_{megapixels}mp.jpg"
        if not target.exists():
            with Image.open(src) as im:
                im = im.convert("RGB")
                scale = (megapixels * 1e6 / (im.width * im.height)) ** 0.5
                im = im.resize((round(im.width * scale), round(im.height * scale)), Image.Resampling.LANCZOS)
                im.save(target, quality=90)
        out.append(target)
    return out


def imagehash_three(path: Path) -> None:
    image = Image.open(path)
    imagehash.phash(image)
    imagehash.dhash(image)
    imagehash.average_hash(image)


def bare_reduced_decode(request: ImageRequest) -> Callable[[Path], None]:
    """Image.open + draft + load with the request's mode and minimum side, nothing else."""

    def run(path: Path) -> None:
        image = Image.open(path)
        width, height = image.size
        scale = request.min_side / min(width, height)
        image.draft(request.mode, (int(width * scale + 0.999), int(height * scale + 0.999)))
        image.load()

    return run


def prism_embed(config: HashConfig) -> Callable[[Path], None]:
    prism = ImagePrism(config={"hash": config}, cache=EmbeddingCache(max_entries=0))

    def run(path: Path) -> None:
        prism.embed(path)

    return run


def time_ms(methods: dict[str, Callable[[Path], None]], paths: list[Path], repeat: int) -> dict[str, float]:
    """Per method, the median over paths of the best-of-``repeat`` CPU time, in milliseconds.

    CPU time (``time.process_time``: user + system time of this single-threaded
    process) rather than wall time, so that other jobs on a shared machine do not
    count; the methods take turns on each photo, so what load remains hits them alike.
    """
    per_image: dict[str, list[float]] = {name: [] for name in methods}
    for path in paths:
        best = dict.fromkeys(methods, float("inf"))
        for fn in methods.values():
            fn(path)  # warm the OS file cache and lazy imports
        for _ in range(repeat):
            for name, fn in methods.items():
                start = time.process_time()
                fn(path)
                best[name] = min(best[name], time.process_time() - start)
        for name in methods:
            per_image[name].append(best[name] * 1e3)
    return {name: statistics.median(times) for name, times in per_image.items()}


def batch_ms(paths: list[Path], request: ImageRequest, repeat: int) -> dict[str, float]:
    """CPU ms per image of whole-folder runs, rounds interleaved, best round kept: the bare reduced
    decode of every path in a loop, and ``embed_batch(paths, workers=1)`` (plain and robust hashes;
    CPU time of the process, so its decode-ahead thread counts)."""
    bare = bare_reduced_decode(request)
    runs = {
        "bare reduced decode": lambda: [bare(p) for p in paths],
        "embed_batch plain": lambda: ImagePrism(config={"hash": HashConfig.plain()}, cache=EmbeddingCache(max_entries=0)).embed_batch(paths),
        "embed_batch robust": lambda: ImagePrism(cache=EmbeddingCache(max_entries=0)).embed_batch(paths),
    }
    best = dict.fromkeys(runs, float("inf"))
    for _ in range(repeat):
        for name, run in runs.items():
            start = time.process_time()
            run()
            best[name] = min(best[name], (time.process_time() - start) / len(paths) * 1e3)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=6, help="dev photos per size (default 6)")
    parser.add_argument("--repeat", type=int, default=9, help="timed runs per photo, best kept (default 9)")
    parser.add_argument("--small", type=int, default=40, help="0.1-0.5 MP JPEGs of the 'small' row (default 40)")
    parser.add_argument("--sizes", default="small,1,3,6,12", help="rows to measure: small and/or megapixels")
    args = parser.parse_args()

    # plain: the three hashes of the speed goal; robust: the default configuration (HashConfig())
    default, robust, compat = HashConfig.plain(), HashConfig(), HashConfig.imagehash_compatible()
    before = HashConfig(rotations=(), shifted_crops=())
    request = ImagePrism(config={"hash": default}).plugins["hash"].image_request
    methods = {
        "imagehash": imagehash_three,
        "bare reduced decode": bare_reduced_decode(request),
        "imageprism plain": prism_embed(default),
        "imageprism robust": prism_embed(robust),
        "imageprism robust-16": prism_embed(before),
        "imageprism compat": prism_embed(compat),
    }
    print(f"plain:   {default!r}\nrobust:  {robust!r}\nrobust-16: {before!r}\ncompat:  {compat!r}")
    print("load average at start: " + ", ".join(f"{x:.1f}" for x in os.getloadavg()))
    print(f"CPU ms per image (median over {args.images} photos of best of {args.repeat})\n")
    ratios = ("imagehash / plain", "plain / bare", "imagehash / robust", "robust / bare", "robust / plain", "robust / robust-16")
    header = f"| MP | {' | '.join(methods)} | {' | '.join(ratios)} |"
    print(header)
    print("|" + "---|" * (header.count("|") - 1))
    for mp in args.sizes.split(","):
        paths = generate(DATA / "small", args.small) if mp == "small" else build_photos(int(mp), args.images)
        ms = time_ms(methods, paths, args.repeat)
        ih, bare, dflt, rob = ms["imagehash"], ms["bare reduced decode"], ms["imageprism plain"], ms["imageprism robust"]
        cells = " | ".join(f"{v:.2f}" for v in ms.values())
        print(f"| {mp} | {cells} | {ih / dflt:.1f}x | {dflt / bare:.2f}x | {ih / rob:.1f}x | {rob / bare:.2f}x | {rob / dflt:.2f}x | {rob / ms['imageprism robust-16']:.2f}x |", flush=True)
    if "small" in args.sizes.split(","):
        ms = batch_ms(generate(DATA / "small", args.small), request, args.repeat)
        print(f"\nsmall JPEGs, whole folder ({args.small} files, best of {args.repeat} interleaved rounds), CPU ms per image; "
              f"load {os.getloadavg()[0]:.1f}")
        print("| " + " | ".join(ms) + " | plain / bare | robust / bare |\n|" + "---|" * (len(ms) + 2))
        bare = ms["bare reduced decode"]
        print("| " + " | ".join(f"{v:.3f}" for v in ms.values()) + f" | {ms['embed_batch plain'] / bare:.2f}x | {ms['embed_batch robust'] / bare:.2f}x |")
    print("load average at end: " + ", ".join(f"{x:.1f}" for x in os.getloadavg()))
    print("\ngoals: imagehash / plain >= 5x; plain / bare <= 1.3x; robust / plain <= 1.5x; robust / robust-16 <= 1.5x")


if __name__ == "__main__":
    main()
