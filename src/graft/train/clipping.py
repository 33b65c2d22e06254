"""Gradient clipping in the three flavours the book and Keras distinguish.

* ``value``: clamp every component to [-threshold, threshold] (Keras ``clipvalue``). Cheap, but
  it can turn the gradient's direction: [0.9, 100] becomes [0.9, 1.0].
* ``norm_per_param``: rescale each parameter tensor whose own L2 norm exceeds the threshold
  (Keras ``clipnorm``); direction is kept within a tensor, not across tensors.
* ``global_norm``: rescale all gradients together when their joint norm exceeds the threshold
  (Keras ``global_clipnorm``, torch ``clip_grad_norm_``); the only mode that keeps the whole
  update's direction. Note that PyTorch's ``clip_grad_norm_`` -- unlike the others -- is global.

Call it after ``backward()`` (after ``GradScaler.unscale_`` under AMP, or the threshold applies
to scaled gradients) and before ``optimizer.step()``. Under DDP the gradients are already
all-reduced then, so every rank clips identically.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import nn

from graft.config import ClipConfig


def global_grad_norm(parameters: Iterable[nn.Parameter]) -> float:
    """The L2 norm of all gradients taken together (0.0 when none has a gradient)."""
    grads = [p.grad for p in parameters if p.grad is not None]
    if not grads:
        return 0.0
    norms = torch.stack([_tensor_norm(g.detach()).double() for g in grads])
    return float(torch.linalg.vector_norm(norms, 2.0))


def _tensor_norm(grad: torch.Tensor) -> torch.Tensor:
    """L2 norm in at least float32: a float16 gradient's norm overflows at 65504."""
    wide = grad.dtype if grad.dtype in (torch.float32, torch.float64) else torch.float32
    return torch.linalg.vector_norm(grad, 2.0, dtype=wide)


def clip_gradients(
    parameters: Iterable[nn.Parameter], cfg: ClipConfig, measure: bool = True
) -> tuple[float, float]:
    """Clip the gradients of ``parameters`` in place; return the global norm before and after.

    Measuring costs a pass over every gradient and a sync, twice: with ``measure=False`` the
    norms are not computed (NaN is returned) and only the clipping itself runs.

    The two norms are what the training loop logs (``grad_norm_preclip``/``_postclip``): a
    pre-clip norm far above the threshold on most steps means the threshold, or the LR, is off.
    Gradients already within the threshold are left bit-identical in every mode.
    """
    if cfg.mode == "none" and not measure:  # the loop's usual step: nothing to do
        return math.nan, math.nan
    params = [p for p in parameters if p.grad is not None]
    before = global_grad_norm(params) if measure else math.nan
    if cfg.mode == "none" or not params:
        return before, before
    threshold = cfg.threshold
    with torch.no_grad():
        if cfg.mode == "value":
            for p in params:
                assert p.grad is not None
                p.grad.clamp_(-threshold, threshold)
        elif cfg.mode == "norm_per_param":
            for p in params:
                assert p.grad is not None
                norm = _tensor_norm(p.grad)
                if norm > threshold:
                    # Keras' clip_by_norm: g * threshold / norm, no epsilon.
                    p.grad.mul_(threshold / norm)
        else:  # global_norm: torch scales by threshold / (norm + 1e-6) when norm > threshold
            torch.nn.utils.clip_grad_norm_(params, max_norm=threshold, norm_type=2.0)
    return before, global_grad_norm(params) if measure else math.nan
