"""Hash robustness: the 15-transform protocol, imageprism configurations beside imagehash.

For every dev photo ``i`` and transform ``T``: a positive pair ``(i, T(i))`` and a
negative pair ``(i, T(j))`` with ``j = (i + n // 2) mod n`` a different photo (this
partner never pairs the two views of the motorcycle stereo pair), so as many
negatives as positives. Scores are the ``hash`` score of each configuration
(``ImagePrism(config=...).compare``) and, for imagehash, the mean over pHash, dHash
and aHash of the fraction of equal bits. Reported per transform and overall (all
transforms pooled): ROC AUC (ties count half) and the accuracy at the best
threshold for that set. Extra, non-protocol rows: small rotations of 2, 3, 5, 8 and
10 degrees (counter-clockwise for even-numbered photos, clockwise for odd ones; same
canvas, black corners, as ``Image.rotate``), a 5-degree rotation cropped straight
(no black corners), and crops shifted off centre (70% kept, shifted 5% or 10% of each
side; 60% kept, shifted 20%), each photo's shift in one of 8 directions in turn, plus
the up-left 10% shift of earlier runs.

Also: the unrelated-pair scores, over every pair of different dev photos and over every
photo against every other photo's copies (all transforms); the same targets on each half
of the photos alone (a held-out check: nothing was tuned per photo); and a dedup test:
the photos plus two random copies each (the 15 transforms and rotations of 2, 3 and 5
degrees), grouped by ``ImagePrism.dedup_embeddings`` at 0.9, with the recall per copy
transform, the pair recall and the pair precision; then that test per linkage (greedy,
connected with the default 2-hop cap, connected without a cap) over ten shuffled orders.

JPEG transforms are passed as the encoded bytes (so imageprism's reduced decode
takes part, and imagehash decodes them with ``Image.open``); the others as PIL images.

Run:  python benchmarks/hash_robustness.py [--configs NAME ...]
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse
import io
from collections.abc import Callable
from pathlib import Path

import imagehash
import numpy as np
from PIL import Image, ImageEnhance, ImageFilter, ImageOps

from imageprism import HashConfig, ImagePrism

DEV_IMAGES = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "dev-images"



def _jpeg(quality: int) -> Callable[[Image.Image], bytes]:
    def run(image: Image.Image) -> bytes:
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=quality)
        return buffer.getvalue()

    return run


def _scale(factor: float) -> Callable[[Image.Image], Image.Image]:
    return lambda im: im.resize((round(im.width * factor), round(im.height * factor)), Image.Resampling.BICUBIC)


def _crop(fraction: float, shift: float = 0.0, direction: tuple[int, int] = (-1, -1)) -> Callable[[Image.Image], Image.Image]:
    """A crop keeping ``fraction`` of each side, centred, then moved by ``shift`` of each side in
    ``direction`` (right, down; up-left by default)."""

    def run(im: Image.Image) -> Image.Image:
        w, h = round(im.width * fraction), round(im.height * fraction)
        left = round((im.width - w) / 2 + direction[0] * shift * im.width)
        top = round((im.height - h) / 2 + direction[1] * shift * im.height)
        return im.crop((left, top, left + w, top + h))

    return run


def _noise(sigma: float) -> Callable[[Image.Image], Image.Image]:
    def run(im: Image.Image) -> Image.Image:
        rng = np.random.default_rng(0)
        pixels = np.asarray(im, dtype=np.float64) + rng.normal(0.0, sigma, (im.height, im.width, 3))
        return Image.fromarray(np.clip(np.rint(pixels), 0, 255).astype(np.uint8))

    return run


Transform = Callable[[Image.Image], "Image.Image | bytes"]

TRANSFORMS: dict[str, Transform] = {
    "jpeg q30": _jpeg(30),
    "jpeg q70": _jpeg(70),
    "resize 0.5x": _scale(0.5),
    "resize 2x": _scale(2.0),
    "centre crop 90%": _crop(0.9),
    "centre crop 50%": _crop(0.5),
    "rotate 5": lambda im: im.rotate(5, resample=Image.Resampling.BICUBIC),
    "rotate 90": lambda im: im.transpose(Image.Transpose.ROTATE_90),
    "blur r=2": lambda im: im.filter(ImageFilter.GaussianBlur(2)),
    "noise sigma=10": _noise(10.0),
    "horizontal flip": ImageOps.mirror,
    "brightness +30%": lambda im: ImageEnhance.Brightness(im).enhance(1.3),
    "brightness -30%": lambda im: ImageEnhance.Brightness(im).enhance(0.7),
    "contrast +40%": lambda im: ImageEnhance.Contrast(im).enhance(1.4),
    "grayscale": lambda im: im.convert("L"),
}

#: the directions (right, down) of shifted crops, one per photo in turn
DIRECTIONS = ((-1, -1), (1, 1), (-1, 1), (1, -1), (-1, 0), (1, 0), (0, -1), (0, 1))


def _rotate(degrees: float, sign: int) -> Transform:
    return lambda im: im.rotate(sign * degrees, resample=Image.Resampling.BICUBIC)


def _straightened(degrees: float) -> Transform:
    """Rotated, then cropped to the largest centred rectangle of the same shape with no black corner."""

    def run(im: Image.Image) -> Image.Image:
        theta, aspect = np.deg2rad(abs(degrees)), max(im.width / im.height, im.height / im.width)
        return _crop(1.0 / (np.cos(theta) + aspect * np.sin(theta)))(im.rotate(degrees, resample=Image.Resampling.BICUBIC))

    return run


#: extra rows, not part of the protocol: name -> photo index -> transform. Small rotations turn
#: counter-clockwise for even photos and clockwise for odd ones; shifted crops move in
#: DIRECTIONS[index % 8] (the 4 corners and the 4 sides), by the shift of each side.
EXTRA: dict[str, Callable[[int], Transform]] = {
    **{f"rotate ±{d}": (lambda i, d=d: _rotate(d, 1 if i % 2 == 0 else -1)) for d in (2, 3, 5, 8, 10)},
    "rotate 5, cropped straight": lambda i: _straightened(5 if i % 2 == 0 else -5),
    "crop 70% shifted 5%": lambda i: _crop(0.7, 0.05, DIRECTIONS[i % 8]),
    "crop 70% shifted 10%": lambda i: _crop(0.7, 0.1, DIRECTIONS[i % 8]),
    "crop 70% shifted 10% up-left": lambda i: _crop(0.7, 0.1),
    "crop 60% shifted 20%": lambda i: _crop(0.6, 0.2, DIRECTIONS[i % 8]),
}
#: the copies of the dedup test: the 15 transforms and small rotations (2, 3 and 5 degrees)
DEDUP_COPIES = (*TRANSFORMS, "rotate ±2", "rotate ±3", "rotate ±5")

#: name -> imageprism configuration (None: imagehash itself)
CONFIGS: dict[str, HashConfig | None] = {
    "imagehash": None,
    "plain": HashConfig.plain(),
    "robust-16 (old default)": HashConfig(rotations=(), shifted_crops=()),
    "+ rotations": HashConfig(shifted_crops=()),
    "+ shifted crops": HashConfig(rotations=()),
    "+ rotations 4, 8": HashConfig(rotations=(4, -4, 8, -8)),
    "robust (default)": HashConfig.robust(),
}


def auc(pos: np.ndarray, neg: np.ndarray) -> float:
    """P(positive score > negative score), ties counting half."""
    greater = (pos[:, None] > neg[None, :]).mean()
    ties = (pos[:, None] == neg[None, :]).mean()
    return float(greater + 0.5 * ties)


def best_accuracy(pos: np.ndarray, neg: np.ndarray) -> tuple[float, float]:
    """(accuracy, threshold) of the best rule ``score >= threshold`` on these pairs."""
    candidates = np.unique(np.concatenate([pos, neg, [np.inf]]))
    hits = [((pos >= t).sum() + (neg < t).sum()) / (len(pos) + len(neg)) for t in candidates]
    best = int(np.argmax(hits))
    return float(hits[best]), float(candidates[best])


class Scorer:
    """Embeds once per input and scores pairs, for imagehash or an imageprism configuration."""

    def __init__(self, config: HashConfig | None) -> None:
        self.config = config
        self.prism = None if config is None else ImagePrism(config={"hash": config})

    def embed(self, item: Image.Image | bytes) -> object:
        if self.prism is not None:
            return self.prism.embed(item)
        image = Image.open(io.BytesIO(item)) if isinstance(item, bytes) else item
        return [imagehash.phash(image), imagehash.dhash(image), imagehash.average_hash(image)]

    def score(self, a: object, b: object) -> float:
        if self.prism is not None:
            return self.prism.compare_embeddings(a, b).scores["hash"]
        return float(np.mean([1.0 - (x - y) / x.hash.size for x, y in zip(a, b)]))


Embeddings = dict[str, list[object]]  # transform -> one embedding per photo


def embed_all(scorer: Scorer, originals: list[Image.Image]) -> tuple[list[object], Embeddings]:
    """The originals' embeddings and, per transform (protocol and extra), their copies'."""
    base = [scorer.embed(im) for im in originals]
    moved = {name: [scorer.embed(t(im)) for im in originals] for name, t in TRANSFORMS.items()}
    moved.update({name: [scorer.embed(make(i)(im)) for i, im in enumerate(originals)] for name, make in EXTRA.items()})
    return base, moved


def evaluate(scorer: Scorer, base: list[object], moved: Embeddings) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """transform -> (positive scores, negative scores)."""
    n = len(base)
    return {
        name: (
            np.array([scorer.score(base[i], copies[i]) for i in range(n)]),
            np.array([scorer.score(base[i], copies[(i + n // 2) % n]) for i in range(n)]),
        )
        for name, copies in moved.items()
    }


def _related(names: list[str], i: int, j: int) -> bool:
    """The same photo, or the two views of the motorcycle stereo pair."""
    return i == j or (names[i].startswith("skimage_motorcycle") and names[j].startswith("skimage_motorcycle"))


def unrelated(scorer: Scorer, base: list[object], moved: Embeddings, names: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(every pair of different dev photos, every photo against every other photo's copies)."""
    n = len(base)
    photos = np.array([scorer.score(base[i], base[j]) for i in range(n) for j in range(i + 1, n) if not _related(names, i, j)])
    copies = np.array([
        scorer.score(base[i], emb[j]) for emb in moved.values() for i in range(n) for j in range(n) if not _related(names, i, j)
    ])
    return photos, copies


def dedup_test(
    config: HashConfig, base: list[object], moved: Embeddings, names: list[str], *, shuffle: bool, seed: int = 18,
    linkage: str = "representative", max_hops: int | None = 2,
) -> tuple[dict[str, float], float, float]:
    """Dedup of the photos plus two random copies each (from DEDUP_COPIES) at threshold 0.9.

    Items go in with the originals first (each copy then meets its original as a
    representative) or, with ``shuffle``, in a random order. Returns (recall per copy
    transform: the fraction of its copies grouped with their original; pair recall over
    the photo-copy and copy-copy pairs of each photo; pair precision over all pairs put
    together, the stereo pair excluded). ``linkage``/``max_hops``: as in ``dedup``.
    """
    rng = np.random.default_rng(seed)
    n = len(base)
    items: list[tuple[int, str | None]] = [(i, None) for i in range(n)]
    for i in range(n):
        items += [(i, str(t)) for t in rng.choice(DEDUP_COPIES, size=2, replace=False)]
    if shuffle:
        items = [items[k] for k in rng.permutation(len(items))]
    prism = ImagePrism(config={"hash": config})
    embeddings = [base[i] if t is None else moved[t][i] for i, t in items]
    labels = prism.dedup_embeddings(embeddings, threshold=0.9, linkage=linkage, max_hops=max_hops).labels  # type: ignore[arg-type]
    where = {(i, t): labels[k] for k, (i, t) in enumerate(items)}
    per: dict[str, list[bool]] = {}
    for i, t in items:
        if t is not None:
            per.setdefault(t, []).append(where[(i, t)] == where[(i, None)])
    together = same = found = 0
    for a in range(len(items)):
        for b in range(a + 1, len(items)):
            i, j = items[a][0], items[b][0]
            joined = labels[a] == labels[b]
            if i == j:
                same += 1
                found += joined
            elif not _related(names, i, j):
                together += joined
    return {t: float(np.mean(v)) for t, v in per.items()}, found / same, found / max(found + together, 1)


def _auc_rows(configs: list[str], results: dict, rows: list[str]) -> None:
    print("\n| transform | " + " | ".join(configs) + " |")
    print("|---|" + "---|" * len(configs))
    for transform in rows:
        cells = []
        for name in configs:
            per = results[name]["pairs"]
            if transform == "overall":
                pos = np.concatenate([per[t][0] for t in TRANSFORMS])
                neg = np.concatenate([per[t][1] for t in TRANSFORMS])
            else:
                pos, neg = per[transform]
            cells.append(f"{auc(pos, neg):.3f} / {best_accuracy(pos, neg)[0]:.2f}")
        label = f"**{transform}**" if transform == "overall" else transform + (" (extra)" if transform in EXTRA else "")
        print(f"| {label} | " + " | ".join(cells) + " |")


#: (label, linkage, max_hops) of the linkage comparison
LINKAGE_RUNS = (("representative", "representative", None), ("connected, max_hops 2 (default)", "connected", 2),
                ("connected, no cap", "connected", None))


def _linkage_rows(prisms: list[str], results: dict, names: list[str], seeds: range = range(18, 28)) -> None:
    """Pair recall and precision of the dedup test per linkage: seed 18 (the table above) and over ten seeds."""
    print("\ndedup test by linkage (threshold 0.9): pair recall / precision; seed 18, then the mean (min) over seeds 18-27\n")
    print("| config | linkage | originals first | shuffled | shuffled, 10 seeds: recall | precision |")
    print("|---|---|---|---|---|---|")
    for n in prisms:
        for label, linkage, hops in LINKAGE_RUNS:
            def run(shuffle: bool, seed: int, n: str = n, linkage: str = linkage, hops: int | None = hops) -> tuple[dict[str, float], float, float]:
                return dedup_test(CONFIGS[n], results[n]["base"], results[n]["moved"], names,  # type: ignore[arg-type]
                                  shuffle=shuffle, seed=seed, linkage=linkage, max_hops=hops)
            first, shuffled = run(False, 18), run(True, 18)
            many = [run(True, seed) for seed in seeds]
            recall, precision = np.array([m[1] for m in many]), np.array([m[2] for m in many])
            print(f"| {n} | {label} | {first[1]:.3f} / {first[2]:.3f} | {shuffled[1]:.3f} / {shuffled[2]:.3f} | "
                  f"{recall.mean():.3f} ({recall.min():.3f}) | {precision.mean():.3f} ({precision.min():.3f}) |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--configs", nargs="*", choices=list(CONFIGS), default=list(CONFIGS))
    args = parser.parse_args()
    paths = sorted(p for p in DEV_IMAGES.iterdir() if p.suffix.lower() in (".png", ".jpg"))
    originals = [Image.open(p).convert("RGB") for p in paths]
    names = [p.stem for p in paths]
    configs = list(args.configs)
    print(f"load average at start: {', '.join(f'{x:.1f}' for x in os.getloadavg())}")
    print(f"{len(originals)} dev photos, {len(TRANSFORMS)} protocol transforms + {len(EXTRA)} extra\n")
    for name in configs:
        cfg = CONFIGS[name]
        if cfg is not None:
            print(f"- {name}: {cfg.n_variants} variants ({cfg.n_variants * len(cfg.algorithms)} rows): {cfg!r}")
    results: dict[str, dict] = {}
    for name in configs:
        scorer = Scorer(CONFIGS[name])
        base, moved = embed_all(scorer, originals)
        photos, copies = unrelated(scorer, base, moved, names)
        results[name] = {"pairs": evaluate(scorer, base, moved), "photos": photos, "copies": copies, "base": base, "moved": moved}

    print("\nROC AUC / accuracy at the best threshold:")
    _auc_rows(configs, results, [*TRANSFORMS, "overall", *EXTRA])

    print("\nscores (mean; min over photos for positives):\n")
    print("| pairs | " + " | ".join(configs) + " |")
    print("|---|" + "---|" * len(configs))
    for transform in ("horizontal flip", "rotate 90", "centre crop 50%", "jpeg q30", *EXTRA):
        cells = [f"{results[n]['pairs'][transform][0].mean():.3f} (min {results[n]['pairs'][transform][0].min():.3f})" for n in configs]
        print(f"| {transform} | " + " | ".join(cells) + " |")
    first = results[configs[0]]
    for q in (50, 99, 100):
        cells = [f"{np.percentile(results[n]['photos'], q):.3f}" for n in configs]
        print(f"| unrelated photos {'max' if q == 100 else f'p{q}'} ({len(first['photos'])} pairs) | " + " | ".join(cells) + " |")
    pooled = {n: np.concatenate([results[n]["photos"], results[n]["copies"]]) for n in configs}
    count = len(pooled[configs[0]])
    for label, stat in (("p99.9", lambda x: f"{np.percentile(x, 99.9):.3f}"), ("max", lambda x: f"{x.max():.3f}"),
                        (">= 0.85", lambda x: str(int((x >= 0.85).sum()))), (">= 0.9", lambda x: str(int((x >= 0.9).sum())))):
        print(f"| unrelated, photos + copies {label} ({count} pairs) | " + " | ".join(stat(pooled[n]) for n in configs) + " |")

    halves = {"even photos": range(0, len(names), 2), "odd photos": range(1, len(names), 2)}
    print("\nheld-out check, each half of the photos alone (rotations 2-5 pooled: AUC, mean score; shifted 10%: AUC):\n")
    print("| half | config | rotate <= 5 AUC | rotate <= 5 mean | crop 70% shifted 10% AUC |")
    print("|---|---|---|---|---|")
    for half, members in halves.items():
        idx = list(members)
        for name in configs:
            per = results[name]["pairs"]
            pos = np.concatenate([per[f"rotate ±{d}"][0][idx] for d in (2, 3, 5)])
            neg = np.concatenate([per[f"rotate ±{d}"][1][idx] for d in (2, 3, 5)])
            shifted = per["crop 70% shifted 10%"]
            print(f"| {half} | {name} | {auc(pos, neg):.3f} | {pos.mean():.3f} | {auc(shifted[0][idx], shifted[1][idx]):.3f} |")

    prisms = [n for n in configs if CONFIGS[n] is not None]
    print("\ndedup of the photos + 2 random copies each (threshold 0.9): recall per copy transform, pair recall, precision\n")
    print("| | " + " | ".join(f"{n}, originals first | {n}, shuffled" for n in prisms) + " |")
    print("|---|" + "---|" * (2 * len(prisms)))
    runs = {
        (n, shuffle): dedup_test(CONFIGS[n], results[n]["base"], results[n]["moved"], names, shuffle=shuffle)  # type: ignore[arg-type]
        for n in prisms for shuffle in (False, True)
    }
    for t in DEDUP_COPIES:
        cells = [f"{runs[(n, s)][0].get(t, float('nan')):.2f}" for n in prisms for s in (False, True)]
        print(f"| {t} | " + " | ".join(cells) + " |")
    print("| **pair recall** | " + " | ".join(f"{runs[(n, s)][1]:.3f}" for n in prisms for s in (False, True)) + " |")
    print("| **pair precision** | " + " | ".join(f"{runs[(n, s)][2]:.3f}" for n in prisms for s in (False, True)) + " |")
    _linkage_rows(prisms, results, names)
    print(f"\nload average at end: {', '.join(f'{x:.1f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
