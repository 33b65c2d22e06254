from pathlib import Path

import pytest
import torch

from graft.config import ModelConfig
from graft.errors import ExportError
from graft.export.formats import export_and_check
from graft.nn.models import ModelSpec, build_model


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    spec = ModelSpec(
        model=ModelConfig(hidden_sizes=[16], batch_norm={"enabled": True}).model_dump(),
        input_shape=[1, 8, 8],
        num_classes=3,
        mean=[4.0],
        std=[3.0],
    )
    return build_model(spec).eval()


def test_torchscript_and_onnx_match_pytorch(tmp_path: Path) -> None:
    example = torch.rand(5, 1, 8, 8) * 16
    files = export_and_check(_model(), example, tmp_path, opset=18, atol=1e-4)
    assert files.torchscript_max_abs_diff <= 1e-4
    assert files.onnx_max_abs_diff <= 1e-4
    assert Path(files.onnx).stat().st_size > 0
    # the ONNX graph takes any batch size
    import onnxruntime

    session = onnxruntime.InferenceSession(files.onnx, providers=["CPUExecutionProvider"])
    out = session.run(["logits"], {"input": (torch.rand(11, 1, 8, 8) * 16).numpy()})[0]
    assert out.shape == (11, 3)


def test_parity_failure_is_an_export_error(tmp_path: Path) -> None:
    with pytest.raises(ExportError, match="differs from PyTorch"):
        export_and_check(_model(), torch.rand(2, 1, 8, 8), tmp_path, opset=18, atol=1e-30)
