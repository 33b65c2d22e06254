"""The one optimizer step every training loop takes: the Ray Train recipe, the in-process
fold fits, the preflight and the LR finder.

A step is: forward, the objective's loss, the L1/L2 kernel penalty, backward, gradient
clipping, ``optimizer.step()``, then the constraints Keras applies after each update
(max-norm, magnitude pruning). The LR schedule is the caller's: only the recipe has one.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from graft.config import ClipConfig, Precision, RegularizationConfig, TrainConfig
from graft.nn.models import GraftNet
from graft.train.clipping import clip_gradients
from graft.train.objectives import objective_loss
from graft.train.precision import autocast_for, grad_scaler_for
from graft.train.regularizers import apply_max_norm, kernel_penalty, prune_below

# the data loss of a batch: (model output, inputs, targets) -> a scalar tensor
BatchLoss = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def objective_of(model: GraftNet, objective: str) -> BatchLoss:
    """The batch loss of ``objective`` (classify, autoencoder) for ``model``."""

    def loss(output: torch.Tensor, xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
        return objective_loss(model, output, xb, yb, objective)

    return loss


@dataclass(frozen=True)
class StepRules:
    """What a step applies besides the optimizer: the penalties and constraints on the
    kernels, the gradient clipping and the autocast precision. The defaults apply none of
    them."""

    regularization: RegularizationConfig = field(default_factory=RegularizationConfig)
    clip: ClipConfig = field(default_factory=ClipConfig)
    precision: Precision = "fp32"

    @classmethod
    def of(cls, config: TrainConfig) -> StepRules:
        return cls(
            regularization=config.regularization, clip=config.clip, precision=config.precision
        )

    @property
    def penalized(self) -> bool:
        return self.regularization.l1 > 0 or self.regularization.l2 > 0


@dataclass
class StepOutcome:
    """The step's data loss (no penalty) and model output, both still attached to the graph
    (detach before keeping them), and the global gradient norm before and after clipping
    (NaN unless measured)."""

    loss: torch.Tensor
    output: torch.Tensor
    grad_norm_before: float
    grad_norm_after: float


@dataclass
class StepTarget:
    """What a loop's steps update: ``forward`` runs the batch (the model, its DDP wrapper,
    or the head alone on cached trunk outputs); penalties and constraints apply to the
    kernels of ``model``; ``trainable`` are the parameters clipped."""

    model: nn.Module
    forward: nn.Module
    optimizer: torch.optim.Optimizer
    trainable: list[nn.Parameter]
    batch_loss: BatchLoss
    rules: StepRules = field(default_factory=StepRules)
    # fp16 on CUDA: created by the first step, kept across the target's steps
    scaler: torch.amp.GradScaler | None = None


def train_step(
    target: StepTarget,
    xb: torch.Tensor,
    yb: torch.Tensor,
    *,
    measure: bool = False,
    capture: AbstractContextManager[Any] | None = None,
) -> StepOutcome:
    """One optimizer step on the batch (``xb``, ``yb``); see the module doc for its order.

    ``measure`` computes the gradient norms (a pass over every gradient and a sync, twice);
    ``capture`` wraps the forward pass (the diagnostics' activation recorder). The forward
    and the data loss run under ``rules.precision``'s autocast (:mod:`graft.train.precision`);
    the penalty, backward and update do not."""
    rules = target.rules
    target.optimizer.zero_grad(set_to_none=True)
    with autocast_for(rules.precision, xb.device.type):
        with capture or nullcontext():
            output = target.forward(xb)
        loss = target.batch_loss(output, xb, yb)
    total = loss + kernel_penalty(target.model, rules.regularization) if rules.penalized else loss
    if target.scaler is None:
        target.scaler = grad_scaler_for(rules.precision, xb.device.type)
    scaler = target.scaler
    # under DDP the gradients are all-reduced when backward returns
    (scaler.scale(total) if scaler is not None else total).backward()
    if scaler is not None:
        scaler.unscale_(target.optimizer)  # clip the true gradients
    before, after = clip_gradients(target.trainable, rules.clip, measure=measure)
    if scaler is not None:
        scaler.step(target.optimizer)  # skipped when the scaled gradients overflowed
        scaler.update()
    else:
        target.optimizer.step()
    if rules.regularization.max_norm is not None:
        apply_max_norm(target.model, rules.regularization.max_norm)
    if rules.regularization.prune_below is not None:
        prune_below(target.model, rules.regularization.prune_below)
    return StepOutcome(loss, output, before, after)
