"""TorchScript and ONNX files, each checked against the PyTorch model it came from."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from graft.errors import ExportError

log = logging.getLogger(__name__)


@dataclass
class ExportedFiles:
    torchscript: str
    onnx: str
    torchscript_max_abs_diff: float
    onnx_max_abs_diff: float


def export_torchscript(model: nn.Module, example: torch.Tensor, path: Path) -> Path:
    model.eval()
    with torch.no_grad():
        traced = torch.jit.trace(model, example)
    traced.save(str(path))
    return path


def export_onnx(model: nn.Module, example: torch.Tensor, path: Path, opset: int) -> Path:
    model.eval()
    batch = torch.export.Dim("batch", min=1)
    torch.onnx.export(
        model,
        (example,),
        str(path),
        input_names=["input"],
        output_names=["logits"],
        opset_version=opset,
        dynamo=True,
        external_data=False,
        dynamic_shapes=({0: batch},),
    )
    return path


def _max_abs_diff(reference: np.ndarray, candidate: np.ndarray) -> float:
    return float(np.abs(reference - candidate).max())


def export_and_check(
    model: nn.Module,
    example: torch.Tensor,
    output_dir: Path,
    opset: int,
    atol: float,
    reference_model: nn.Module | None = None,
) -> ExportedFiles:
    """Write both formats; raise ExportError if either disagrees with PyTorch beyond atol.

    ``reference_model`` (default: ``model``) is what the files are compared with: the trained
    model when ``model`` is its BN-folded copy.
    """
    import onnxruntime

    output_dir.mkdir(parents=True, exist_ok=True)
    model.eval()
    checked_against = (reference_model or model).eval()
    with torch.no_grad():
        reference = checked_against(example).numpy()
    script_path = export_torchscript(model, example, output_dir / "model.torchscript.pt")
    with torch.no_grad():
        scripted = torch.jit.load(str(script_path))(example).numpy()
    onnx_path = export_onnx(model, example, output_dir / "model.onnx", opset)
    session = onnxruntime.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    onnx_out = session.run(["logits"], {"input": example.numpy()})[0]
    files = ExportedFiles(
        torchscript=str(script_path),
        onnx=str(onnx_path),
        torchscript_max_abs_diff=_max_abs_diff(reference, scripted),
        onnx_max_abs_diff=_max_abs_diff(reference, onnx_out),
    )
    for name, diff in (
        ("TorchScript", files.torchscript_max_abs_diff),
        ("ONNX", files.onnx_max_abs_diff),
    ):
        if diff > atol:
            raise ExportError(
                f"{name} export differs from PyTorch by {diff:.2e} > {atol:.0e} on a fixed "
                "batch; the exported model is not trustworthy"
            )
    return files
