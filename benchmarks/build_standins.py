"""Build full-size, random-weight stand-ins of the three default embedding models.

    python benchmarks/build_standins.py          # needs torch, transformers, onnx (~1-2 min)

Writes ``benchmarks/.models/`` (git-ignored, ~230 MB; never committed):

* ``clip-vit-base-patch32/vision_model_quantized.onnx``: ``CLIPVisionModelWithProjection``
  with the default (ViT-B/32) config, exported as ``pixel_values`` -> ``image_embeds``,
  ``last_hidden_state`` and dynamically quantized with onnxruntime's quantizer (int8
  weights, per channel, like the real ~89 MB file). The folder also holds
  ``model.onnx`` (the same quantized file), ``config.json`` and ``preprocessor_config.json``
  so that fastembed can load it as a local model.
* ``dinov2-small/model.onnx``: ``Dinov2Model`` with the dinov2-small config (384 wide,
  12 layers, 6 heads, 518 px position grid), fp32, ``pixel_values`` -> ``last_hidden_state``.
* ``mobilenetv2-7/mobilenetv2-7.onnx``: MobileNetV2 1.0/224 (torchvision's layout, written
  out here), opset 7, input ``data`` with a fixed batch of 1, the pooled feature
  ``mobilenetv20_features_pool0_fwd`` internal, logits ``mobilenetv20_output_flatten0_reshape0``
  — the zoo file's interface.

Only the weights differ from the real files, so inference cost is the same.
"""

from __future__ import annotations

import json
import shutil
import sys
import warnings
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))
import parity_generate

OUT = HERE / ".models"
CLIP_DIR = OUT / "clip-vit-base-patch32"
DINO_DIR = OUT / "dinov2-small"
MOBILENET_DIR = OUT / "mobilenetv2-7"
POOLED = "mobilenetv20_features_pool0_fwd"
LOGITS = "mobilenetv20_output_flatten0_reshape0"

DINOV2_SMALL = dict(hidden_size=384, num_hidden_layers=12, num_attention_heads=6, mlp_ratio=4,
                    image_size=518, patch_size=14)
CLIP_PREPROCESSOR = {
    "crop_size": {"height": 224, "width": 224}, "do_center_crop": True, "do_convert_rgb": True,
    "do_normalize": True, "do_rescale": True, "do_resize": True,
    "image_mean": [0.48145466, 0.4578275, 0.40821073], "image_std": [0.26862954, 0.26130258, 0.27577711],
    "image_processor_type": "CLIPImageProcessor", "resample": 3, "rescale_factor": 1 / 255,
    "size": {"shortest_edge": 224},
}


def build_clip() -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    CLIP_DIR.mkdir(parents=True, exist_ok=True)
    fp32 = CLIP_DIR / "vision_model.onnx"
    parity_generate.export_clip(parity_generate.build_clip({}), fp32)  # default config = ViT-B/32
    quantized = CLIP_DIR / "vision_model_quantized.onnx"
    quantize_dynamic(str(fp32), str(quantized), weight_type=QuantType.QUInt8, per_channel=True, reduce_range=True)
    fp32.unlink()
    shutil.copyfile(quantized, CLIP_DIR / "model.onnx")
    config = {"model_type": "clip_vision_model", "projection_dim": 512, "image_size": 224, "patch_size": 32}
    (CLIP_DIR / "config.json").write_text(json.dumps(config, indent=2))
    (CLIP_DIR / "preprocessor_config.json").write_text(json.dumps(CLIP_PREPROCESSOR, indent=2))


def build_dinov2() -> None:
    parity_generate.export_dinov2(parity_generate.build_dinov2(DINOV2_SMALL), DINO_DIR / "model.onnx")


def mobilenet_v2():  # type: ignore[no-untyped-def]
    """MobileNetV2 1.0 (Sandler et al. 2018) with a 1x1-conv classifier after the pool, like the zoo's MXNet model."""
    import torch
    from torch import nn

    def conv_bn(cin: int, cout: int, k: int, stride: int, groups: int = 1, act: bool = True) -> nn.Sequential:
        layers: list[nn.Module] = [nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]
        if act:
            layers.append(nn.ReLU6())
        return nn.Sequential(*layers)

    class InvertedResidual(nn.Module):
        def __init__(self, cin: int, cout: int, stride: int, expand: int) -> None:
            super().__init__()
            hidden = cin * expand
            layers = [conv_bn(cin, hidden, 1, 1)] if expand != 1 else []
            layers += [conv_bn(hidden, hidden, 3, stride, groups=hidden), conv_bn(hidden, cout, 1, 1, act=False)]
            self.body = nn.Sequential(*layers)
            self.residual = stride == 1 and cin == cout

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x + self.body(x) if self.residual else self.body(x)

    class MobileNetV2(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            blocks: list[nn.Module] = [conv_bn(3, 32, 3, 2)]
            cin = 32
            for t, c, n, s in [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
                               (6, 160, 3, 2), (6, 320, 1, 1)]:
                for i in range(n):
                    blocks.append(InvertedResidual(cin, c, s if i == 0 else 1, t))
                    cin = c
            blocks.append(conv_bn(cin, 1280, 1, 1))
            self.features = nn.Sequential(*blocks)
            self.pool = nn.AdaptiveAvgPool2d(1)
            self.pred = nn.Conv2d(1280, 1000, 1)

        def forward(self, data: torch.Tensor) -> torch.Tensor:
            return torch.flatten(self.pred(self.pool(self.features(data))), 1)

    return MobileNetV2().eval()


def build_mobilenet() -> None:
    import onnx
    import torch

    MOBILENET_DIR.mkdir(parents=True, exist_ok=True)
    path = MOBILENET_DIR / "mobilenetv2-7.onnx"
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(mobilenet_v2(), (torch.zeros(1, 3, 224, 224),), str(path), input_names=["data"],
                          output_names=[LOGITS], opset_version=7, dynamo=False)
    model = onnx.load(str(path))
    (pool,) = [n for n in model.graph.node if n.op_type == "GlobalAveragePool"]
    old = pool.output[0]
    for node in model.graph.node:  # give the pooled tensor the zoo's name
        node.input[:] = [POOLED if name == old else name for name in node.input]
        node.output[:] = [POOLED if name == old else name for name in node.output]
    onnx.save(model, str(path))


def main() -> int:
    for build in (build_clip, build_dinov2, build_mobilenet):
        build()
    for path in sorted(OUT.rglob("*.onnx")):
        print(f"{path.stat().st_size / 1e6:8.1f} MB  {path.relative_to(HERE)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
