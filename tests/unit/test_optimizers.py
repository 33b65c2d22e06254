"""Each optimizer against a literal numpy implementation of its update rule.

The quadratic f(x, y) = 0.5 * (100 x^2 + y^2) is the book's elongated bowl: curvature 100 along
x, 1 along y, so every optimizer's handling of badly scaled inputs shows in its trajectory.
Tensors are float64 so that 1e-6 over 100 steps measures the algorithm, not rounding.

Where torch's formulation differs from the book's equation, the reference says so and follows
the rule torch implements (see ``graft.train.optimizers`` for the list):
eps outside the square root, NAG's parameter = the book's look-ahead point, AdaMax's eps inside
the infinity norm, NAdam with Dozat's momentum schedule.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch
from pydantic import ValidationError
from torch import nn

from graft.config import OptimizerConfig, RegularizationConfig
from graft.errors import ConfigError
from graft.train.optimizers import build_optimizer
from graft.train.regularizers import kernel_penalty

CURVATURE = np.array([100.0, 1.0])
START = np.array([1.0, 1.0])
STEPS = 100
LR = 0.01
# Large enough that a dropped eps, torch's default eps, or eps under the square root would move
# the trajectory by far more than the 1e-6 tolerance.
EPS = 1e-3
WEIGHT_DECAY = 0.1
NADAM_MOMENTUM_DECAY = 0.004  # Dozat's schedule constant, torch's and Keras' value


def grad(theta: np.ndarray) -> np.ndarray:
    return CURVATURE * theta


def ref_sgd(cfg: OptimizerConfig, lr: float) -> list[np.ndarray]:
    theta, out = START.copy(), []
    for _ in range(STEPS):
        theta = theta - lr * grad(theta)
        out.append(theta)
    return out


def ref_momentum(cfg: OptimizerConfig, lr: float) -> list[np.ndarray]:
    """Book: m <- beta m - lr g; theta <- theta + m. Equals torch's v-form for a constant lr."""
    theta, m, out = START.copy(), np.zeros(2), []
    for _ in range(STEPS):
        m = cfg.momentum * m - lr * grad(theta)
        theta = theta + m
        out.append(theta)
    return out


def ref_nag(cfg: OptimizerConfig, lr: float) -> list[np.ndarray]:
    """Book: m <- beta m - lr grad(theta + beta m); theta <- theta + m.

    Torch's parameter is the point where the book measures the gradient, theta + beta m, so
    that is what is returned (theta itself differs from torch's parameter by ~1e-3).
    """
    beta = cfg.momentum
    theta, m, out = START.copy(), np.zeros(2), []
    for _ in range(STEPS):
        m = beta * m - lr * grad(theta + beta * m)
        theta = theta + m
        out.append(theta + beta * m)
    return out


def ref_adagrad(cfg: OptimizerConfig, lr: float) -> list[np.ndarray]:
    """Book: s <- s + g*g; theta <- theta - lr g / sqrt(s + eps). Torch: / (sqrt(s) + eps)."""
    theta, s, out = START.copy(), np.zeros(2), []
    for _ in range(STEPS):
        g = grad(theta)
        s = s + g * g
        theta = theta - lr * g / (np.sqrt(s) + cfg.eps)
        out.append(theta)
    return out


def ref_rmsprop(cfg: OptimizerConfig, lr: float) -> list[np.ndarray]:
    """Book: s <- rho s + (1 - rho) g*g; theta <- theta - lr g / sqrt(s + eps); torch: eps out."""
    theta, s, out = START.copy(), np.zeros(2), []
    for _ in range(STEPS):
        g = grad(theta)
        s = cfg.rho * s + (1 - cfg.rho) * g * g
        theta = theta - lr * g / (np.sqrt(s) + cfg.eps)
        out.append(theta)
    return out


def _adam(cfg: OptimizerConfig, lr: float, decay: float) -> list[np.ndarray]:
    """The book's five steps with its sign convention (m accumulates -g).

    Torch adds eps to sqrt(s_hat) after bias correction instead of inside the square root.
    ``decay``: AdamW first multiplies theta by (1 - lr*wd) (decoupled weight decay).
    """
    b1, b2 = cfg.beta1, cfg.beta2
    theta, m, s, out = START.copy(), np.zeros(2), np.zeros(2), []
    for t in range(1, STEPS + 1):
        g = grad(theta)
        theta = theta * (1 - lr * decay)
        m = b1 * m - (1 - b1) * g
        s = b2 * s + (1 - b2) * g * g
        m_hat = m / (1 - b1**t)
        s_hat = s / (1 - b2**t)
        theta = theta + lr * m_hat / (np.sqrt(s_hat) + cfg.eps)
        out.append(theta)
    return out


def ref_adam(cfg: OptimizerConfig, lr: float) -> list[np.ndarray]:
    return _adam(cfg, lr, decay=0.0)


def ref_adamw(cfg: OptimizerConfig, lr: float) -> list[np.ndarray]:
    return _adam(cfg, lr, decay=cfg.weight_decay)


def ref_adamax(cfg: OptimizerConfig, lr: float) -> list[np.ndarray]:
    """Book: Adam with s <- max(beta2 s, |g|), no bias correction of s, steps scaled by s.

    Torch puts eps inside the max: s <- max(beta2 s, |g| + eps).
    """
    b1, b2 = cfg.beta1, cfg.beta2
    theta, m, u, out = START.copy(), np.zeros(2), np.zeros(2), []
    for t in range(1, STEPS + 1):
        g = grad(theta)
        m = b1 * m + (1 - b1) * g
        u = np.maximum(b2 * u, np.abs(g) + cfg.eps)
        theta = theta - lr / (1 - b1**t) * m / u
        out.append(theta)
    return out


def ref_nadam(cfg: OptimizerConfig, lr: float) -> list[np.ndarray]:
    """Dozat's Nadam as torch documents it (the book gives no formula).

    mu_t = beta1 (1 - 0.5 * 0.96^(t * 0.004)); the gradient term uses mu_t, the momentum
    term the look-ahead mu_{t+1}; s is bias-corrected as in Adam.
    """
    b1, b2 = cfg.beta1, cfg.beta2
    theta, m, s, mu_product, out = START.copy(), np.zeros(2), np.zeros(2), 1.0, []
    for t in range(1, STEPS + 1):
        g = grad(theta)
        mu = b1 * (1 - 0.5 * 0.96 ** (t * NADAM_MOMENTUM_DECAY))
        mu_next = b1 * (1 - 0.5 * 0.96 ** ((t + 1) * NADAM_MOMENTUM_DECAY))
        mu_product *= mu
        m = b1 * m + (1 - b1) * g
        s = b2 * s + (1 - b2) * g * g
        denom = np.sqrt(s / (1 - b2**t)) + cfg.eps
        theta = (
            theta
            - lr * (1 - mu) / (1 - mu_product) * g / denom
            - lr * mu_next / (1 - mu_product * mu_next) * m / denom
        )
        out.append(theta)
    return out


REFERENCES: dict[str, Callable[[OptimizerConfig, float], list[np.ndarray]]] = {
    "sgd": ref_sgd,
    "momentum": ref_momentum,
    "nag": ref_nag,
    "adagrad": ref_adagrad,
    "rmsprop": ref_rmsprop,
    "adam": ref_adam,
    "adamax": ref_adamax,
    "nadam": ref_nadam,
    "adamw": ref_adamw,
}


def torch_trajectory(cfg: OptimizerConfig, lr: float, steps: int = STEPS) -> list[np.ndarray]:
    theta = nn.Parameter(torch.tensor(START, dtype=torch.float64))
    curvature = torch.tensor(CURVATURE, dtype=torch.float64)
    optimizer = build_optimizer([theta], cfg, lr=lr)
    out = []
    for _ in range(steps):
        optimizer.zero_grad()
        loss = 0.5 * (curvature * theta * theta).sum()
        loss.backward()
        optimizer.step()
        out.append(theta.detach().numpy().copy())
    return out


@pytest.mark.parametrize("name", list(REFERENCES))
def test_optimizer_matches_numpy_update_rule(name: str) -> None:
    decay = WEIGHT_DECAY if name == "adamw" else 0.0
    cfg = OptimizerConfig(name=name, eps=EPS, weight_decay=decay)  # type: ignore[arg-type]
    expected = REFERENCES[name](cfg, LR)
    actual = torch_trajectory(cfg, LR)
    np.testing.assert_allclose(np.array(actual), np.array(expected), rtol=0, atol=1e-6)
    # The trajectory actually went somewhere: a no-op optimizer would not pass vacuously.
    assert np.abs(actual[-1] - START).max() > 0.05


def test_nag_tracks_lookahead_point_not_book_theta() -> None:
    """Guards the NAG comparison above: torch's parameter is NOT the book's theta."""
    cfg = OptimizerConfig(name="nag")
    beta, theta, m = cfg.momentum, START.copy(), np.zeros(2)
    for _ in range(STEPS):
        m = beta * m - LR * grad(theta + beta * m)
        theta = theta + m
    actual = torch_trajectory(cfg, LR)[-1]
    np.testing.assert_allclose(actual, theta + beta * m, rtol=0, atol=1e-12)
    assert np.abs(actual - theta).max() > 1e-4


def test_momentum_terminal_velocity_is_ten_times_gd_at_beta_0_9() -> None:
    lr, g = 0.001, 1.0
    w = nn.Parameter(torch.zeros(1, dtype=torch.float64))
    optimizer = build_optimizer([w], OptimizerConfig(name="momentum", momentum=0.9), lr=lr)
    steps = []
    for _ in range(300):
        before = w.item()
        w.grad = torch.full_like(w, g)
        optimizer.step()
        steps.append(before - w.item())
    assert steps[0] == pytest.approx(lr * g, rel=1e-12)  # starts at plain GD's step
    assert steps[-1] == pytest.approx(lr * g / (1 - 0.9), abs=1e-6)  # 10x: 0.01


def test_momentum_close_to_one_fails_to_converge_where_0_9_converges() -> None:
    def max_abs_over_last(momentum: float, steps: int = 200, last: int = 10) -> float:
        cfg = OptimizerConfig(name="momentum", momentum=momentum)
        trajectory = torch_trajectory(cfg, LR, steps=steps)
        return float(np.abs(np.array(trajectory[-last:])).max())

    assert max_abs_over_last(0.9) < 1e-4
    assert max_abs_over_last(0.99999) > 0.9  # still swinging through the whole bowl


def test_adamw_multiplies_weights_by_one_minus_lr_wd_with_zero_gradient() -> None:
    lr, wd = 0.01, 0.1
    torch.manual_seed(0)
    w = nn.Parameter(torch.randn(5, 3, dtype=torch.float64))
    expected = w.detach().clone()
    optimizer = build_optimizer([w], OptimizerConfig(name="adamw", weight_decay=wd), lr=lr)
    for _ in range(20):
        w.grad = torch.zeros_like(w)
        optimizer.step()
        expected.mul_(1 - lr * wd)
        assert torch.equal(w.detach(), expected)


def test_adam_with_l2_penalty_is_not_weight_decay() -> None:
    """With no data gradient, Adam+L2 steps each kernel weight by ~lr (Adam normalizes the
    penalty's gradient away), AdamW by lr*wd*|w|: the book's reason to prefer AdamW."""
    lr, wd = 0.01, 0.1
    torch.manual_seed(0)
    model = nn.Linear(4, 3).double()
    w0 = model.weight.detach().clone()
    adam = build_optimizer(model.parameters(), OptimizerConfig(name="adam"), lr=lr)
    kernel_penalty(model, RegularizationConfig(l2=wd)).backward()
    adam.step()
    adam_step = (model.weight.detach() - w0).abs()
    np.testing.assert_allclose(adam_step.numpy(), lr, rtol=1e-3)
    adamw_step = w0.abs() * lr * wd
    assert (adam_step - adamw_step).abs().min() > 1e-3


@pytest.mark.parametrize("name", [n for n in REFERENCES if n != "adamw"])
def test_weight_decay_outside_adamw_is_refused(name: str) -> None:
    # refused when the config is loaded (before any Ray worker starts) ...
    with pytest.raises(ValidationError, match=r"adamw.*regularization\.l2"):
        OptimizerConfig(name=name, weight_decay=1e-4)  # type: ignore[arg-type]
    # ... and still by the builder for a config that skipped validation
    cfg = OptimizerConfig.model_construct(name=name, weight_decay=1e-4)
    with pytest.raises(ConfigError, match=r"adamw.*regularization\.l2"):
        build_optimizer([nn.Parameter(torch.zeros(2))], cfg, lr=0.1)


def test_rmsprop_uses_config_rho_not_torch_alpha() -> None:
    cfg = OptimizerConfig(name="rmsprop")
    optimizer = build_optimizer([nn.Parameter(torch.zeros(2))], cfg, lr=0.1)
    assert optimizer.param_groups[0]["alpha"] == cfg.rho
    assert optimizer.param_groups[0]["momentum"] == 0.0


def test_group_lr_is_kept_and_lr_argument_is_the_default() -> None:
    head, backbone = nn.Parameter(torch.zeros(2)), nn.Parameter(torch.zeros(3))
    groups: list[dict[str, Any]] = [{"params": [backbone], "lr": 1e-4}, {"params": [head]}]
    optimizer = build_optimizer(groups, OptimizerConfig(name="adam"), lr=1e-2)
    assert [g["lr"] for g in optimizer.param_groups] == [1e-4, 1e-2]


def test_nag_without_momentum_is_refused() -> None:
    with pytest.raises(ValidationError, match="momentum > 0"):
        OptimizerConfig(name="nag", momentum=0)
    cfg = OptimizerConfig.model_construct(name="nag", momentum=0.0)
    with pytest.raises(ConfigError, match="momentum"):
        build_optimizer([nn.Parameter(torch.zeros(2))], cfg, lr=0.1)
