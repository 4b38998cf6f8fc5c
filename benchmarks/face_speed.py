"""Face speed: detection and embedding time per image, one run, side by side.

Measured through :class:`~imageprism.dimensions.face.FaceDimension`, single
onnxruntime thread, milliseconds (median of ``--repeat`` runs):

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

Run:  python benchmarks/face_speed.py [--repeat 5]
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

from face_standins import arcface_standin, save  # noqa: E402

from imageprism._face import ARCFACE_TEMPLATE, align_face, arcface_input, square_crop  # noqa: E402
from imageprism._runtime import ModelRuntime, run_batched  # noqa: E402
from imageprism.dimensions.face import FaceConfig, FaceDimension  # noqa: E402


def median_ms(fn: Callable[[], object], repeat: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=5)
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

        print(f"\nonnxruntime threads=1, median of {args.repeat} runs, ms\n")
        print("| step | ms |")
        print("|---|---|")
        detect_ms = {}
        for name, photo in photos.items():
            detect_ms[name] = median_ms(lambda photo=photo: dim.detect(photo), args.repeat)
            print(f"| detect (real UltraFace), {name} | {detect_ms[name]:.1f} |")
        crop_ms = median_ms(lambda: square_crop(astronaut, box, margin=0.25), args.repeat)
        align_ms = median_ms(lambda: align_face(astronaut, landmarks), args.repeat)
        print(f"| square crop to 112x112, per face | {crop_ms:.2f} |")
        print(f"| aligned warp to 112x112, per face | {align_ms:.2f} |")
        embed1 = median_ms(lambda: run_batched(model, batch1, output_names=[out_name], input_name=in_name), args.repeat)
        embed8 = median_ms(lambda: run_batched(model, batch8, output_names=[out_name], input_name=in_name), args.repeat)
        print(f"| embed (R100 stand-in), 1 face | {embed1:.1f} |")
        print(f"| embed (R100 stand-in), batch of 8, per face | {embed8 / 8:.1f} |")
        pipeline = median_ms(lambda: dim.embed_batch([astronaut]), args.repeat)
        print(f"| pipeline embed_batch([astronaut 512x512]) | {pipeline:.1f} |")

        base = detect_ms["astronaut 512x512"]
        print("\nratios:")
        print(f"  embed 1 face / detect 512x512 photo: {embed1 / base:.1f}x")
        print(f"  pipeline / (detect + embed):          {pipeline / (base + embed1):.2f}")
        print(f"  detect 2048x2048 / detect 512x512:    {detect_ms['astronaut 2048x2048'] / base:.2f}x")
        print(f"  aligned warp / square crop:           {align_ms / crop_ms:.2f}x")
        vec = dim.embed_batch([astronaut])[0]
        assert vec is not None and np.isclose(np.linalg.norm(vec), 1.0, atol=1e-5)


if __name__ == "__main__":
    main()
