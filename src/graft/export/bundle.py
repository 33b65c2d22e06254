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
from graft.errors import ExportError
from graft.export.folding import count_batch_norm, fold_batch_norm
from graft.export.formats import ExportedFiles, export_and_check
from graft.export.raw_inputs import with_missing_fill
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
    served_network: nn.Module = model
    folded_count = 0
    fold_diff = 0.0
    if config.fold_batch_norm:
        served_network, folded_count = fold_batch_norm(model)
    served = with_missing_fill(served_network, missing_fill)
    if config.fold_batch_norm:
        fold_diff = _max_abs_diff(reference, torch_logits(served, x_val))
        # float32 rounding grows with the logits' magnitude: the tolerance scales with it
        allowed = config.fold_atol * max(1.0, float(np.abs(reference).max(initial=0.0)))
        if fold_diff > allowed:
            raise ExportError(
                f"BN folding changed the logits by {fold_diff:.2e} > {allowed:.1e} "
                f"(export.fold_atol={config.fold_atol:.0e} x largest |logit|) on the "
                "validation split; set export.fold_batch_norm=false"
            )
    files = export_and_check(
        served, example, output_dir, config.onnx_opset, config.parity_atol, reference_model=trained
    )
    bundle = ExportBundle(
        files=files,
        opset=config.onnx_opset,
        batch_norm_folded=folded_count,
        batch_norm_left=count_batch_norm(served),
        fold_max_abs_diff=fold_diff,
        fp32_accuracy=fp32_accuracy,
        val_rows=len(y_val),
    )
    sizes, runs = config.latency_batch_sizes, config.latency_runs

    def measured(
        name: str, path: str | Path, logits: np.ndarray, latency: dict[str, float]
    ) -> None:
        variant_accuracy = accuracy(logits, y_val)
        bundle.variants.append(
            VariantReport(
                name=name,
                path=str(path),
                accuracy=variant_accuracy,
                accuracy_delta=variant_accuracy - fp32_accuracy,
                max_abs_diff=_max_abs_diff(reference, logits),
                size_bytes=_size(path),
                latency_ms=latency,
            )
        )

    scripted = torch.jit.load(files.torchscript).eval()
    measured(
        "torchscript_fp32",
        files.torchscript,
        torch_logits(scripted, x_val),
        latency_batches(torch_call(scripted), x_val, sizes, runs),
    )
    session = onnx_session(files.onnx)
    measured(
        "onnx_fp32",
        files.onnx,
        onnx_logits(session, x_val),
        latency_batches(onnx_call(session), x_val, sizes, runs),
    )
    if config.int8:
        quantized, int8_path = export_int8(
            served, example, output_dir / "model.int8.torchscript.pt"
        )
        measured(
            "int8_dynamic",
            int8_path,
            torch_logits(quantized, x_val),
            latency_batches(torch_call(quantized), x_val, sizes, runs),
        )
    if config.fp16:
        assert isinstance(served_network, GraftNet)
        fp16_path = export_fp16_onnx(
            served_network, example, output_dir / "model.fp16.onnx", config.onnx_opset, missing_fill
        )
        fp16_session = onnx_session(fp16_path)
        measured(
            "onnx_fp16",
            fp16_path,
            onnx_logits(fp16_session, x_val),
            latency_batches(onnx_call(fp16_session), x_val, sizes, runs),
        )
    bundle.write(output_dir)
    for variant in bundle.variants:
        log.info(
            "export %s: accuracy %.4f (delta %+.4f), %s",
            variant.name,
            variant.accuracy,
            variant.accuracy_delta,
            variant.latency_ms,
        )
    return bundle
