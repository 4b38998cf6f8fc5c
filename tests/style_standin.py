"""A MobileNetV2-shaped stand-in for the style model, built with ``onnx.helper``.

Same interface as the ONNX Model Zoo's ``mobilenetv2-7.onnx``: opset 7, input ``data``
with a fixed batch of 1 ``[1, 3, 224, 224]``, the pooled feature
``mobilenetv20_features_pool0_fwd`` ``[1, C, 1, 1]`` as an *internal* tensor (global
average pool after a ReLU6), then a 1x1 conv and a flatten to the graph output
``mobilenetv20_output_flatten0_reshape0``. The body is one 1x1 conv, so the pooled
feature is easy to compute in numpy: :func:`expected_pool`.
"""

from __future__ import annotations

import numpy as np

POOLED = "mobilenetv20_features_pool0_fwd"
LOGITS = "mobilenetv20_output_flatten0_reshape0"


def standin_weights(channels: int = 16, seed: int = 7) -> tuple[np.ndarray, np.ndarray]:
    """The body conv's weights ``(C, 3)`` and bias ``(C,)``."""
    rng = np.random.default_rng(seed)
    return rng.normal(0, 1, (channels, 3)).astype(np.float32), rng.normal(0, 1, channels).astype(np.float32)


def mobilenet_standin(channels: int = 16, seed: int = 7) -> bytes:
    """The serialised stand-in model."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w, b = standin_weights(channels, seed)
    head = np.cos(np.arange(10 * channels, dtype=np.float32)).reshape(10, channels, 1, 1)
    weights = {"w1": w.reshape(channels, 3, 1, 1), "b1": b, "w2": head}
    nodes = [
        helper.make_node("Conv", ["data", "w1", "b1"], ["body"], kernel_shape=[1, 1]),
        helper.make_node("Clip", ["body"], ["relu6"], min=0.0, max=6.0),
        helper.make_node("GlobalAveragePool", ["relu6"], [POOLED]),
        helper.make_node("Conv", [POOLED, "w2"], ["pred"], kernel_shape=[1, 1]),
        helper.make_node("Flatten", ["pred"], [LOGITS], axis=1),
    ]
    graph = helper.make_graph(
        nodes,
        "mobilenetv2_standin",
        # IR version 3 (like the MXNet export): initializers are also listed as graph inputs
        [helper.make_tensor_value_info("data", TensorProto.FLOAT, [1, 3, 224, 224])]
        + [helper.make_tensor_value_info(k, TensorProto.FLOAT, v.shape) for k, v in weights.items()],
        [helper.make_tensor_value_info(LOGITS, TensorProto.FLOAT, [1, 10])],
        initializer=[numpy_helper.from_array(v, k) for k, v in weights.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 7)], ir_version=3)
    onnx.checker.check_model(model)
    return model.SerializeToString()


def expected_pool(batch: np.ndarray, channels: int = 16, seed: int = 7) -> np.ndarray:
    """The stand-in's pooled feature ``(N, C)`` for a preprocessed ``(N, 3, 224, 224)`` batch, in float64."""
    w, b = standin_weights(channels, seed)
    body = np.einsum("ck,nkhw->nchw", w.astype(np.float64), batch.astype(np.float64)) + b[None, :, None, None]
    return np.clip(body, 0, 6).mean(axis=(2, 3))
