"""Smaller and faster variants of an exported model, each with its accuracy delta measured.

- int8: dynamic quantization of every ``nn.Linear`` (weights int8, activations quantized on
  the fly), saved as TorchScript; for CPU serving.
- fp16: ONNX graph whose backbone and head run in float16 (float32 input and logits; the
  input standardization stays in float32 so raw features beyond fp16's range do not
  overflow); for GPU serving, runnable on CPU through onnxruntime.
"""

from __future__ import annotations

import copy
import statistics
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from graft.data.preprocessing import MissingValueFill
from graft.data.raw_input_model import with_missing_fill
from graft.export.formats import export_onnx, export_torchscript
from graft.nn.models import GraftNet


@dataclass
class VariantReport:
    """One exported variant measured on held-out rows (the validation split, at export)
    against the fp32 model."""

    name: str
    path: str
    accuracy: float
    accuracy_delta: float  # variant accuracy - fp32 accuracy, on the same rows
    max_abs_diff: float  # largest logit difference to fp32 on those rows
    size_bytes: int
    latency_ms: dict[str, float]  # "batch_1", "batch_64": median milliseconds per call


def quantize_int8(model: nn.Module) -> nn.Module:
    """Dynamic int8 quantization of the Linear layers (eval-mode copy; ``model`` untouched)."""
    with warnings.catch_warnings():
        # torch.ao.quantization is deprecated in favour of torchao, which Graft does not
        # depend on; the eager API still works in the pinned torch.
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", UserWarning)
        quantized: nn.Module = torch.ao.quantization.quantize_dynamic(
            copy.deepcopy(model).eval(), {nn.Linear}, dtype=torch.qint8
        )
    return quantized


class HalfPrecisionNet(nn.Module):
    """Standardization in float32, everything after it in float16, logits back in float32."""

    def __init__(self, model: GraftNet) -> None:
        super().__init__()
        source = copy.deepcopy(model).eval()
        self.stem = source.stem
        self.backbone = source.backbone.half()
        self.head = source.head.half()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.stem(x).half()
        return self.head(self.backbone(features)).float()


def export_int8(model: nn.Module, example: torch.Tensor, path: Path) -> tuple[nn.Module, Path]:
    quantized = quantize_int8(model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        export_torchscript(quantized, example, path)
    return quantized, path


def export_fp16_onnx(
    model: GraftNet,
    example: torch.Tensor,
    path: Path,
    opset: int,
    missing_fill: MissingValueFill | None = None,
) -> Path:
    """The fp16 graph; with ``missing_fill`` it takes raw rows (the fill runs in float32)."""
    return export_onnx(
        with_missing_fill(HalfPrecisionNet(model), missing_fill), example, path, opset
    )


def onnx_session(path: str | Path, threads: int | None = None) -> Any:
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3  # fp16 nodes without a CPU kernel get casts; not a warning
    if threads is not None:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    return onnxruntime.InferenceSession(
        str(path), sess_options=options, providers=["CPUExecutionProvider"]
    )


def torch_logits(model: nn.Module, x: np.ndarray, batch_size: int = 1024) -> np.ndarray:
    model.eval()
    outputs = []
    with torch.no_grad():
        for start in range(0, len(x), batch_size):
            batch = torch.from_numpy(x[start : start + batch_size].astype(np.float32))
            outputs.append(model(batch).float().numpy())
    return np.concatenate(outputs)


def onnx_logits(session: Any, x: np.ndarray, batch_size: int = 1024) -> np.ndarray:
    outputs = [
        session.run(["logits"], {"input": x[start : start + batch_size].astype(np.float32)})[0]
        for start in range(0, len(x), batch_size)
    ]
    return np.concatenate(outputs).astype(np.float32)


def accuracy(logits: np.ndarray, y: np.ndarray) -> float:
    return float((logits.argmax(1) == y).mean())


def median_latency_ms(
    call: Callable[[], object], runs: int, warmup: int = 3, threads: int | None = None
) -> float:
    """Median wall time of ``call`` over ``runs`` calls, in milliseconds, after a warm-up."""
    previous = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        with torch.no_grad():
            for _ in range(warmup):
                call()
            times = []
            for _ in range(runs):
                start = time.perf_counter()
                call()
                times.append((time.perf_counter() - start) * 1000.0)
    finally:
        torch.set_num_threads(previous)
    return statistics.median(times)


def latency_batches(
    call_for: Callable[[np.ndarray], Callable[[], object]],
    x: np.ndarray,
    batch_sizes: list[int],
    runs: int,
    threads: int | None = None,
) -> dict[str, float]:
    """Median latency per batch size on the first rows of ``x`` (repeated if too few)."""
    results = {}
    for size in batch_sizes:
        rows = np.resize(x, (size, *x.shape[1:])).astype(np.float32)
        results[f"batch_{size}"] = median_latency_ms(call_for(rows), runs, threads=threads)
    return results


def torch_call(model: nn.Module) -> Callable[[np.ndarray], Callable[[], object]]:
    def for_rows(rows: np.ndarray) -> Callable[[], object]:
        tensor = torch.from_numpy(rows)
        return lambda: model(tensor)

    return for_rows


def onnx_call(session: Any) -> Callable[[np.ndarray], Callable[[], object]]:
    def for_rows(rows: np.ndarray) -> Callable[[], object]:
        return lambda: session.run(["logits"], {"input": rows})

    return for_rows
