"""Before and after a change of the hash path: CPU ms per image of ``embed_batch`` on small JPEGs.

Two checkouts of imageprism (``--before``, e.g. a ``git worktree`` of an older commit, and this
one) and the bare reduced-size decode take turns, each side in a fresh process, for ``--rounds``
rounds; the best round of each is kept. The JPEGs are ``benchmarks/scale.py``'s throughput folder
(0.1-0.5 MP). CPU time (``time.process_time``) rather than wall time, so that other jobs on a shared
machine count as little as possible; the load average is printed per round.

Run:  git worktree add /tmp/imageprism-before dc2f494
      PYTHONPATH=. python benchmarks/hash_before_after.py --before /tmp/imageprism-before [--images 300] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent

SIDE = """
import os, sys, time
from pathlib import Path
from PIL import Image
paths = sorted(Path(sys.argv[1]).iterdir())[: int(sys.argv[2])]
if sys.argv[3] == "bare":
    def run():
        for p in paths:
            with Image.open(p) as im:
                scale = 64 / min(im.size)
                if scale < 1:
                    im.draft("L", (int(im.size[0] * scale + 0.999), int(im.size[1] * scale + 0.999)))
                im.load()
else:
    import imageprism
    from imageprism import EmbeddingCache, ImagePrism
    assert Path(imageprism.__file__).parent.parent == Path.cwd(), imageprism.__file__
    prism = ImagePrism(cache=EmbeddingCache(max_entries=0))
    prism.embed_batch(paths[:20])
    def run():
        prism.embed_batch(paths, workers=1)
start = time.process_time()
run()
print((time.process_time() - start) / len(paths) * 1e3, os.getloadavg()[0])
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--before", type=Path, required=True, help="root of the older checkout")
    parser.add_argument("--work", type=Path, default=Path("/tmp/imageprism-scale"))
    parser.add_argument("--images", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    sys.path.insert(0, str(HERE))
    from scale import generate

    folder = (args.work / "jpegs-1000").resolve()
    generate(folder, 1000)
    sides = {"before": args.before.resolve(), "after": HERE.parent, "bare": HERE.parent}
    best = dict.fromkeys(sides, float("inf"))
    for r in range(args.rounds):
        loads = []
        for name, root in sides.items():
            out = subprocess.run(
                [sys.executable, "-c", SIDE, str(folder), str(args.images), name], env=dict(os.environ, PYTHONPATH=str(root)),
                cwd=root, check=True, capture_output=True, text=True,  # python -c imports from its working directory first
            ).stdout.split()
            best[name] = min(best[name], float(out[0]))
            loads.append(out[1])
        print(f"round {r + 1}: load {', '.join(f'{float(x):.1f}' for x in loads)}")
    print(f"\n| CPU ms per image ({args.images} JPEGs) | before | after | bare reduced decode | before / bare | after / bare | before / after |")
    print("|---|---|---|---|---|---|---|")
    b, a, f = best["before"], best["after"], best["bare"]
    print(f"| embed_batch(workers=1), default hash | {b:.2f} | {a:.2f} | {f:.2f} | {b / f:.2f}x | {a / f:.2f}x | {b / a:.2f}x |")


if __name__ == "__main__":
    main()
