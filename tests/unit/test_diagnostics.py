"""Training diagnostics: activation stats, dead-ReLU fraction, per-step scalars."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from graft.config import ModelConfig
from graft.nn.models import ModelSpec, build_model
from graft.train.diagnostics import (
    ActivationRecorder,
    activation_stats,
    dead_fraction,
    step_diagnostics,
)


def _dense(bias: float, activation: nn.Module | None = None, inputs: int = 4) -> nn.Sequential:
    layer = nn.Linear(inputs, 8)
    with torch.no_grad():
        layer.weight.fill_(0.01)
        layer.bias.fill_(bias)
    return nn.Sequential(layer, activation if activation is not None else nn.ReLU())


def test_a_bias_of_minus_100_kills_every_relu_unit() -> None:
    blocks = [_dense(-100.0), _dense(100.0, inputs=8)]
    net = nn.Sequential(*blocks)
    # the second block's input is all zeros (the first is dead): its outputs are its bias, 100
    recorder = ActivationRecorder(blocks)
    with recorder.capture():
        net(torch.randn(32, 4))
    stats = recorder.stats
    assert stats[0].dead_fraction == 1.0
    assert stats[0].mean == 0.0 and stats[0].std == 0.0
    assert stats[1].dead_fraction == 0.0
    assert stats[1].mean == pytest.approx(100.0) and stats[1].std == pytest.approx(0.0, abs=1e-9)


def test_dead_fraction_counts_units_dead_for_the_whole_batch() -> None:
    # unit 0 never active, unit 1 active once, unit 2 always, unit 3 zero except one example
    output = torch.tensor(
        [
            [0.0, 0.0, 1.0, 0.0],
            [0.0, 2.0, 1.0, 0.0],
            [0.0, 0.0, 1.0, 0.5],
        ]
    )
    assert dead_fraction(output) == 0.25
    # leaky ReLU: never positive is dead even though the outputs are not 0
    assert dead_fraction(nn.LeakyReLU(0.2)(torch.full((5, 3), -1.0))) == 1.0
    # conv: a channel is one unit, dead when <= 0 at every position of every example
    maps = torch.zeros(2, 4, 3, 3)
    maps[1, 2, 2, 2] = 1.0  # channel 2 active at a single position
    assert dead_fraction(maps) == 0.75
    with pytest.raises(ValueError, match="batch of shape"):
        dead_fraction(torch.zeros(3))


def test_stats_of_a_known_input_match_numpy() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(2.0, 3.0, size=(50, 4)).astype(np.float32)
    block = nn.Sequential(nn.Linear(4, 6), nn.Tanh())
    recorder = ActivationRecorder([block])
    with recorder.capture():
        out = block(torch.from_numpy(x)).detach().numpy().astype(np.float64)
    (stat,) = recorder.stats
    assert stat.mean == pytest.approx(out.mean(), rel=1e-12)
    assert stat.std == pytest.approx(out.std(), rel=1e-12)  # numpy's ddof=0
    assert stat.dead_fraction is None  # tanh is not of the ReLU family
    assert activation_stats(torch.tensor([1.0, 2.0, 3.0, 4.0])) == pytest.approx(
        (2.5, float(np.std([1, 2, 3, 4])))
    )


def test_hooks_record_only_inside_capture_and_are_removable() -> None:
    block = _dense(-100.0)
    recorder = ActivationRecorder([block])
    block(torch.randn(4, 4))
    assert recorder.stats == []
    with recorder.capture():
        block(torch.randn(4, 4))
    assert len(recorder.stats) == 1
    recorder.remove()
    assert not block._forward_hooks and not block[1]._forward_hooks
    with recorder.capture():
        block(torch.randn(4, 4))
    assert recorder.stats == []


def test_recorder_on_a_graft_backbone_names_every_block() -> None:
    spec = ModelSpec(
        model=ModelConfig(hidden_sizes=[16, 8]).model_dump(mode="json"),
        input_shape=[10],
        num_classes=3,
        mean=[0.0] * 10,
        std=[1.0] * 10,
    )
    model = build_model(spec)
    recorder = ActivationRecorder(list(model.backbone))
    with recorder.capture():
        model(torch.randn(64, 10))
    metrics = recorder.metrics()
    assert set(metrics) == {
        f"diag.block{i}.{name}"
        for i in (0, 1)
        for name in ("activation_mean", "activation_std", "dead_relu_fraction")
    }
    # ReLU outputs are >= 0, He init keeps them alive on standardized inputs
    assert metrics["diag.block0.activation_mean"] > 0
    assert 0.0 <= metrics["diag.block0.dead_relu_fraction"] < 0.5


def test_step_diagnostics_omit_momentum_when_the_optimizer_has_none() -> None:
    assert step_diagnostics(5.0, 1.0, 0.01, 0.9) == {
        "diag.grad_norm_before_clip": 5.0,
        "diag.grad_norm_after_clip": 1.0,
        "diag.lr": 0.01,
        "diag.momentum": 0.9,
    }
    assert "diag.momentum" not in step_diagnostics(5.0, 5.0, 0.01, None)
