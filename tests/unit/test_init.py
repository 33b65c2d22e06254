"""Weight init: each scheme's variance, orientation (fan_in vs fan_out), `auto`, and signal flow."""

from __future__ import annotations

import math
from typing import get_args

import pytest
import torch
from torch import nn

from graft.config import ActivationName, InitScheme
from graft.nn.activations import activation_family
from graft.nn.init import initialize, resolve_init

FAN_IN, FAN_OUT = 1000, 10
FAN_AVG = (FAN_IN + FAN_OUT) / 2  # 505

# Linear(1000 -> 10) is deliberately non-square: swapping fan_in and fan_out would make He's
# variance 2/10 instead of 2/1000, a 100x miss.
EXPECTED_VARIANCE = {
    "he_normal": 2 / FAN_IN,
    "he_uniform": 2 / FAN_IN,
    "lecun_normal": 1 / FAN_IN,
    "lecun_uniform": 1 / FAN_IN,
    "glorot_normal": 1 / FAN_AVG,
    "glorot_uniform": 1 / FAN_AVG,
    "he_avg_uniform": 2 / FAN_AVG,
}


def _initialized_linear(scheme: InitScheme, seed: int = 0) -> nn.Linear:
    torch.manual_seed(seed)
    layer = nn.Linear(FAN_IN, FAN_OUT)
    initialize(layer, scheme, "relu")
    return layer


@pytest.mark.parametrize(("scheme", "expected"), sorted(EXPECTED_VARIANCE.items()))
def test_weight_variance_matches_scheme_within_5_percent(scheme: InitScheme, expected: float):
    weight = _initialized_linear(scheme).weight.detach()
    assert weight.shape == (FAN_OUT, FAN_IN)
    variance = weight.var().item()
    assert abs(variance - expected) / expected < 0.05, (scheme, variance, expected)
    assert abs(weight.mean().item()) < 3 * math.sqrt(expected / weight.numel())


@pytest.mark.parametrize("scheme", sorted(s for s in EXPECTED_VARIANCE if s.endswith("uniform")))
def test_uniform_schemes_stay_within_bound(scheme: InitScheme):
    bound = math.sqrt(3 * EXPECTED_VARIANCE[scheme])
    weight = _initialized_linear(scheme).weight.detach()
    assert weight.abs().max().item() <= bound
    # A uniform fill reaches close to its bound; a normal one with this variance would exceed it.
    assert weight.abs().max().item() > 0.99 * bound


def test_normal_schemes_are_untruncated():
    weight = _initialized_linear("he_normal").weight.detach()
    std = math.sqrt(2 / FAN_IN)
    # 10k draws from an untruncated normal almost surely include |w| > 3 sigma (P ~ 27 draws);
    # a truncated normal (Keras' default, cut at 2 sigma) would have none beyond 2 sigma.
    assert (weight.abs() > 3 * std).sum().item() > 5


def test_conv_weight_fans_include_kernel():
    torch.manual_seed(0)
    conv = nn.Conv2d(in_channels=40, out_channels=64, kernel_size=5)  # fan_in = 40*25 = 1000
    initialize(conv, "he_normal", "relu")
    variance = conv.weight.detach().var().item()
    assert abs(variance - 2 / 1000) / (2 / 1000) < 0.05


@pytest.mark.parametrize("scheme", sorted(EXPECTED_VARIANCE))
def test_biases_are_zero(scheme: InitScheme):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(20, 30), nn.ReLU(), nn.Conv1d(3, 4, 3), nn.Linear(30, 5))
    initialize(model, scheme, "relu")
    for layer in model:
        if isinstance(layer, nn.Linear | nn.Conv1d):
            assert layer.bias is not None
            assert torch.count_nonzero(layer.bias).item() == 0


def test_torch_default_leaves_weights_and_biases_untouched():
    torch.manual_seed(123)
    reference = nn.Linear(FAN_IN, FAN_OUT)
    torch.manual_seed(123)
    layer = nn.Linear(FAN_IN, FAN_OUT)
    initialize(layer, "torch_default", "relu")
    assert torch.equal(layer.weight, reference.weight)
    assert torch.equal(layer.bias, reference.bias)
    # and it really is PyTorch's kaiming_uniform(a=sqrt 5): Var = 1/(3 fan_in), not Glorot or He
    variance = layer.weight.detach().var().item()
    assert abs(variance - 1 / (3 * FAN_IN)) / (1 / (3 * FAN_IN)) < 0.05


@pytest.mark.parametrize(
    ("activation", "expected"),
    [
        ("selu", "lecun_normal"),
        ("relu", "he_normal"),
        ("leaky_relu", "he_normal"),
        ("elu", "he_normal"),
        ("gelu", "he_normal"),
        ("swish", "he_normal"),
        ("mish", "he_normal"),
        ("tanh", "glorot_uniform"),
        ("sigmoid", "glorot_uniform"),
    ],
)
def test_auto_resolves_per_activation_family(activation: ActivationName, expected: InitScheme):
    assert resolve_init("auto", activation) == expected


def test_auto_covers_every_activation_and_matches_the_book_table():
    table = {"tanh": "glorot", "sigmoid": "glorot", "selu": "lecun"}
    for name in get_args(ActivationName):
        assert activation_family(name) == table.get(name, "he"), name
        assert resolve_init("auto", name) != "auto"
    assert activation_family("none") == "glorot"
    assert activation_family("softmax") == "glorot"


def test_explicit_scheme_is_not_overridden_by_activation():
    assert resolve_init("glorot_normal", "selu") == "glorot_normal"
    assert resolve_init("torch_default", "relu") == "torch_default"


def test_auto_selu_gives_lecun_variance_not_torch_selu_gain():
    torch.manual_seed(0)
    layer = nn.Linear(FAN_IN, FAN_OUT)
    initialize(layer, "auto", "selu")
    variance = layer.weight.detach().var().item()
    # torch.nn.init.calculate_gain('selu') = 3/4 would give (3/4)^2/1000 = 5.6e-4
    assert abs(variance - 1 / FAN_IN) / (1 / FAN_IN) < 0.05


def _relu_signal_ratio(scheme: InitScheme, depth: int = 50, width: int = 256) -> float:
    """E[z^2] of the last layer's pre-activation over the first's, in a bias-free ReLU MLP."""
    torch.manual_seed(0)
    layers = [nn.Linear(width, width, bias=False) for _ in range(depth)]
    initialize(nn.Sequential(*layers), scheme, "relu")
    h = torch.randn(1000, width)
    second_moments = []
    with torch.no_grad():
        for layer in layers:
            z = layer(h)
            second_moments.append(z.pow(2).mean().item())
            h = torch.relu(z)
    return second_moments[-1] / second_moments[0]


@pytest.mark.parametrize("scheme", ["he_normal", "he_uniform"])
def test_he_keeps_signal_through_50_relu_layers(scheme: InitScheme):
    assert 0.1 <= _relu_signal_ratio(scheme) <= 10


@pytest.mark.parametrize("scheme", ["torch_default", "lecun_normal", "glorot_uniform"])
def test_signal_collapses_without_he_in_deep_relu_net(scheme: InitScheme):
    # Var 1/fan_in halves E[z^2] per layer (2^-49 ~ 1.8e-15); PyTorch's 1/(3 fan_in) divides it
    # by 6 per layer (~1e-38 after 50 layers).
    assert _relu_signal_ratio(scheme) < 1e-10


def test_torch_default_collapses_far_more_than_lecun():
    assert _relu_signal_ratio("torch_default") < 1e-30


def _selu_mlp_layer_stats(scheme: InitScheme, activation: str) -> list[tuple[float, float]]:
    """(mean, std) of each layer's output in a 100x100 MLP on standardized inputs."""
    torch.manual_seed(0)
    layers = [nn.Linear(100, 100) for _ in range(100)]
    initialize(nn.Sequential(*layers), scheme, "selu")
    x = torch.randn(1000, 100)
    h = (x - x.mean(dim=0)) / x.std(dim=0)
    fn = torch.selu if activation == "selu" else torch.relu
    stats = []
    with torch.no_grad():
        for layer in layers:
            h = fn(layer(h))
            stats.append((h.mean().item(), h.std().item()))
    return stats


def test_selu_with_lecun_self_normalizes_over_100_layers():
    stats = _selu_mlp_layer_stats("auto", "selu")
    assert len(stats) == 100
    for depth, (mean, std) in enumerate(stats, start=1):
        assert abs(mean) < 0.15, (depth, mean)
        assert 0.75 <= std <= 1.25, (depth, std)


def test_selu_with_he_init_does_not_self_normalize():
    stds = [std for _, std in _selu_mlp_layer_stats("he_normal", "selu")]
    assert stds[-1] > 10
