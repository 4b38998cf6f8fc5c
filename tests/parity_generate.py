"""Build the parity fixtures: tiny random-weight CLIP and DINOv2 models and their reference vectors.

Run from the repository root (needs torch==2.13.0 and transformers; CI does not)::

    python tests/parity_generate.py

It writes ``tests/data/parity/``:

* ``clip_vision_tiny.onnx``: a ``CLIPVisionModelWithProjection`` from a small config
  (224 px input, 32 px patches, 512-d projection like ViT-B/32), exported with the real
  file's tensor names: input ``pixel_values``, outputs ``image_embeds`` and ``last_hidden_state``.
* ``dinov2_tiny.onnx``: a ``Dinov2Model`` from a small config (patch 14, position
  embeddings for 518 px and interpolated, like dinov2-small), input ``pixel_values``,
  outputs ``last_hidden_state`` and ``pooler_output``.
* ``reference.npz``: for every parity input (``tests/parity_inputs.py``), the vectors
  transformers computes with its own image processor and the torch model: ``semantic``
  = ``image_embeds``, ``instance`` = ``last_hidden_state[:, 0]``, before normalisation;
  plus the input names and pixel digests.
* ``manifest.json``: versions, configs and processor settings used.

Reference processors: transformers 5.x ``CLIPImageProcessorPil`` and ``BitImageProcessorPil``
(the PIL backend: the old "slow" processors, and what ``AutoImageProcessor`` returns when
torchvision is not installed). With torchvision installed, transformers 5 defaults to the
torchvision backend, whose resize is torchvision's own (transformers documents small output
differences; not measured here, torchvision is not installed). The published
``preprocessor_config.json`` files predate that backend, so PIL is the reference.

Weights are random (fixed seed) and larger than transformers' default init, so that the
outputs depend strongly on the pixels and a preprocessing slip shows up. The export
helpers are reused by ``benchmarks/build_standins.py``.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np

TESTS = Path(__file__).resolve().parent
sys.path.insert(0, str(TESTS))
from parity_inputs import parity_inputs, pixel_digest

REPO = TESTS.parent
DEFAULT_OUT = TESTS / "data" / "parity"
DEFAULT_DEV_IMAGES = REPO.parent / "shared" / "data" / "dev-images"

CLIP_FILE = "clip_vision_tiny.onnx"
DINOV2_FILE = "dinov2_tiny.onnx"
REFERENCE_FILE = "reference.npz"
SEED = 20261122
OPSET = 17

#: small configs; everything not named keeps the ViT-B/32 / dinov2-small default
TINY_CLIP: dict[str, Any] = dict(
    hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
    image_size=224, patch_size=32, projection_dim=512,
)
TINY_DINOV2: dict[str, Any] = dict(
    hidden_size=32, num_hidden_layers=2, num_attention_heads=4, mlp_ratio=2,
    image_size=518, patch_size=14,
)


def clip_processor():  # type: ignore[no-untyped-def]
    """transformers' CLIP image processor, PIL backend, with the ViT-B/32 preprocessor_config values."""
    from transformers import CLIPImageProcessorPil

    return CLIPImageProcessorPil(
        do_convert_rgb=True, size={"shortest_edge": 224}, resample=3, do_center_crop=True,
        crop_size={"height": 224, "width": 224}, do_rescale=True, rescale_factor=1 / 255,
        do_normalize=True, image_mean=[0.48145466, 0.4578275, 0.40821073],
        image_std=[0.26862954, 0.26130258, 0.27577711],
    )


def dinov2_processor():  # type: ignore[no-untyped-def]
    """transformers' DINOv2 image processor (BitImageProcessor), PIL backend, dinov2-small values."""
    from transformers import BitImageProcessorPil

    return BitImageProcessorPil(
        do_convert_rgb=True, size={"shortest_edge": 256}, resample=3, do_center_crop=True,
        crop_size={"height": 224, "width": 224}, do_rescale=True, rescale_factor=1 / 255,
        do_normalize=True, image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225],
    )


def randomize(model, seed: int) -> None:  # type: ignore[no-untyped-def]
    """Re-draw every weight: matrices N(0, 1/fan_in), norms' scales 1 + N(0, 0.1), the rest N(0, 0.2)."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=gen)
            if p.ndim >= 2:
                p.copy_(noise / math.sqrt(p[0].numel()))
            elif "norm" in name and name.endswith("weight"):
                p.copy_(1 + 0.1 * noise)
            else:
                p.copy_(0.2 * noise)


def build_clip(config: dict[str, Any], seed: int = SEED):  # type: ignore[no-untyped-def]
    """A ``CLIPVisionModelWithProjection`` with random weights (eval mode)."""
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    model = CLIPVisionModelWithProjection(CLIPVisionConfig(**config)).eval()
    randomize(model, seed)
    return model


def build_dinov2(config: dict[str, Any], seed: int = SEED):  # type: ignore[no-untyped-def]
    """A ``Dinov2Model`` with random weights (eval mode)."""
    from transformers import Dinov2Config, Dinov2Model

    model = Dinov2Model(Dinov2Config(**config)).eval()
    randomize(model, seed)
    return model


def export_clip(model, path: Path) -> None:  # type: ignore[no-untyped-def]
    """Export like Xenova's ``vision_model*.onnx``: ``pixel_values`` -> ``image_embeds``, ``last_hidden_state``."""
    import torch

    class Tower(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, pixel_values):  # type: ignore[no-untyped-def]
            out = self.model(pixel_values=pixel_values)
            return out.image_embeds, out.last_hidden_state

    _export(Tower(), path, ["image_embeds", "last_hidden_state"], {"last_hidden_state": {0: "batch_size"}})


def export_dinov2(model, path: Path) -> None:  # type: ignore[no-untyped-def]
    """Export like Xenova's dinov2 ``model.onnx``: ``pixel_values`` -> ``last_hidden_state``, ``pooler_output``."""
    import torch

    class Backbone(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, pixel_values):  # type: ignore[no-untyped-def]
            out = self.model(pixel_values=pixel_values)
            return out.last_hidden_state, out.pooler_output

    _export(Backbone(), path, ["last_hidden_state", "pooler_output"], {"pooler_output": {0: "batch_size"}})


def _export(module, path: Path, outputs: list[str], extra_axes: dict[str, dict[int, str]]) -> None:  # type: ignore[no-untyped-def]
    import torch

    axes = {"pixel_values": {0: "batch_size"}, outputs[0]: {0: "batch_size"}, **extra_axes}
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():  # the TorchScript exporter's tracer and deprecation chatter
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module, (torch.zeros(2, 3, 224, 224),), str(path), input_names=["pixel_values"], output_names=outputs,
            dynamic_axes=axes, opset_version=OPSET, dynamo=False,
        )


def pil_input(array: np.ndarray):  # type: ignore[no-untyped-def]
    """The PIL image transformers gets for a parity array (L, RGB or RGBA)."""
    from PIL import Image

    return Image.fromarray(array)


def reference_pixel_values(processor, arrays: dict[str, np.ndarray]) -> np.ndarray:  # type: ignore[no-untyped-def]
    """``(N, 3, 224, 224)`` float32 from transformers' own processor, one image at a time."""
    return np.concatenate([processor(images=pil_input(a), return_tensors="np")["pixel_values"] for a in arrays.values()])


def reference_vectors(clip, dinov2, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:  # type: ignore[no-untyped-def]
    """The torch models' vectors (before normalisation) on the processors' pixel values."""
    import torch

    with torch.no_grad():
        clip_out = clip(pixel_values=torch.from_numpy(reference_pixel_values(clip_processor(), arrays)))
        dino_out = dinov2(pixel_values=torch.from_numpy(reference_pixel_values(dinov2_processor(), arrays)))
    cls = dino_out.last_hidden_state[:, 0, :]
    if not torch.equal(cls, dino_out.pooler_output):
        raise AssertionError("DINOv2 pooler_output is not last_hidden_state[:, 0]")
    return {"semantic": clip_out.image_embeds.numpy(), "instance": cls.numpy()}


def generate(out: Path = DEFAULT_OUT, dev_images: Path = DEFAULT_DEV_IMAGES) -> dict[str, np.ndarray]:
    """Build the models, export them to ``out`` and write the reference arrays; returns those arrays."""
    import PIL
    import torch
    import transformers

    arrays = parity_inputs(dev_images)
    clip = build_clip(TINY_CLIP)
    dinov2 = build_dinov2(TINY_DINOV2)
    export_clip(clip, out / CLIP_FILE)
    export_dinov2(dinov2, out / DINOV2_FILE)
    vectors = reference_vectors(clip, dinov2, arrays)
    names = np.array(list(arrays))
    digests = np.array([pixel_digest(a) for a in arrays.values()])
    np.savez_compressed(out / REFERENCE_FILE, names=names, digests=digests, **vectors)
    manifest = {
        "command": "python tests/parity_generate.py",
        "seed": SEED,
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__, "pillow": PIL.__version__},
        "models": {
            CLIP_FILE: {"class": "CLIPVisionModelWithProjection", "config": TINY_CLIP, "opset": OPSET},
            DINOV2_FILE: {"class": "Dinov2Model", "config": TINY_DINOV2, "opset": OPSET},
        },
        "processors": {
            "semantic": {"class": "CLIPImageProcessorPil", **_settings(clip_processor())},
            "instance": {"class": "BitImageProcessorPil", **_settings(dinov2_processor())},
        },
        "inputs": {name: {"shape": list(a.shape), "sha256": pixel_digest(a)} for name, a in arrays.items()},
        "vectors": {"semantic": "image_embeds", "instance": "last_hidden_state[:, 0] (== pooler_output)"},
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return vectors


def _settings(processor) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    keys = ("size", "resample", "crop_size", "rescale_factor", "image_mean", "image_std", "do_convert_rgb")
    d = processor.to_dict()
    return {k: d[k] for k in keys}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"output folder (default {DEFAULT_OUT})")
    parser.add_argument("--dev-images", type=Path, default=DEFAULT_DEV_IMAGES, help="the shared dev-images folder")
    args = parser.parse_args(argv)
    generate(args.out, args.dev_images)
    for path in sorted(args.out.iterdir()):
        print(f"{path.stat().st_size:>9}  {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
