"""L1/L2 kernel penalties and the max-norm constraint: kernels only, neurons by rows."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import nn

from graft.config import OptimizerConfig, RegularizationConfig
from graft.errors import ConfigError
from graft.train.optimizers import build_optimizer
from graft.train.regularizers import apply_max_norm, kernel_penalty, kernel_sparsity, prune_below

CONV_KERNEL = [1.0, -2.0, 0.5, 0.0, -1.0, 1.0, 3.0, -0.5]


def not_kernels(model: nn.Module) -> list[nn.Parameter]:
    """Biases and BatchNorm's gamma/beta: everything a kernel penalty must ignore."""
    kernels = {id(m.weight) for m in model.modules() if isinstance(m, nn.Linear | nn.Conv2d)}
    return [p for p in model.parameters() if id(p) not in kernels]


def tiny_model() -> tuple[nn.Sequential, nn.Conv2d, nn.BatchNorm2d, nn.Linear]:
    """Conv -> BN -> Linear with known kernels, and biases/BN weights that would dominate a
    penalty that wrongly included them."""
    conv = nn.Conv2d(1, 2, kernel_size=2)  # kernel [2, 1, 2, 2]
    bn = nn.BatchNorm2d(2)
    linear = nn.Linear(2, 3)  # kernel [3, 2]
    model = nn.Sequential(conv, bn, nn.Flatten(), linear)
    with torch.no_grad():
        conv.weight.copy_(torch.tensor(CONV_KERNEL).view(2, 1, 2, 2))
        linear.weight.copy_(torch.tensor([[1.0, -1.0], [2.0, 0.0], [0.0, -3.0]]))
        for param in not_kernels(model):
            param.fill_(100.0)
    return model, conv, bn, linear


def test_penalty_is_l1_abs_sum_plus_l2_square_sum_over_kernels_only() -> None:
    model, _, _, linear = tiny_model()
    # conv: sum|w| = 9.0, sum w^2 = 16.5; linear: sum|w| = 7.0, sum w^2 = 15.0
    l1, l2 = 0.1, 0.01
    penalty = kernel_penalty(model, RegularizationConfig(l1=l1, l2=l2))
    assert penalty.item() == pytest.approx(l1 * (9.0 + 7.0) + l2 * (16.5 + 15.0), rel=1e-6)
    penalty.backward()
    assert len(not_kernels(model)) == 4 and all(p.grad is None for p in not_kernels(model))
    expected = l1 * torch.sign(linear.weight) + 2 * l2 * linear.weight
    assert linear.weight.grad is not None and torch.allclose(linear.weight.grad, expected)


def test_books_numbers_for_a_ones_kernel() -> None:
    layer = nn.Linear(10, 5)
    with torch.no_grad():
        layer.weight.fill_(1.0)
        layer.bias.fill_(1.0)
    assert kernel_penalty(layer, RegularizationConfig(l2=0.01)).item() == pytest.approx(0.5)
    assert kernel_penalty(layer, RegularizationConfig(l1=0.1)).item() == pytest.approx(5.0)
    assert kernel_penalty(layer, RegularizationConfig()).item() == 0.0


def test_frozen_kernels_are_not_penalized() -> None:
    model, conv, _, _ = tiny_model()
    conv.weight.requires_grad_(False)
    penalty = kernel_penalty(model, RegularizationConfig(l1=1.0))
    assert penalty.item() == pytest.approx(7.0)  # the linear kernel only


def test_l2_penalty_under_sgd_equals_weight_decay_2_lambda_on_kernels() -> None:
    lam, lr = 0.05, 0.1
    x = torch.linspace(-1, 1, 8, dtype=torch.float64).view(4, 2)

    def run(penalized: bool) -> nn.Linear:
        torch.manual_seed(0)
        model = nn.Linear(2, 3).double()
        if penalized:
            opt = build_optimizer(model.parameters(), OptimizerConfig(name="sgd"), lr=lr)
        else:  # torch's coupled decay, restricted to the kernel by a param group
            groups: list[dict[str, Any]] = [
                {"params": [model.weight], "weight_decay": 2 * lam},
                {"params": [model.bias]},
            ]
            opt = torch.optim.SGD(groups, lr=lr)
        for _ in range(10):
            opt.zero_grad()
            loss = model(x).square().mean()
            if penalized:
                loss = loss + kernel_penalty(model, RegularizationConfig(l2=lam))
            loss.backward()
            opt.step()
        return model

    a, b = run(True), run(False)
    assert torch.allclose(a.weight, b.weight, atol=1e-7, rtol=0)
    assert torch.allclose(a.bias, b.bias, atol=1e-7, rtol=0)


def test_max_norm_caps_every_row_and_leaves_short_rows_bit_identical() -> None:
    r = 1.0
    layer = nn.Linear(3, 4)
    with torch.no_grad():
        layer.weight.copy_(
            torch.tensor([[0.3, 0.4, 0.0], [3.0, 4.0, 0.0], [0.1, -0.2, 0.3], [-6.0, 0.0, 8.0]])
        )
        layer.bias.fill_(50.0)
    before = layer.weight.detach().clone()
    apply_max_norm(layer, r)
    norms = layer.weight.norm(dim=1)
    assert (norms <= r + 1e-6).all()
    assert norms[[1, 3]].tolist() == pytest.approx([r, r], abs=1e-6)
    assert torch.equal(layer.weight[[0, 2]], before[[0, 2]])
    assert torch.allclose(layer.weight[1], before[1] / 5.0, atol=1e-6)  # direction kept
    assert (layer.bias == 50.0).all()  # not a kernel


def test_max_norm_constrains_neurons_not_inputs() -> None:
    torch.manual_seed(0)
    layer = nn.Linear(1000, 10)
    with torch.no_grad():
        layer.weight.mul_(100.0)
    apply_max_norm(layer, 2.0)
    assert (layer.weight.norm(dim=1) <= 2.0 + 1e-6).all()  # 10 neuron norms
    assert layer.weight.norm(dim=1).min() > 1.99  # every neuron was too long and was capped


def test_max_norm_uses_output_channels_for_convolutions() -> None:
    torch.manual_seed(0)
    conv, deconv = nn.Conv2d(3, 4, 3), nn.ConvTranspose2d(4, 5, 3)
    with torch.no_grad():
        conv.weight.mul_(50.0)
        deconv.weight.mul_(50.0)
    model = nn.Sequential(conv, deconv)
    apply_max_norm(model, 1.0)
    assert (conv.weight.flatten(1).norm(dim=1) <= 1.0 + 1e-6).all()  # [out, in*k*k]
    per_out = deconv.weight.transpose(0, 1).flatten(1).norm(dim=1)  # weight is [in, out, k, k]
    assert per_out.shape == (5,) and (per_out <= 1.0 + 1e-6).all()


def test_max_norm_leaves_frozen_layers_alone_and_rejects_nonpositive_r() -> None:
    layer = nn.Linear(3, 2)
    with torch.no_grad():
        layer.weight.fill_(10.0)
    layer.weight.requires_grad_(False)
    before = layer.weight.clone()
    apply_max_norm(layer, 1.0)
    assert torch.equal(layer.weight, before)
    with pytest.raises(ConfigError, match="max_norm"):
        apply_max_norm(layer, 0.0)


def test_prune_below_zeroes_small_kernel_weights_only() -> None:
    model, conv, _, linear = tiny_model()
    with torch.no_grad():
        linear.weight.copy_(torch.tensor([[0.05, -0.2], [-0.09, 0.1], [0.3, -0.01]]))
        linear.bias.fill_(0.01)  # a bias is not a kernel: never pruned
    frozen_conv = conv.weight.detach().clone()
    conv.weight.requires_grad_(False)
    prune_below(model, 0.1)
    expected = torch.tensor([[0.0, -0.2], [0.0, 0.1], [0.3, 0.0]])
    assert torch.equal(linear.weight, expected)
    assert torch.all(linear.bias == 0.01)
    assert torch.equal(conv.weight, frozen_conv)  # frozen: bit-identical
    assert kernel_sparsity(linear) == pytest.approx(3 / 6)
    with pytest.raises(ConfigError, match="prune_below"):
        prune_below(model, 0.0)


def test_prune_below_with_l1_training_yields_a_sparse_model_that_still_fits() -> None:
    torch.manual_seed(0)
    x = torch.randn(256, 20)
    y = (x[:, 0] + x[:, 1] > 0).long()  # two informative inputs of twenty
    model = nn.Sequential(nn.Linear(20, 16), nn.ReLU(), nn.Linear(16, 2))
    optimizer = build_optimizer(list(model.parameters()), OptimizerConfig(name="adam"), 0.01)
    penalty = RegularizationConfig(l1=1e-3)
    for _ in range(300):
        optimizer.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y) + kernel_penalty(model, penalty)
        loss.backward()
        optimizer.step()
        prune_below(model, 0.02)
    accuracy = float((model(x).argmax(1) == y).float().mean())
    assert kernel_sparsity(model) > 0.5
    assert accuracy > 0.9
