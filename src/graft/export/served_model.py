"""The registered model: the exported ONNX graph with a prediction head, served without Graft.

The registry holds what a serving stack loads, so it must load with MLflow and ONNX Runtime
alone: no torch, no Graft, no unpickling. It is the export stage's parity-checked
``model.onnx`` (raw rows in: the NaN fill and the normalization are inside the graph) with a
head added to its ``logits``: ``probabilities`` (softmax) and ``label`` (the class *name* of
the arg-max, from a string constant in the graph). ``mlflow.pyfunc.load_model`` on it runs
ONNX Runtime and, given an array, returns ``{"label": ..., "probabilities": ...}``.

The PyTorch weights Graft warm-starts from are logged beside it (graft.train.champion).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from graft.errors import ExportError

LOGITS_OUTPUT = "logits"
LABEL_OUTPUT = "label"
PROBABILITIES_OUTPUT = "probabilities"
INPUT_NAME = "input"
SERVED_ONNX_FILE = "model.served.onnx"
# In the ONNX model's metadata: "true" when the graph fills NaNs itself (data-prep fitted a
# fill), "false" when a NaN would reach the network and give a meaningless answer; a server
# (graft serve) refuses rows with NaNs unless it reads "true"
FILLS_MISSING_KEY = "graft.fills_missing"


def add_prediction_head(onnx_path: Path, class_names: list[str], out_path: Path) -> Path:
    """``onnx_path``'s graph with outputs ``label`` (string per row) and ``probabilities``
    (softmax over the classes) in place of ``logits``; written to ``out_path``."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    model = onnx.load(str(onnx_path))
    graph = model.graph
    outputs = [o.name for o in graph.output]
    if outputs != [LOGITS_OUTPUT]:
        raise ExportError(f"{onnx_path} has outputs {outputs}, expected ['{LOGITS_OUTPUT}']")
    width = _class_count(graph.output[0])
    if width is not None and width != len(class_names):
        raise ExportError(
            f"{onnx_path} has {width} logits but the dataset names {len(class_names)} classes"
        )
    names = numpy_helper.from_array(np.array(class_names, dtype=object), "graft_class_names")
    graph.initializer.append(names)
    graph.node.extend(
        [
            helper.make_node("Softmax", [LOGITS_OUTPUT], [PROBABILITIES_OUTPUT], axis=1),
            helper.make_node("ArgMax", [LOGITS_OUTPUT], ["graft_class_index"], axis=1, keepdims=0),
            helper.make_node(
                "Gather", ["graft_class_names", "graft_class_index"], [LABEL_OUTPUT], axis=0
            ),
        ]
    )
    del graph.output[:]
    graph.output.extend(
        [
            helper.make_tensor_value_info(LABEL_OUTPUT, TensorProto.STRING, ["batch"]),
            helper.make_tensor_value_info(
                PROBABILITIES_OUTPUT, TensorProto.FLOAT, ["batch", len(class_names)]
            ),
        ]
    )
    onnx.checker.check_model(model)
    onnx.save_model(model, str(out_path))
    return out_path


def _class_count(output: object) -> int | None:
    dims = output.type.tensor_type.shape.dim  # type: ignore[attr-defined]
    return int(dims[1].dim_value) if len(dims) == 2 and dims[1].HasField("dim_value") else None


def predict(onnx_path: Path, rows: np.ndarray) -> dict[str, np.ndarray]:
    """The served model's outputs on ``rows``, through ONNX Runtime as a server calls it."""
    import onnxruntime

    session = onnxruntime.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    label, probabilities = session.run(
        [LABEL_OUTPUT, PROBABILITIES_OUTPUT], {INPUT_NAME: rows.astype(np.float32)}
    )
    return {LABEL_OUTPUT: np.asarray(label), PROBABILITIES_OUTPUT: np.asarray(probabilities)}


def check_head(
    served_path: Path, logits_path: Path, rows: np.ndarray, class_names: list[str]
) -> dict[str, np.ndarray]:
    """The served model's outputs on ``rows``; raises ExportError unless its labels are the
    class names of the exported model's arg-max logits and its probabilities sum to 1."""
    import onnxruntime

    session = onnxruntime.InferenceSession(str(logits_path), providers=["CPUExecutionProvider"])
    (logits,) = session.run([LOGITS_OUTPUT], {INPUT_NAME: rows.astype(np.float32)})
    served = predict(served_path, rows)
    expected = np.array(class_names, dtype=object)[np.asarray(logits).argmax(axis=1)]
    if not np.array_equal(served[LABEL_OUTPUT], expected):
        raise ExportError("the served model's labels differ from the exported model's arg-max")
    if not np.allclose(served[PROBABILITIES_OUTPUT].sum(axis=1), 1.0, atol=1e-4):
        raise ExportError("the served model's probabilities do not sum to 1")
    return served


def record_missing_fill(onnx_path: Path, fills_missing: bool) -> None:
    """Write into the ONNX model at ``onnx_path`` whether its graph fills NaNs
    (:data:`FILLS_MISSING_KEY`); the other metadata stays."""
    import onnx

    model = onnx.load(str(onnx_path))
    props = {prop.key: prop.value for prop in model.metadata_props}
    props[FILLS_MISSING_KEY] = "true" if fills_missing else "false"
    onnx.helper.set_model_props(model, props)
    onnx.save_model(model, str(onnx_path))
