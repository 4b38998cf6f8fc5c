"""Face speed: detection and embedding time per image, one run, side by side.

Measured through :class:`~imageprism.dimensions.face.FaceDimension`, single
onnxruntime thread, milliseconds (median of ``--repeat`` rounds in which the steps take turns):

* ``detect``: UltraFace RFB-320, the **real** weights from ``../shared/models``
  (preprocess + session + threshold/NMS), per photo;
* ``crop``: the 112x112 face crop (square crop, and the YuNet-style similarity
  warp on five landmarks), per face;
* ``embed``: ArcFace on one crop. The real ONNX-zoo ``arcfaceresnet100-8`` file
  cannot be downloaded here, so this is an **architecture-faithful stand-in**:
  LResNet100E-IR layout (stages 3/13/30/3 of IR units at widths 64/128/256/512,
  BN + PReLU, 512x7x7 -> 512 fully connected), random weights, 260.9 MB against
  the real file's 261.0 MB. Weights do not change the compute, so the time should
  carry over; it is still a stand-in.
* ``pipeline``: ``FaceDimension.embed_batch([photo])`` end to end (detect, crop,
  embed the largest face).

Photos: the shared dev images with faces (astronaut 512x512, kodim14 500x500 with
four faces) plus the astronaut upscaled to 2048x2048 (the detector's input is
always 320x240, so only the resize grows with the photo).

Run:  python benchmarks/face_speed.py [--repeat 7]
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

HERE = Path(__file__).resolve().parent
SHARED = HERE.parent.parent / "shared"
sys.path.insert(0, str(HERE.parent / "tests"))  # the stand-in builder lives with the tests

from face_standins import arcface_standin, save

from imageprism._runtime import ModelRuntime, run_batched
from imageprism.dimensions._face import ARCFACE_TEMPLATE, align_face, arcface_input, square_crop
from imageprism.dimensions.face import FaceConfig, FaceDimension


def interleaved_medians(steps: dict[str, Callable[[], object]], repeat: int) -> dict[str, float]:
    """Median milliseconds of each step; the steps take turns in every round, so load
    from other processes spreads over all of them instead of biasing one."""
    for fn in steps.values():
        fn()  # warm-up
    times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(repeat):
        for name, fn in steps.items():
            t0 = time.perf_counter()
            fn()
            times[name].append((time.perf_counter() - t0) * 1000)
    return {name: statistics.median(values) for name, values in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    detector = SHARED / "models" / "version-RFB-320.onnx"
    images = SHARED / "data" / "dev-images"
    if not detector.is_file():
        sys.exit(f"the real detector is missing: {detector}")

    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        embed_path = save(
            arcface_standin(widths=(64, 128, 256, 512), blocks=(3, 13, 30, 3)), Path(tmp) / "r100_standin.onnx"
        )
        print(f"built the ResNet-100 stand-in ({embed_path.stat().st_size / 1e6:.1f} MB) in {time.perf_counter() - t0:.1f} s")
        runtime = ModelRuntime(cache_dir=tmp, offline=True, threads=1)
        dim = FaceDimension(FaceConfig(detector_path=detector, embed_path=embed_path), runtime)
        model, in_name, out_name = dim._embedder()

        astronaut = Image.open(images / "skimage_astronaut.png").convert("RGB")
        photos = {
            "astronaut 512x512": astronaut,
            "kodim14 500x500 (4 faces)": Image.open(images / "kodim14.png").convert("RGB"),
            "astronaut 2048x2048": astronaut.resize((2048, 2048), Image.Resampling.BICUBIC),
        }
        faces = dim.detect(astronaut)
        box = faces.boxes[0]
        landmarks = ARCFACE_TEMPLATE * (box[2] - box[0]) / 112 + box[:2]
        crop = square_crop(astronaut, box, margin=0.25)
        batch1 = arcface_input([crop])
        batch8 = arcface_input([crop] * 8)

        steps: dict[str, Callable[[], object]] = {
            f"detect (real UltraFace), {name}": (lambda photo=photo: dim.detect(photo)) for name, photo in photos.items()
        }
        steps["square crop to 112x112, per face"] = lambda: square_crop(astronaut, box, margin=0.25)
        steps["aligned warp to 112x112, per face"] = lambda: align_face(astronaut, landmarks)
        steps["embed (R100 stand-in), 1 face"] = lambda: run_batched(
            model, batch1, output_names=[out_name], input_name=in_name
        )
        steps["embed (R100 stand-in), batch of 8"] = lambda: run_batched(
            model, batch8, output_names=[out_name], input_name=in_name
        )
        steps["pipeline embed_batch([astronaut 512x512])"] = lambda: dim.embed_batch([astronaut])
        ms = interleaved_medians(steps, args.repeat)
        ms["embed (R100 stand-in), batch of 8, per face"] = ms.pop("embed (R100 stand-in), batch of 8") / 8

        print(f"\nonnxruntime threads=1, median of {args.repeat} interleaved runs, ms\n")
        print("| step | ms |")
        print("|---|---|")
        for name, value in ms.items():
            print(f"| {name} | {value:.2f} |" if value < 1 else f"| {name} | {value:.1f} |")

        detect = ms["detect (real UltraFace), astronaut 512x512"]
        embed1 = ms["embed (R100 stand-in), 1 face"]
        print("\nratios:")
        print(f"  embed 1 face / detect 512x512 photo: {embed1 / detect:.1f}x")
        print(f"  pipeline / (detect + embed):          {ms['pipeline embed_batch([astronaut 512x512])'] / (detect + embed1):.2f}")
        print(f"  detect 2048x2048 / detect 512x512:    {ms['detect (real UltraFace), astronaut 2048x2048'] / detect:.2f}x")
        print(f"  embed batch of 8 / 1, per face:       {ms['embed (R100 stand-in), batch of 8, per face'] / embed1:.2f}x")
        print(f"  aligned warp / square crop:           {ms['aligned warp to 112x112, per face'] / ms['square crop to 112x112, per face']:.2f}x")
        vec = dim.embed_batch([astronaut])[0]
        assert vec is not None and np.isclose(np.linalg.norm(vec), 1.0, atol=1e-5)


if __name__ == "__main__":
    main()
