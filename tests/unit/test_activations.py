"""Activations: exact values from the papers, config plumbing, and trainable parameters."""

from __future__ import annotations

from typing import Any, get_args

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from graft.config import ActivationConfig, ActivationName
from graft.nn.activations import GELUSigmoid, Swish, build_activation

SELU_SCALE = 1.0507009873554805
SELU_ALPHA = 1.6732632423543772


def _act(name: ActivationName, **overrides: Any) -> nn.Module:
    return build_activation(ActivationConfig(name=name, **overrides))


def _apply(module: nn.Module, values: list[float]) -> torch.Tensor:
    """Evaluate in float64 so exact constants are compared at full precision."""
    with torch.no_grad():
        return module.to(torch.float64)(torch.tensor(values, dtype=torch.float64))


@pytest.mark.parametrize("name", get_args(ActivationName))
def test_every_activation_name_builds_a_module_that_preserves_shape(name: ActivationName):
    module = _act(name)
    assert isinstance(module, nn.Module)
    x = torch.randn(4, 7)
    assert module(x).shape == (4, 7)


def test_each_call_builds_an_independent_module():
    cfg = ActivationConfig(name="prelu")
    assert build_activation(cfg) is not build_activation(cfg)


def test_selu_exact_values():
    y = _apply(_act("selu"), [1.0, -50.0])
    assert y[0].item() == pytest.approx(SELU_SCALE, abs=1e-7)
    assert y[1].item() == pytest.approx(-1.7580993, abs=1e-6)
    assert y[1].item() == pytest.approx(-SELU_SCALE * SELU_ALPHA, abs=1e-12)


def test_gelu_exact_minimum():
    z = torch.arange(-5.0, 5.0, 1e-4, dtype=torch.float64)
    y = _apply(_act("gelu"), z.tolist())
    i = int(torch.argmin(y))
    assert y[i].item() == pytest.approx(-0.1700, abs=5e-4)
    assert z[i].item() == pytest.approx(-0.752, abs=0.01)


def test_gelu_sigmoid_approximation_error_and_formula():
    z = torch.linspace(-5, 5, 100_001, dtype=torch.float64)
    exact = F.gelu(z)
    approx = _apply(_act("gelu_sigmoid"), z.tolist())
    assert isinstance(_act("gelu_sigmoid"), GELUSigmoid)
    assert torch.allclose(approx, z * torch.sigmoid(1.702 * z), rtol=0, atol=1e-15)
    error = (exact - approx).abs().max().item()
    assert error <= 0.021
    assert error > 0.015  # it is an approximation, not exact GELU wired in by mistake


def test_gelu_tanh_is_the_tanh_approximation():
    z = torch.linspace(-5, 5, 1001, dtype=torch.float64)
    expected = 0.5 * z * (1 + torch.tanh((2 / torch.pi) ** 0.5 * (z + 0.044715 * z**3)))
    y = _apply(_act("gelu_tanh"), z.tolist())
    assert torch.allclose(y, expected, atol=1e-12)
    assert not torch.allclose(y, F.gelu(z), atol=1e-6)


@pytest.mark.parametrize("alpha", [1.0, 0.5])
def test_elu_saturates_at_minus_alpha(alpha: float):
    y = _apply(_act("elu", elu_alpha=alpha), [-20.0, 0.0, 3.0])
    assert y[0].item() == pytest.approx(-alpha, abs=1e-8)
    assert y[1].item() == 0.0
    assert y[2].item() == 3.0


def test_leaky_relu_uses_configured_slope_not_torch_default():
    default_cfg = ActivationConfig(name="leaky_relu")
    y = _apply(build_activation(default_cfg), [-1.0, 2.0])
    assert y[0].item() == pytest.approx(-default_cfg.negative_slope)
    assert y[0].item() != pytest.approx(-0.01)  # PyTorch's own default must not leak through
    assert y[1].item() == 2.0
    y = _apply(_act("leaky_relu", negative_slope=0.3), [-1.0])
    assert y[0].item() == pytest.approx(-0.3)


def test_swish_beta_one_equals_silu():
    z = torch.linspace(-6, 6, 1001)
    with torch.no_grad():
        swish = _act("swish", swish_beta=1.0)(z)
        silu = _act("silu")(z)
    assert torch.allclose(swish, silu, atol=1e-7)
    assert torch.allclose(silu, F.silu(z), atol=0)


def test_swish_beta_changes_the_curve():
    y = _apply(_act("swish", swish_beta=0.6), [-1.0])
    assert y[0].item() == pytest.approx(-1.0 * torch.sigmoid(torch.tensor(-0.6)).item(), abs=1e-7)


def test_trainable_swish_beta_is_a_parameter_and_gets_a_gradient():
    module = _act("swish", swish_beta=1.5, swish_beta_trainable=True)
    assert isinstance(module, Swish)
    params = list(module.parameters())
    assert len(params) == 1
    assert params[0].item() == pytest.approx(1.5)
    module(torch.linspace(-3, 3, 50)).sum().backward()
    assert params[0].grad is not None
    assert params[0].grad.abs().item() > 0
    before = params[0].item()
    torch.optim.SGD(params, lr=0.1).step()
    assert params[0].item() != before


def test_fixed_swish_beta_is_not_a_parameter_but_is_saved():
    module = _act("swish", swish_beta=1.5, swish_beta_trainable=False)
    assert list(module.parameters()) == []
    assert "beta" in module.state_dict()
    assert module.state_dict()["beta"].item() == pytest.approx(1.5)


def test_prelu_starts_at_configured_init_and_is_trainable():
    cfg = ActivationConfig(name="prelu")
    params = list(build_activation(cfg).parameters())
    assert len(params) == 1
    assert params[0].numel() == 1
    assert params[0].item() == pytest.approx(cfg.prelu_init)
    assert _apply(_act("prelu", prelu_init=0.1), [-2.0])[0].item() == pytest.approx(-0.2)


def test_rrelu_eval_uses_mean_slope_and_train_samples_in_range():
    lower, upper = 0.1, 0.3
    module = _act("rrelu", rrelu_lower=lower, rrelu_upper=upper)
    z = -torch.ones(10_000, dtype=torch.float64)
    module.eval()
    with torch.no_grad():
        y = module(z)
    assert torch.allclose(y / z, torch.full_like(z, (lower + upper) / 2), atol=1e-12)
    module.train()
    torch.manual_seed(0)
    with torch.no_grad():
        slopes = module(z) / z
    assert slopes.min().item() >= lower
    assert slopes.max().item() <= upper
    assert slopes.std().item() > 0.03  # random per element, not a fixed slope


def test_mish_value():
    expected = 1.0 * torch.tanh(F.softplus(torch.tensor(1.0, dtype=torch.float64))).item()
    assert _apply(_act("mish"), [1.0])[0].item() == pytest.approx(expected, abs=1e-7)
    assert expected == pytest.approx(0.8650983882673103, abs=1e-12)


def test_tanh_and_sigmoid():
    y = _apply(_act("tanh"), [0.5])
    assert y[0].item() == pytest.approx(0.46211715726000974)
    y = _apply(_act("sigmoid"), [0.0])
    assert y[0].item() == 0.5
