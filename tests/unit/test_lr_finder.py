"""LR finder: geometric sweep, divergence stop, a suggestion below the blow-up, exact restore."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from graft.config import OptimizerConfig
from graft.errors import ConfigError
from graft.train.lr_finder import LRFinderResult, find_lr, plot_lr_finder, sweep_lrs
from graft.train.optimizers import build_optimizer


def _regression(n: int = 1024, d: int = 8, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=gen)
    w = torch.randn(d, 1, generator=gen)
    y = x @ w + 0.1 * torch.randn(n, 1, generator=gen)
    return x, y


def _divergence_lr(x: torch.Tensor) -> float:
    """SGD on mean squared error diverges above 2 / lambda_max of the loss's Hessian."""
    design = torch.cat([x, torch.ones(len(x), 1)], dim=1).double()
    hessian = 2.0 * design.T @ design / len(x)
    return float(2.0 / torch.linalg.eigvalsh(hessian).max())


def _loader(
    x: torch.Tensor, y: torch.Tensor, batch: int = 64
) -> DataLoader[tuple[torch.Tensor, ...]]:
    return DataLoader(TensorDataset(x, y), batch_size=batch, shuffle=True)


def test_sweep_is_geometric_and_covers_the_range() -> None:
    lrs = sweep_lrs(1e-4, 1.0, 9)
    assert lrs[0] == pytest.approx(1e-4, rel=1e-12)
    assert lrs[-1] == pytest.approx(1.0, rel=1e-12)
    ratios = np.array(lrs[1:]) / np.array(lrs[:-1])
    np.testing.assert_allclose(ratios, 10**0.5, rtol=1e-12)


def test_suggestion_is_in_range_and_below_the_divergence_point() -> None:
    torch.manual_seed(0)
    x, y = _regression()
    model = nn.Linear(8, 1)
    cfg = OptimizerConfig(name="sgd")
    result = find_lr(model, _loader(x, y), nn.functional.mse_loss, cfg, 1e-4, 10.0, 200)
    critical = _divergence_lr(x)  # about 0.9 for this data
    assert 0.5 < critical < 1.5
    # the sweep blew up and stopped early, past the critical LR but well before max_lr
    assert result.diverged_lr is not None
    assert critical < result.diverged_lr < 10.0
    assert len(result.lrs) < 200
    # the loss fell by orders of magnitude before the blow-up
    assert min(result.smoothed_losses) < 0.05 * result.smoothed_losses[0]
    # the suggestion: best_lr / 10, inside [min_lr, max_lr] and below the divergence point
    assert result.suggested_lr == pytest.approx(result.best_lr / 10, rel=1e-12)
    assert 1e-4 <= result.suggested_lr <= 10.0
    assert result.suggested_lr < critical < result.diverged_lr
    assert result.suggested_lr > critical / 100  # and not uselessly small
    # stop rule, recomputed: the bias-corrected EMA (beta 0.9) first exceeds 4x its best at the end
    average, best, exceeded = 0.0, math.inf, []
    for step, loss in enumerate(result.losses):
        average = 0.9 * average + 0.1 * loss
        current = average / (1 - 0.9 ** (step + 1))
        best = min(best, current)
        exceeded.append(current > 4 * best)
    assert exceeded[-1] and not any(exceeded[:-1])
    assert result.diverged_lr == result.lrs[-1]


def test_suggested_lr_trains_and_the_divergence_lr_does_not() -> None:
    torch.manual_seed(1)
    x, y = _regression()
    model = nn.Linear(8, 1)
    result = find_lr(
        model, _loader(x, y), nn.functional.mse_loss, OptimizerConfig(name="sgd"), 1e-4, 10.0, 200
    )

    def final_loss(lr: float) -> float:
        trial = nn.Linear(8, 1)
        trial.load_state_dict(model.state_dict())
        opt = torch.optim.SGD(trial.parameters(), lr=lr)
        for xb, yb in _loader(x, y):
            opt.zero_grad()
            nn.functional.mse_loss(trial(xb), yb).backward()
            opt.step()
        return float(nn.functional.mse_loss(trial(x), y).detach())

    start = float(nn.functional.mse_loss(model(x), y).detach())
    assert final_loss(result.suggested_lr) < 0.5 * start
    assert result.diverged_lr is not None
    diverged = final_loss(result.diverged_lr)
    assert not math.isfinite(diverged) or diverged > start


def _classifier() -> nn.Module:
    return nn.Sequential(
        nn.Linear(6, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Dropout(0.3), nn.Linear(16, 3)
    )


def test_model_and_optimizer_restored_bit_identical() -> None:
    torch.manual_seed(0)
    x = torch.randn(256, 6)
    y = torch.randint(0, 3, (256,))
    model = _classifier()
    optimizer = build_optimizer(model.parameters(), OptimizerConfig(name="adam"), lr=3e-3)
    loader = _loader(x, y, batch=32)
    for xb, yb in loader:  # real optimizer state: Adam moments and step counts
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(xb), yb).backward()
        optimizer.step()
    model.eval()
    model[3].train()  # a mixed-mode model must come back mixed
    model_before = {k: v.clone() for k, v in model.state_dict().items()}
    grads_before = [p.grad.clone() for p in model.parameters() if p.grad is not None]
    opt_before = optimizer.state_dict()
    opt_before_state = {
        i: {k: v.clone() for k, v in s.items()} for i, s in opt_before["state"].items()
    }
    opt_before_lrs = [g["lr"] for g in optimizer.param_groups]
    params_before = list(model.parameters())
    rng_before = torch.get_rng_state()
    expected_draw = torch.rand(5)
    torch.set_rng_state(rng_before)

    result = find_lr(
        model,
        loader,
        nn.functional.cross_entropy,
        OptimizerConfig(name="adam"),
        1e-5,
        10.0,
        40,
        optimizer=optimizer,
    )
    assert len(result.lrs) >= 5  # the sweep really trained

    after = model.state_dict()
    assert after.keys() == model_before.keys()
    for key, tensor in model_before.items():
        assert torch.equal(after[key], tensor), key  # BN running stats and counter included
    assert [p.grad for p in model.parameters() if p.grad is not None] != []
    for before, param in zip(
        grads_before, (p for p in model.parameters() if p.grad is not None), strict=True
    ):
        assert torch.equal(param.grad, before)
    assert all(a is b for a, b in zip(params_before, model.parameters(), strict=True))
    state = optimizer.state_dict()["state"]
    assert state.keys() == opt_before_state.keys()
    for index, values in opt_before_state.items():
        for key, tensor in values.items():
            assert torch.equal(state[index][key], tensor), (index, key)
    assert [g["lr"] for g in optimizer.param_groups] == opt_before_lrs
    assert [m.training for m in model] == [False, False, False, True, False]
    assert torch.equal(torch.rand(5), expected_draw)  # the global RNG stream is untouched


def test_fresh_optimizer_sweep_restores_the_model_even_without_optimizer() -> None:
    torch.manual_seed(0)
    x, y = _regression(256)
    model = nn.Linear(8, 1)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    find_lr(
        model, _loader(x, y), nn.functional.mse_loss, OptimizerConfig(name="nag"), 1e-4, 1.0, 30
    )
    for key, tensor in before.items():
        assert torch.equal(model.state_dict()[key], tensor)
    assert all(p.grad is None for p in model.parameters())


def test_short_sweep_without_divergence_and_loader_reuse() -> None:
    torch.manual_seed(0)
    x, y = _regression(128)
    loader = _loader(x, y, batch=64)  # 2 batches: the 10-step sweep cycles the loader
    result = find_lr(
        nn.Linear(8, 1), loader, nn.functional.mse_loss, OptimizerConfig(name="sgd"), 1e-5, 1e-3, 10
    )
    assert result.diverged_lr is None
    assert len(result.lrs) == 10
    np.testing.assert_allclose(result.lrs, sweep_lrs(1e-5, 1e-3, 10), rtol=1e-12)
    assert 1e-5 <= result.suggested_lr <= 1e-3


def test_default_num_steps_is_one_pass() -> None:
    x, y = _regression(320)
    result = find_lr(
        nn.Linear(8, 1),
        _loader(x, y, batch=32),
        nn.functional.mse_loss,
        OptimizerConfig(name="sgd"),
        1e-5,
        1e-3,
    )
    assert len(result.lrs) == 10


@pytest.mark.parametrize(("low", "high", "steps"), [(0.0, 1.0, 10), (1.0, 0.1, 10), (1e-4, 1.0, 1)])
def test_bad_sweep_arguments_are_config_errors(low: float, high: float, steps: int) -> None:
    x, y = _regression(64)
    with pytest.raises(ConfigError):
        find_lr(
            nn.Linear(8, 1),
            _loader(x, y),
            nn.functional.mse_loss,
            OptimizerConfig(),
            low,
            high,
            steps,
        )


def test_plot_writes_a_png(tmp_path: Path) -> None:
    result = LRFinderResult(
        lrs=sweep_lrs(1e-4, 1.0, 20),
        losses=[2.0 - 0.08 * i for i in range(19)] + [9.0],
        smoothed_losses=[2.0 - 0.07 * i for i in range(19)] + [8.0],
        suggested_lr=0.01,
        best_lr=0.1,
        steepest_lr=0.03,
        diverged_lr=1.0,
        min_lr=1e-4,
        max_lr=1.0,
    )
    path = plot_lr_finder(result, tmp_path / "plots" / "lr_finder.png")
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(data) > 5_000
