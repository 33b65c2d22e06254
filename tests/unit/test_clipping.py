"""Gradient clipping: the book's [0.9, 100] vector, per-tensor vs global norm, no-op below."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from graft.config import ClipConfig
from graft.train.clipping import clip_gradients


def params_with_grads(*grads: list[float]) -> list[nn.Parameter]:
    params = []
    for g in grads:
        p = nn.Parameter(torch.zeros(len(g), dtype=torch.float64))
        p.grad = torch.tensor(g, dtype=torch.float64)
        params.append(p)
    return params


def grad_tensor(p: nn.Parameter) -> torch.Tensor:
    assert p.grad is not None
    return p.grad


def grad_of(p: nn.Parameter) -> list[float]:
    return grad_tensor(p).tolist()


def test_value_clipping_changes_the_direction() -> None:
    (p,) = params_with_grads([0.9, 100.0])
    before, after = clip_gradients([p], ClipConfig(mode="value", threshold=1.0))
    assert grad_of(p) == [0.9, 1.0]
    assert before == pytest.approx(math.hypot(0.9, 100.0), rel=1e-12)
    assert after == pytest.approx(math.hypot(0.9, 1.0), rel=1e-12)
    cosine = (0.9 * 0.9 + 100.0 * 1.0) / (math.hypot(0.9, 100.0) * math.hypot(0.9, 1.0))
    assert cosine == pytest.approx(0.7493, abs=1e-4)  # the book's warning, in a number


@pytest.mark.parametrize("mode", ["global_norm", "norm_per_param"])
def test_norm_clipping_keeps_the_direction_books_vector(mode: str) -> None:
    (p,) = params_with_grads([0.9, 100.0])
    _, after = clip_gradients([p], ClipConfig(mode=mode, threshold=1.0))  # type: ignore[arg-type]
    # torch's clip_grad_norm_ divides by norm + 1e-6; within 1e-6 of the book's numbers anyway.
    assert grad_of(p) == pytest.approx([0.00899964, 0.9999595], abs=1e-6)
    assert after <= 1.0 + 1e-9


def test_per_param_clips_each_tensor_while_global_keeps_their_ratio() -> None:
    cfg_per = ClipConfig(mode="norm_per_param", threshold=1.0)
    big, small = params_with_grads([3.0, 4.0], [0.0, 0.1])
    clip_gradients([big, small], cfg_per)
    assert grad_of(big) == pytest.approx([0.6, 0.8], rel=1e-12)
    assert grad_of(small) == [0.0, 0.1]  # under the threshold: untouched

    big, small = params_with_grads([3.0, 4.0], [0.0, 0.1])
    before, after = clip_gradients([big, small], ClipConfig(mode="global_norm", threshold=1.0))
    scale = 1.0 / math.sqrt(25.01)
    assert before == pytest.approx(math.sqrt(25.01), rel=1e-12)
    assert grad_of(big) == pytest.approx([3.0 * scale, 4.0 * scale], rel=1e-6)
    assert grad_of(small) == pytest.approx([0.0, 0.1 * scale], rel=1e-6)
    assert after == pytest.approx(1.0, abs=1e-6) and after <= 1.0


@pytest.mark.parametrize("mode", ["value", "norm_per_param", "global_norm", "none"])
def test_gradients_within_the_threshold_stay_bit_identical(mode: str) -> None:
    torch.manual_seed(0)
    params = params_with_grads([0.3, -0.2, 0.1], [0.05, 0.4])
    originals = [grad_tensor(p).clone() for p in params]
    before, after = clip_gradients(params, ClipConfig(mode=mode, threshold=1.0))  # type: ignore[arg-type]
    assert all(torch.equal(grad_tensor(p), g) for p, g in zip(params, originals, strict=True))
    assert before == after


def test_none_mode_reports_the_norm_and_leaves_large_gradients() -> None:
    (p,) = params_with_grads([3.0, 4.0])
    assert clip_gradients([p], ClipConfig(mode="none")) == (5.0, 5.0)
    assert grad_of(p) == [3.0, 4.0]


def test_parameters_without_gradients_are_skipped() -> None:
    (p,) = params_with_grads([3.0, 4.0])
    frozen = nn.Parameter(torch.ones(3))
    before, after = clip_gradients([p, frozen], ClipConfig(mode="global_norm", threshold=1.0))
    assert frozen.grad is None and before == pytest.approx(5.0) and after <= 1.0
    assert clip_gradients([frozen], ClipConfig(mode="value")) == (0.0, 0.0)
