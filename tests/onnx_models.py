"""A small served ONNX model for tests that need a registry version, built without training."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from graft.export.served_model import INPUT_NAME, LOGITS_OUTPUT, add_prediction_head, predict


def served_onnx(folder: Path, features: int = 3, class_names: tuple[str, ...] = ("no", "yes")):
    """A linear classifier's graph with Graft's prediction head, its example rows and the
    outputs on them: what registry.register_model takes."""
    rng = np.random.default_rng(0)
    weight = numpy_helper.from_array(
        rng.normal(size=(features, len(class_names))).astype(np.float32), "weight"
    )
    graph = helper.make_graph(
        [helper.make_node("MatMul", [INPUT_NAME, "weight"], [LOGITS_OUTPUT])],
        "linear",
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, ["batch", features])],
        [
            helper.make_tensor_value_info(
                LOGITS_OUTPUT, TensorProto.FLOAT, ["batch", len(class_names)]
            )
        ],
        initializer=[weight],
    )
    folder.mkdir(parents=True, exist_ok=True)
    logits_path = folder / "linear.onnx"
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 10  # what the installed ONNX Runtime reads
    onnx.save_model(model, str(logits_path))
    served = add_prediction_head(logits_path, list(class_names), folder / "served.onnx")
    example = rng.normal(size=(4, features)).astype(np.float32)
    outputs: dict[str, Any] = predict(served, example)
    return served, example, outputs
