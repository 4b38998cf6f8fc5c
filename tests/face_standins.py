"""Small stand-in ONNX graphs with the real I/O contracts of the face models.

- :func:`yunet_standin`: YuNet's input ``input`` [1,3,640,640] and its 12 outputs
  (``cls_8 ... kps_32``, real names and shapes), producing given constant values.
- :func:`arcface_standin`: ArcFace's ``data`` [N,3,112,112] -> ``fc1`` [N,512], shaped
  like the ONNX-zoo model (in-graph ``(x - 127.5) * 0.0078125``, convolutions with
  batch norm and PReLU, a fully connected layer to 512), with random weights.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from imageprism.dimensions._face import YUNET_OUTPUTS, YUNET_SIZE, YUNET_STRIDES

_OPSET = [helper.make_opsetid("", 13)]


def yunet_outputs(cells: Mapping[tuple[int, int], Mapping[str, object]] | None = None) -> dict[str, np.ndarray]:
    """YuNet-shaped output arrays, all zero except the given grid cells.

    ``cells`` maps ``(stride, index)`` to values for ``cls``, ``obj`` (floats),
    ``bbox`` (4 floats) and ``kps`` (10 floats).
    """
    out: dict[str, np.ndarray] = {}
    for s in YUNET_STRIDES:
        n = (YUNET_SIZE // s) ** 2
        out[f"cls_{s}"] = np.zeros((1, n, 1), np.float32)
        out[f"obj_{s}"] = np.zeros((1, n, 1), np.float32)
        out[f"bbox_{s}"] = np.zeros((1, n, 4), np.float32)
        out[f"kps_{s}"] = np.zeros((1, n, 10), np.float32)
    for (s, idx), values in (cells or {}).items():
        for kind, value in values.items():
            out[f"{kind}_{s}"][0, idx] = value
    return out


def yunet_standin(outputs: Mapping[str, np.ndarray]) -> onnx.ModelProto:
    """A graph with YuNet's I/O that returns ``outputs`` (plus 0 x the input's max)."""
    nodes = [
        helper.make_node("ReduceMax", ["input"], ["input_max"], keepdims=0),
        helper.make_node("Mul", ["input_max", "zero"], ["nothing"]),
    ]
    inits = [numpy_helper.from_array(np.array(0.0, np.float32), "zero")]
    graph_outputs = []
    for name in YUNET_OUTPUTS:
        value = np.asarray(outputs[name], np.float32)
        inits.append(numpy_helper.from_array(value, f"{name}_value"))
        nodes.append(helper.make_node("Add", [f"{name}_value", "nothing"], [name]))
        graph_outputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, list(value.shape)))
    graph = helper.make_graph(
        nodes,
        "yunet_standin",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, YUNET_SIZE, YUNET_SIZE])],
        graph_outputs,
        inits,
    )
    model = helper.make_model(graph, opset_imports=_OPSET, ir_version=8)
    onnx.checker.check_model(model)
    return model


def arcface_standin(
    *, seed: int = 0, widths: tuple[int, ...] = (8, 8, 16, 16), blocks: int | tuple[int, ...] = 1
) -> onnx.ModelProto:
    """An ArcFace-shaped embedder with random weights: ``data`` [N,3,112,112] -> ``fc1`` [N,512].

    Stem conv 3x3, then per width a stride-2 stage of ``blocks`` residual units
    (BN, conv 3x3, BN, PReLU, conv 3x3 with the stride, BN, plus shortcut), BN,
    flatten, Gemm to 512. ``widths=(64, 128, 256, 512), blocks=(3, 13, 30, 3)`` is the
    LResNet100E-IR layout of the ONNX-zoo model (about 65 M parameters).
    """
    rng = np.random.default_rng(seed)
    nodes: list[onnx.NodeProto] = []
    inits: list[onnx.TensorProto] = []
    counter = iter(range(10**6))

    def const(value: np.ndarray) -> str:
        name = f"w{next(counter)}"
        inits.append(numpy_helper.from_array(np.asarray(value, np.float32), name))
        return name

    def op(kind: str, inputs: list[str], **attrs: object) -> str:
        name = f"t{next(counter)}"
        nodes.append(helper.make_node(kind, inputs, [name], **attrs))
        return name

    def conv(x: str, cin: int, cout: int, stride: int) -> str:
        w = rng.normal(0, np.sqrt(2.0 / (9 * cin)), (cout, cin, 3, 3))
        return op("Conv", [x, const(w)], kernel_shape=[3, 3], pads=[1, 1, 1, 1], strides=[stride, stride])

    def bn(x: str, c: int) -> str:
        scale, bias = rng.uniform(0.5, 1.5, c), rng.normal(0, 0.1, c)
        return op("BatchNormalization", [x, const(scale), const(bias), const(np.zeros(c)), const(np.ones(c))])

    def prelu(x: str, c: int) -> str:
        return op("PRelu", [x, const(np.full((c, 1, 1), 0.25))])

    x = op("Mul", [op("Sub", ["data", const(np.array(127.5))]), const(np.array(0.0078125))])
    c = widths[0]
    x = prelu(bn(conv(x, 3, c, 1), c), c)
    per_stage = (blocks,) * len(widths) if isinstance(blocks, int) else blocks
    for width, count in zip(widths, per_stage):
        for b in range(count):
            stride = 2 if b == 0 else 1
            y = conv(prelu(bn(conv(bn(x, c), c, width, 1), width), width), width, width, stride)
            y = bn(y, width)
            if stride == 1 and c == width:
                short = x
            else:
                w = rng.normal(0, np.sqrt(1.0 / c), (width, c, 1, 1))
                short = bn(op("Conv", [x, const(w)], kernel_shape=[1, 1], strides=[stride, stride]), width)
            x = op("Add", [y, short])
            c = width
    side = 112 // 2 ** len(widths)
    x = op("Flatten", [bn(x, c)], axis=1)
    w = rng.normal(0, np.sqrt(1.0 / (c * side * side)), (c * side * side, 512))
    x = op("Gemm", [x, const(w), const(np.zeros(512))])
    nodes.append(helper.make_node("Identity", [x], ["fc1"]))
    graph = helper.make_graph(
        nodes,
        "arcface_standin",
        [helper.make_tensor_value_info("data", TensorProto.FLOAT, ["N", 3, 112, 112])],
        [helper.make_tensor_value_info("fc1", TensorProto.FLOAT, ["N", 512])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=_OPSET, ir_version=8)
    onnx.checker.check_model(model)
    return model


def save(model: onnx.ModelProto, path: Path) -> Path:
    """Write ``model`` to ``path`` and return the path."""
    onnx.save(model, str(path))
    return path
