"""Everything the export stage writes next to the registry entry, measured on held-out rows.

The export stage passes the target *validation* split (the test split is sealed: only evaluate
reads it). The served TorchScript/ONNX files come from the BN-folded model and are
parity-checked against the trained model; the int8 and fp16 variants carry their accuracy
delta and latency. With a tabular NaN fill every served file takes raw rows (the fill is part
of the graph, :mod:`graft.export.raw_inputs`), and is measured on raw rows.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from graft.config import ExportConfig
from graft.data.preprocessing import MissingValueFill
from graft.data.raw_input_model import with_missing_fill
from graft.errors import ExportError
from graft.export.folding import count_batch_norm, fold_batch_norm
from graft.export.formats import ExportedFiles, export_and_check
from graft.export.served_model import record_missing_fill
from graft.export.variants import (
    VariantReport,
    accuracy,
    export_fp16_onnx,
    export_int8,
    latency_batches,
    onnx_call,
    onnx_logits,
    onnx_session,
    torch_call,
    torch_logits,
)
from graft.nn.complexity import model_complexity
from graft.nn.models import GraftNet

log = logging.getLogger(__name__)

REPORT_FILE = "export_report.json"


@dataclass
class ExportBundle:
    files: ExportedFiles
    opset: int
    batch_norm_folded: int  # BN layers folded into the layer before them
    batch_norm_left: int  # BN layers still in the served graph (placed after the activation)
    fold_max_abs_diff: float  # folded vs trained logits on the rows (0 when not folded)
    fp32_accuracy: float  # the trained PyTorch model on the rows (the validation split)
    val_rows: int
    variants: list[VariantReport] = field(default_factory=list)
    parameters: int = 0  # of the trained network
    macs: int = 0  # multiply-accumulates per input row (graft.nn.complexity)

    def variant(self, name: str) -> VariantReport | None:
        return next((v for v in self.variants if v.name == name), None)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def write(self, output_dir: Path) -> Path:
        path = output_dir / REPORT_FILE
        path.write_text(json.dumps(self.to_dict(), indent=2))
        return path


def _size(path: str | Path) -> int:
    return Path(path).stat().st_size


def _max_abs_diff(reference: np.ndarray, candidate: np.ndarray) -> float:
    return float(np.abs(reference - candidate).max()) if len(reference) else 0.0


@dataclass
class _VariantMeasurement:
    """Measures each served variant on the same rows, against the trained model's logits."""

    x_val: np.ndarray
    y_val: np.ndarray
    reference: np.ndarray  # the trained model's logits on x_val
    fp32_accuracy: float
    batch_sizes: list[int]
    runs: int

    def torchscript(self, name: str, path: str | Path, module: nn.Module) -> VariantReport:
        logits = torch_logits(module, self.x_val)
        latency = latency_batches(torch_call(module), self.x_val, self.batch_sizes, self.runs)
        return self._report(name, path, logits, latency)

    def onnx(self, name: str, path: str | Path) -> VariantReport:
        session = onnx_session(path)
        logits = onnx_logits(session, self.x_val)
        latency = latency_batches(onnx_call(session), self.x_val, self.batch_sizes, self.runs)
        return self._report(name, path, logits, latency)

    def _report(
        self, name: str, path: str | Path, logits: np.ndarray, latency: dict[str, float]
    ) -> VariantReport:
        variant_accuracy = accuracy(logits, self.y_val)
        return VariantReport(
            name=name,
            path=str(path),
            accuracy=variant_accuracy,
            accuracy_delta=variant_accuracy - self.fp32_accuracy,
            max_abs_diff=_max_abs_diff(self.reference, logits),
            size_bytes=_size(path),
            latency_ms=latency,
        )


def _checked_fold_diff(
    reference: np.ndarray, served: nn.Module, x_val: np.ndarray, config: ExportConfig
) -> float:
    """How far BN folding moved the logits on ``x_val``; refuses a change past fold_atol."""
    fold_diff = _max_abs_diff(reference, torch_logits(served, x_val))
    # float32 rounding grows with the logits' magnitude: the tolerance scales with it
    allowed = config.fold_atol * max(1.0, float(np.abs(reference).max(initial=0.0)))
    if fold_diff > allowed:
        raise ExportError(
            f"BN folding changed the logits by {fold_diff:.2e} > {allowed:.1e} "
            f"(export.fold_atol={config.fold_atol:.0e} x largest |logit|) on the "
            "validation split; set export.fold_batch_norm=false"
        )
    return fold_diff


def build_export_bundle(
    model: GraftNet,
    example: torch.Tensor,
    x_val: np.ndarray,
    y_val: np.ndarray,
    output_dir: Path,
    config: ExportConfig,
    missing_fill: MissingValueFill | None = None,
) -> ExportBundle:
    """Fold, export, check parity, build the variants and measure them; write the report.

    ``example`` and ``x_val`` are rows as a client sends them: raw, NaNs included, when
    ``missing_fill`` is given (every served model then fills them itself)."""
    output_dir.mkdir(parents=True, exist_ok=True)
    model.eval()
    trained = with_missing_fill(model, missing_fill)
    reference = torch_logits(trained, x_val)
    fp32_accuracy = accuracy(reference, y_val)
    served_network, folded_count = fold_batch_norm(model) if config.fold_batch_norm else (model, 0)
    served = with_missing_fill(served_network, missing_fill)
    fold_diff = (
        _checked_fold_diff(reference, served, x_val, config) if config.fold_batch_norm else 0.0
    )
    files = export_and_check(
        served, example, output_dir, config.onnx_opset, config.parity_atol, reference_model=trained
    )
    # what a server reads to refuse NaNs that no fill would handle (graft serve)
    record_missing_fill(Path(files.onnx), fills_missing=missing_fill is not None)
    bundle = ExportBundle(
        files=files,
        opset=config.onnx_opset,
        batch_norm_folded=folded_count,
        batch_norm_left=count_batch_norm(served),
        fold_max_abs_diff=fold_diff,
        fp32_accuracy=fp32_accuracy,
        val_rows=len(y_val),
    )
    # the served input (raw rows: the NaN fill widens them inside) is what example holds
    complexity = model_complexity(trained, list(example.shape[1:]))
    bundle.parameters, bundle.macs = complexity.parameters, complexity.macs
    measure = _VariantMeasurement(
        x_val, y_val, reference, fp32_accuracy, config.latency_batch_sizes, config.latency_runs
    )
    scripted = torch.jit.load(files.torchscript).eval()
    bundle.variants.append(measure.torchscript("torchscript_fp32", files.torchscript, scripted))
    bundle.variants.append(measure.onnx("onnx_fp32", files.onnx))
    # the variant exports stay in this function: a TorchScript file records the Python stack
    # that traced it, so another caller frame would change the file's bytes and size
    if config.int8:
        quantized, int8_path = export_int8(
            served, example, output_dir / "model.int8.torchscript.pt"
        )
        bundle.variants.append(measure.torchscript("int8_dynamic", int8_path, quantized))
    if config.fp16:
        assert isinstance(served_network, GraftNet)
        fp16_path = export_fp16_onnx(
            served_network, example, output_dir / "model.fp16.onnx", config.onnx_opset, missing_fill
        )
        bundle.variants.append(measure.onnx("onnx_fp16", fp16_path))
    bundle.write(output_dir)
    _log_variants(bundle.variants)
    return bundle


def _log_variants(variants: list[VariantReport]) -> None:
    for variant in variants:
        log.info(
            "export %s: accuracy %.4f (delta %+.4f), %s",
            variant.name,
            variant.accuracy,
            variant.accuracy_delta,
            variant.latency_ms,
        )
