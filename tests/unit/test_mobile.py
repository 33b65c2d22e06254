"""The mobile family: depthwise-separable blocks, its multipliers, transfer, folding, export,
its cost in MACs, and the width multiplier refused as a tune dimension."""

import copy
from pathlib import Path

import pytest
import torch
from torch import nn

from graft.config import ModelConfig, PhaseConfig, validate_config
from graft.errors import ConfigError
from graft.export.folding import count_batch_norm, fold_batch_norm
from graft.export.formats import export_and_check
from graft.nn.complexity import layer_macs, model_complexity
from graft.nn.models import ModelSpec, build_model, mobile_channels
from graft.nn.transfer import apply_phase, set_train_mode, transfer_model, transfer_spec


def _spec(
    width: float = 1.0, resolution: float = 1.0, hidden: list[int] | None = None
) -> ModelSpec:
    config = ModelConfig(
        family="mobile",
        conv_channels=[16, 32],
        hidden_sizes=[] if hidden is None else hidden,
        mobile={"width_multiplier": width, "resolution_multiplier": resolution},
    )
    return ModelSpec(config.model_dump(mode="json"), [1, 8, 8], 5, [3.0], [2.0])


def _separable_params(c_in: int, c_out: int) -> int:
    # depthwise 3x3 (no bias) + BN(c_in) + pointwise 1x1 (no bias) + BN(c_out)
    return c_in * 9 + 2 * c_in + c_in * c_out + 2 * c_out


@pytest.mark.parametrize(
    ("width", "channels"), [(0.25, [8, 8]), (0.5, [8, 16]), (1.0, [16, 32]), (1.4, [24, 48])]
)
def test_width_multiplier_scales_channels_to_multiples_of_8(
    width: float, channels: list[int]
) -> None:
    model = build_model(_spec(width))
    assert model(torch.rand(3, 1, 8, 8) * 16).shape == (3, 5)
    pointwise = [m for m in model.backbone.modules() if isinstance(m, nn.Conv2d) and m.groups == 1]
    assert [m.out_channels for m in pointwise if m.kernel_size == (1, 1)] == channels
    expected = _separable_params(1, channels[0]) + _separable_params(*channels)
    expected += channels[1] * 5 + 5  # the head on the globally pooled features
    assert sum(p.numel() for p in model.parameters()) == expected


def test_mobile_channels_rounding() -> None:
    assert [mobile_channels(c, 1.0) for c in (1, 4, 12, 20, 32)] == [8, 8, 16, 24, 32]
    assert mobile_channels(64, 0.75) == 48


def test_blocks_are_depthwise_separable_and_downsample() -> None:
    model = build_model(_spec())
    depthwise = model.backbone[1][0]
    assert isinstance(depthwise, nn.Conv2d)
    assert depthwise.groups == depthwise.in_channels == 16
    assert depthwise.stride == (2, 2)
    with torch.no_grad():
        assert model.backbone[0](torch.rand(2, 1, 8, 8)).shape == (2, 16, 4, 4)


def test_resolution_multiplier_resizes_in_the_stem_and_keeps_the_weights() -> None:
    full, half = build_model(_spec()), build_model(_spec(resolution=0.5))
    with torch.no_grad():
        assert half.stem(torch.rand(2, 1, 8, 8)).shape == (2, 1, 4, 4)
    assert {k: v.shape for k, v in full.state_dict().items()} == {
        k: v.shape for k, v in half.state_dict().items()
    }
    # every conv output has a quarter of the positions: a quarter of the conv MACs
    conv = 8 * 8 // 4 * (1 * 9 + 1 * 16) + 8 * 8 // 16 * (16 * 9 + 16 * 32)
    head = 32 * 5
    assert model_complexity(full, [1, 8, 8]).macs == conv + head
    assert model_complexity(half, [1, 8, 8]).macs == conv // 4 + head


def test_conv_and_linear_macs_follow_the_formula() -> None:
    conv = nn.Conv2d(3, 8, 3, padding=1)
    assert layer_macs(conv, conv(torch.zeros(1, 3, 10, 10))) == 10 * 10 * 8 * 3 * 9
    depthwise = nn.Conv2d(8, 8, 3, stride=2, padding=1, groups=8)
    assert layer_macs(depthwise, depthwise(torch.zeros(1, 8, 10, 10))) == 5 * 5 * 8 * 9
    linear = nn.Linear(20, 7)
    assert layer_macs(linear, linear(torch.zeros(4, 20))) == 20 * 7  # one row, not the batch
    complexity = model_complexity(nn.Sequential(conv, nn.Flatten(), nn.Linear(800, 2)), [3, 10, 10])
    assert complexity.macs == 10 * 10 * 8 * 3 * 9 + 800 * 2
    assert complexity.flops == 2 * complexity.macs
    assert complexity.parameters == (8 * 27 + 8) + (800 * 2 + 2)


def test_head_phase_keeps_frozen_mobile_blocks_bit_identical() -> None:
    torch.manual_seed(0)
    spec = _spec(hidden=[16])
    source = build_model(spec)
    target = transfer_model(source, transfer_spec(spec, 2, None, len(source.backbone)))
    before = copy.deepcopy(target.backbone.state_dict())
    unfrozen = apply_phase(target, PhaseConfig(trainable="head", epochs=1))
    set_train_mode(target, unfrozen)
    assert not any(m.training for m in target.backbone.modules() if isinstance(m, nn.BatchNorm2d))
    optimizer = torch.optim.SGD([p for p in target.parameters() if p.requires_grad], lr=0.5)
    for _ in range(3):
        optimizer.zero_grad()
        loss = nn.functional.cross_entropy(target(torch.rand(8, 1, 8, 8) * 16), torch.arange(8) % 2)
        loss.backward()
        optimizer.step()
    for name, tensor in target.backbone.state_dict().items():
        assert torch.equal(tensor, before[name]), name  # running stats included
    assert apply_phase(target, PhaseConfig(trainable="top_k", top_k=1, epochs=1)) == [2]
    set_train_mode(target, [2])
    assert not target.backbone[1][1].training and target.backbone[2][1].training


def test_folding_depthwise_convs_keeps_outputs_and_exports_with_parity(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = build_model(_spec(width=0.75, resolution=0.75, hidden=[16]))
    model.train()
    with torch.no_grad():
        for _ in range(10):
            model(torch.rand(32, 1, 8, 8) * 16)
    model.eval()
    folded, count = fold_batch_norm(model)
    assert count == count_batch_norm(model) == 4  # both depthwise BNs fold too
    x = torch.rand(16, 1, 8, 8) * 16
    with torch.no_grad():
        assert (folded(x) - model(x)).abs().max().item() <= 1e-5
    files = export_and_check(folded, x[:4], tmp_path, opset=18, atol=1e-4)
    assert files.onnx_max_abs_diff <= 1e-4
    assert files.torchscript_max_abs_diff <= 1e-4


def _with_searched_width(values: list[float], width: float = 1.0) -> dict:
    return {
        "model": {"family": "mobile", "mobile": {"width_multiplier": width}},
        "tune": {
            "enabled": True,
            "space": {"model.mobile.width_multiplier": {"type": "choice", "values": values}},
        },
    }


def test_width_multiplier_search_is_refused_because_trials_reuse_the_backbone() -> None:
    with pytest.raises(ConfigError, match="cannot load those weights"):
        validate_config(_with_searched_width([0.5, 0.75, 1.0]))
    # one value equal to pretrain's width changes nothing: accepted
    validate_config(_with_searched_width([0.5], width=0.5))
    resolution = {"type": "choice", "values": [0.5, 1.0]}
    validate_config(
        {
            "model": {"family": "mobile"},
            "tune": {"space": {"model.mobile.resolution_multiplier": resolution}},
        }
    )
