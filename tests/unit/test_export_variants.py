"""BN folding, int8 and fp16 variants, the export bundle and the model card, in numbers."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from graft.config import ExportConfig, GraftConfig, ModelConfig
from graft.export.bundle import REPORT_FILE, build_export_bundle
from graft.export.folding import count_batch_norm, fold_batch_norm
from graft.export.model_card import build_model_card, write_model_card
from graft.export.variants import (
    HalfPrecisionNet,
    accuracy,
    median_latency_ms,
    quantize_int8,
    torch_logits,
)
from graft.nn.models import GraftNet, ModelSpec, build_model


def _trained_bn_model(
    family: str = "mlp", placement: str = "before_activation", seed: int = 0
) -> GraftNet:
    """A model whose BN layers hold non-trivial running statistics and affine parameters."""
    torch.manual_seed(seed)
    spec = ModelSpec(
        model=ModelConfig(
            family=family,  # type: ignore[arg-type]
            hidden_sizes=[32, 16],
            conv_channels=[4, 8],
            batch_norm={"enabled": True, "placement": placement},
            dropout={"rate": 0.2},
        ).model_dump(),
        input_shape=[1, 8, 8],
        num_classes=3,
        mean=[4.0],
        std=[3.0],
    )
    model = build_model(spec)
    model.train()
    with torch.no_grad():
        for _ in range(20):  # fill running statistics
            model(torch.rand(64, 1, 8, 8) * 16 + 2)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm1d | nn.BatchNorm2d):
            with torch.no_grad():
                module.weight.uniform_(0.5, 2.0)
                module.bias.uniform_(-0.5, 0.5)
    return model.eval()


@pytest.mark.parametrize("family", ["mlp", "cnn", "mobile"])
def test_folded_model_has_no_batch_norm_and_same_outputs(family: str) -> None:
    model = _trained_bn_model(family)
    assert count_batch_norm(model) > 0
    folded, count = fold_batch_norm(model)
    assert count == count_batch_norm(model)  # every BN sits right after its layer
    assert count_batch_norm(folded) == 0
    x = torch.rand(128, 1, 8, 8) * 16
    with torch.no_grad():
        diff = (folded(x) - model(x)).abs().max().item()
    assert diff <= 1e-5
    # the trained model is untouched
    assert count_batch_norm(model) == count


def test_batch_norm_after_activation_is_not_folded() -> None:
    model = _trained_bn_model(placement="after_activation")
    folded, count = fold_batch_norm(model)
    assert count == 0
    assert count_batch_norm(folded) == count_batch_norm(model) == 2
    x = torch.rand(16, 1, 8, 8) * 16
    with torch.no_grad():
        assert torch.equal(folded(x), model(x))


def test_int8_dynamic_quantization_quantizes_every_linear() -> None:
    model = _trained_bn_model()
    folded, _ = fold_batch_norm(model)
    quantized = quantize_int8(folded)
    dynamic = torch.ao.nn.quantized.dynamic.Linear
    # two hidden layers + head, and no float Linear left
    assert sum(isinstance(m, dynamic) for m in quantized.modules()) == 3
    assert not any(type(m) is nn.Linear for m in quantized.modules())
    x = np.random.default_rng(0).random((256, 1, 8, 8)).astype(np.float32) * 16
    reference, int8 = torch_logits(model, x), torch_logits(quantized, x)
    # int8 weights move logits a little, not a lot
    assert 0 < np.abs(reference - int8).max() < 0.5
    assert accuracy(int8, reference.argmax(1)) >= 0.9


def test_half_precision_net_keeps_float32_io_and_standardizes_in_float32() -> None:
    model = _trained_bn_model()
    half = HalfPrecisionNet(model)
    assert half.stem[0].mean.dtype == torch.float32
    assert next(half.backbone.parameters()).dtype == torch.float16
    x = torch.rand(32, 1, 8, 8) * 16
    with torch.no_grad():
        out = half(x)
        assert out.dtype == torch.float32
        assert (out - model(x)).abs().max().item() < 0.05
        # raw inputs beyond float16's range (65504) do not overflow before standardization
        big = torch.full((2, 1, 8, 8), 1e5)
        assert torch.isfinite(HalfPrecisionNet(_shifted(model, 1e5))(big)).all()


def _shifted(model: GraftNet, mean: float) -> GraftNet:
    stem = model.stem[0]
    stem.mean.fill_(mean)
    return model


def test_median_latency_is_the_middle_run() -> None:
    assert median_latency_ms(lambda: None, runs=5) < 1.0


def _digits_like(n: int = 300) -> tuple[np.ndarray, np.ndarray, GraftNet]:
    """A BN model fitted for a few steps on a separable 3-class problem."""
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, n)
    x = rng.normal(0, 1, (n, 1, 8, 8)).astype(np.float32)
    x[:, 0, 0, :] += y[:, None] * 3.0
    x = x * 3 + 4
    model = _trained_bn_model()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.train()
    for _ in range(60):
        optimizer.zero_grad()
        loss = nn.functional.cross_entropy(model(torch.from_numpy(x)), torch.from_numpy(y))
        loss.backward()
        optimizer.step()
    with torch.no_grad():  # running statistics of the trained weights (cumulative average)
        for module in model.modules():
            if isinstance(module, nn.BatchNorm1d | nn.BatchNorm2d):
                module.reset_running_stats()
                module.momentum = None
        model(torch.from_numpy(x))
    return x, y, model.eval()


def test_export_bundle_measures_every_variant(tmp_path: Path) -> None:
    x, y, model = _digits_like()
    config = ExportConfig(latency_runs=3)
    example = torch.from_numpy(x[:8])
    bundle = build_export_bundle(model, example, x, y, tmp_path, config)

    assert bundle.fp32_accuracy > 0.9
    assert bundle.batch_norm_folded == 2 and bundle.batch_norm_left == 0
    largest_logit = float(np.abs(torch_logits(model, x)).max())
    assert bundle.fold_max_abs_diff <= 1e-5 * max(1.0, largest_logit)
    assert bundle.files.onnx_max_abs_diff <= 1e-4
    assert bundle.files.torchscript_max_abs_diff <= 1e-4
    names = [v.name for v in bundle.variants]
    assert names == ["torchscript_fp32", "onnx_fp32", "int8_dynamic", "onnx_fp16"]
    for variant in bundle.variants:
        assert Path(variant.path).stat().st_size == variant.size_bytes > 0
        assert set(variant.latency_ms) == {"batch_1", "batch_64"}
        assert all(ms > 0 for ms in variant.latency_ms.values())
        assert variant.accuracy_delta == pytest.approx(variant.accuracy - bundle.fp32_accuracy)
        assert abs(variant.accuracy_delta) <= 0.05
    fp32 = bundle.variant("onnx_fp32")
    assert fp32 is not None and fp32.accuracy_delta == 0.0 and fp32.max_abs_diff <= 1e-4
    int8 = bundle.variant("int8_dynamic")
    assert int8 is not None and 0 < int8.max_abs_diff < 0.5
    fp16 = bundle.variant("onnx_fp16")
    assert fp16 is not None and 0 < fp16.max_abs_diff < 0.05
    # the served ONNX graph is the folded one: no BatchNormalization node
    import onnx

    graph = onnx.load(bundle.files.onnx).graph
    assert not [n for n in graph.node if n.op_type == "BatchNormalization"]
    assert onnx.load(bundle.files.onnx).opset_import[0].version == config.onnx_opset
    fp16_graph = onnx.load(str(tmp_path / "model.fp16.onnx")).graph
    assert any(i.data_type == onnx.TensorProto.FLOAT16 for i in fp16_graph.initializer)
    assert fp16_graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    report = json.loads((tmp_path / REPORT_FILE).read_text())
    assert [v["name"] for v in report["variants"]] == names


def test_variants_can_be_switched_off(tmp_path: Path) -> None:
    x, y, model = _digits_like(60)
    config = ExportConfig(int8=False, fp16=False, fold_batch_norm=False, latency_runs=1)
    bundle = build_export_bundle(model, torch.from_numpy(x[:4]), x, y, tmp_path, config)
    assert [v.name for v in bundle.variants] == ["torchscript_fp32", "onnx_fp32"]
    assert bundle.batch_norm_folded == 0 and bundle.batch_norm_left == 2
    assert not (tmp_path / "model.int8.torchscript.pt").exists()


def test_model_card_has_data_hash_metrics_gate_parity_and_limits(tmp_path: Path) -> None:
    x, y, model = _digits_like(60)
    bundle = build_export_bundle(
        model, torch.from_numpy(x[:4]), x, y, tmp_path, ExportConfig(latency_runs=1)
    )
    config = GraftConfig()
    metrics = {
        "test_accuracy": 0.9375,
        "baseline_accuracy": 0.5,
        "linear_baseline_accuracy": 0.875,
        "test_ece": 0.0421,
        "report": {"not": "a scalar"},
    }
    gate = {"passed": False, "reasons": ["does not beat the champion: 0.9375 < 0.9500"]}
    card = build_model_card(
        config, bundle, metrics, gate, "abc123", ["three", "eight"], "7", ["challenger"], "deadbee"
    )
    json_path, md_path = write_model_card(card, tmp_path)
    stored = json.loads(json_path.read_text())
    assert stored["dataset_hash"] == "abc123"
    assert stored["git_commit"] == "deadbee"
    assert stored["model_version"] == "7"
    assert stored["metrics"] == {
        "test_accuracy": 0.9375,
        "baseline_accuracy": 0.5,
        "linear_baseline_accuracy": 0.875,
        "test_ece": 0.0421,
    }
    assert stored["calibration"] == {"ece": 0.0421}
    assert stored["gate"]["passed"] is False
    assert stored["export"]["onnx_opset"] == config.export.onnx_opset
    assert stored["export"]["onnx_max_abs_diff"] <= 1e-4
    assert stored["limitations"] == config.export.limitations
    assert stored["config"]["hidden_sizes"] == config.model.hidden_sizes
    parameters = sum(p.numel() for p in model.parameters())
    linear_macs = sum(
        m.in_features * m.out_features for m in model.modules() if isinstance(m, nn.Linear)
    )
    assert stored["complexity"] == {
        "parameters": parameters,
        "macs": linear_macs,
        "flops": 2 * linear_macs,
    }
    text = md_path.read_text()
    for needle in (
        "abc123",
        "deadbee",
        "Promotion gate: refused",
        "does not beat the champion",
        "| Test accuracy | 0.9375 |",
        f"{parameters:,} parameters, {linear_macs:,} multiply-accumulates per row",
        "| Expected calibration error | 0.0421 |",
        "int8_dynamic",
        "onnx_fp16",
        "median ms, batch 64",
        config.export.intended_use,
    ):
        assert needle in text, needle
