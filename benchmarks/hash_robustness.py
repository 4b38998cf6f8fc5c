"""Hash robustness: the 15-transform protocol, imageprism configurations beside imagehash.

For every dev photo ``i`` and transform ``T``: a positive pair ``(i, T(i))`` and a
negative pair ``(i, T(j))`` with ``j = (i + n // 2) mod n`` a different photo (this
partner never pairs the two views of the motorcycle stereo pair), so as many
negatives as positives. Scores are the ``hash`` score of each configuration
(``ImagePrism(config=...).compare``) and, for imagehash, the mean over pHash, dHash
and aHash of the fraction of equal bits. Reported per transform and overall (all
transforms pooled): ROC AUC (ties count half) and the accuracy at the best
threshold for that set. Also: the distribution of scores over every pair of
different dev photos (the unrelated-pair scores), and two extra, non-protocol rows,
70% crops shifted off centre by 5% and 10% of each side.

JPEG transforms are passed as the encoded bytes (so imageprism's reduced decode
takes part, and imagehash decodes them with ``Image.open``); the others as PIL images.

Run:  python benchmarks/hash_robustness.py [--markdown]
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
from imageprism.dimensions.hash import ROBUST_CROP_SCALES

DEV_IMAGES = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "dev-images"



def _jpeg(quality: int) -> Callable[[Image.Image], bytes]:
    def run(image: Image.Image) -> bytes:
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=quality)
        return buffer.getvalue()

    return run


def _scale(factor: float) -> Callable[[Image.Image], Image.Image]:
    return lambda im: im.resize((round(im.width * factor), round(im.height * factor)), Image.Resampling.BICUBIC)


def _crop(fraction: float, shift: float = 0.0) -> Callable[[Image.Image], Image.Image]:
    """A crop keeping ``fraction`` of each side, centred, then moved by ``shift`` of each side up-left."""

    def run(im: Image.Image) -> Image.Image:
        w, h = round(im.width * fraction), round(im.height * fraction)
        left, top = round((im.width - w) / 2 - shift * im.width), round((im.height - h) / 2 - shift * im.height)
        return im.crop((left, top, left + w, top + h))

    return run


def _noise(sigma: float) -> Callable[[Image.Image], Image.Image]:
    def run(im: Image.Image) -> Image.Image:
        rng = np.random.default_rng(0)
        pixels = np.asarray(im, dtype=np.float64) + rng.normal(0.0, sigma, (im.height, im.width, 3))
        return Image.fromarray(np.clip(np.rint(pixels), 0, 255).astype(np.uint8))

    return run


TRANSFORMS: dict[str, Callable[[Image.Image], Image.Image | bytes]] = {
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
EXTRA = {"crop 70% shifted 5%": _crop(0.7, shift=0.05), "crop 70% shifted 10%": _crop(0.7, shift=0.1)}

#: name -> imageprism configuration (None: imagehash itself)
CONFIGS: dict[str, HashConfig | None] = {
    "imagehash": None,
    "plain (old default)": HashConfig.plain(),
    "dihedral": HashConfig(geometry="dihedral"),
    "crops": HashConfig(geometry="none", crop_scales=ROBUST_CROP_SCALES),
    "dihedral + crops 8 ways": HashConfig(geometry="dihedral", crop_scales=ROBUST_CROP_SCALES),
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


def evaluate(scorer: Scorer, originals: list[Image.Image], transforms: dict[str, Callable]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """transform -> (positive scores, negative scores)."""
    n = len(originals)
    base = [scorer.embed(im) for im in originals]
    out = {}
    for name, transform in transforms.items():
        moved = [scorer.embed(transform(im)) for im in originals]
        pos = np.array([scorer.score(base[i], moved[i]) for i in range(n)])
        neg = np.array([scorer.score(base[i], moved[(i + n // 2) % n]) for i in range(n)])
        out[name] = (pos, neg)
    return out


def unrelated(scorer: Scorer, originals: list[Image.Image], names: list[str]) -> np.ndarray:
    """Scores of every pair of different dev photos (the stereo pair left out)."""
    emb = [scorer.embed(im) for im in originals]
    return np.array([
        scorer.score(emb[i], emb[j])
        for i in range(len(emb)) for j in range(i + 1, len(emb))
        if not (names[i].startswith("skimage_motorcycle") and names[j].startswith("skimage_motorcycle"))
    ])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--configs", nargs="*", choices=list(CONFIGS), default=list(CONFIGS))
    args = parser.parse_args()
    paths = sorted(p for p in DEV_IMAGES.iterdir() if p.suffix.lower() in (".png", ".jpg"))
    originals = [Image.open(p).convert("RGB") for p in paths]
    names = [p.stem for p in paths]
    configs = {name: CONFIGS[name] for name in args.configs}
    print(f"{len(originals)} dev photos, {len(TRANSFORMS)} transforms; cells: AUC / best-threshold accuracy\n")
    for name, cfg in configs.items():
        if cfg is not None:
            print(f"- {name}: {cfg!r}")
    results = {}
    for name, cfg in configs.items():
        scorer = Scorer(cfg)
        results[name] = (evaluate(scorer, originals, {**TRANSFORMS, **EXTRA}), unrelated(scorer, originals, names))

    print("\n| transform | " + " | ".join(configs) + " |")
    print("|---|" + "---|" * len(configs))
    for transform in [*TRANSFORMS, "overall", *EXTRA]:
        cells = []
        for name in configs:
            per = results[name][0]
            if transform == "overall":
                pos = np.concatenate([per[t][0] for t in TRANSFORMS])
                neg = np.concatenate([per[t][1] for t in TRANSFORMS])
            else:
                pos, neg = per[transform]
            cells.append(f"{auc(pos, neg):.3f} / {best_accuracy(pos, neg)[0]:.2f}")
        label = f"**{transform}**" if transform == "overall" else transform + (" (extra)" if transform in EXTRA else "")
        print(f"| {label} | " + " | ".join(cells) + " |")

    print("\nscores (mean; min over photos for positives):\n")
    print("| pairs | " + " | ".join(configs) + " |")
    print("|---|" + "---|" * len(configs))
    for transform in ("horizontal flip", "rotate 90", "centre crop 50%", *EXTRA, "jpeg q30", "rotate 5"):
        cells = [f"{results[n][0][transform][0].mean():.3f} (min {results[n][0][transform][0].min():.3f})" for n in configs]
        print(f"| {transform} | " + " | ".join(cells) + " |")
    qs = (50, 90, 99, 100)
    for q in qs:
        cells = [f"{np.percentile(results[n][1], q):.3f}" for n in configs]
        label = "max" if q == 100 else f"p{q}"
        print(f"| unrelated {label} ({len(results[next(iter(configs))][1])} pairs) | " + " | ".join(cells) + " |")
    overall_thr = []
    for n in configs:
        per = results[n][0]
        pos = np.concatenate([per[t][0] for t in TRANSFORMS])
        neg = np.concatenate([per[t][1] for t in TRANSFORMS])
        overall_thr.append(f"{best_accuracy(pos, neg)[1]:.3f}")
    print("| best overall threshold | " + " | ".join(overall_thr) + " |")


if __name__ == "__main__":
    main()
