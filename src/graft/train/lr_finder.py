"""The LR finder of the book (Hands-On ML ch. 10-11, T14): an exponential LR sweep.

Train for ``num_steps`` mini-batches (about one epoch) while the LR grows geometrically from
``min_lr`` to ``max_lr``, record the loss at every step, stop once the loss blows up, and
suggest a learning rate. Afterwards everything the sweep touched is put back bit-identical: the
model's parameters and buffers (BN running statistics included), its gradients and train/eval
flags, a caller's optimizer state (moments, step counts, group LRs) and torch's global RNG, so
the real run starts exactly as if the finder had never run (the book re-initializes the model
instead; restoring is cheaper and keeps a pretrained backbone).

Stopping rule (online): the mini-batch loss is smoothed with a bias-corrected exponential moving
average (``smoothing`` = 0.9); the sweep stops at the first step whose average exceeds
``divergence_factor`` (4) times the best average so far, or whose loss is not finite. (fastai's
beta 0.98 remembers ~50 steps: when the loss falls 1000x within a decade of LR, as it does on an
easy problem, that average lags so far behind that its minimum sits past the blow-up.)

Suggestion rule: ``suggested_lr = best_lr / 10``, where ``best_lr`` is the LR at the minimum of
``smoothed_losses``, a *centered* moving average of the recorded losses over +-2.5% of the sweep
(no lag, unlike the online average). This is the book's "a bit lower than the point where the
loss starts shooting back up" made precise: an order of magnitude below the minimum still sits
on the falling part of the curve. The LR of steepest descent of that curve is reported too
(``steepest_lr``) but not used: on a sweep of ~100 noisy steps its position jumps between runs,
while the minimum is stable. For 1cycle, ``schedule.one_cycle_max_lr`` lies between
``suggested_lr`` and ``best_lr``.

A loader built with its own ``generator`` advances that generator (the finder cannot see it);
one that shuffles with torch's global RNG is restored with the rest.
"""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from graft.config import OptimizerConfig
from graft.errors import ConfigError, TrainingError
from graft.train.optimizers import build_optimizer
from graft.train.step import BatchLoss, StepRules, StepTarget, train_step

logger = logging.getLogger(__name__)

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

SMOOTHING = 0.9
SUGGESTION_DIVISOR = 10.0
CENTERED_WINDOW_FRACTION = 0.025  # half-width of the centered average, as a share of the sweep


@dataclass
class LRFinderResult:
    """The sweep: one entry per step actually run (the diverging step included)."""

    lrs: list[float]
    losses: list[float]  # raw mini-batch losses
    smoothed_losses: list[float]  # centered moving average of ``losses`` (the suggestion's curve)
    suggested_lr: float  # best_lr / 10, clamped to [min_lr, max_lr]
    best_lr: float  # LR at the minimum smoothed loss
    steepest_lr: float | None  # LR of the steepest fall of the smoothed loss (informative)
    diverged_lr: float | None  # LR at which the sweep stopped on divergence; None = ran out
    min_lr: float
    max_lr: float


def sweep_lrs(min_lr: float, max_lr: float, num_steps: int) -> list[float]:
    """``num_steps`` LRs, geometric from ``min_lr`` to ``max_lr`` (both included)."""
    ratio = max_lr / min_lr
    return [min_lr * ratio ** (i / (num_steps - 1)) for i in range(num_steps)]


def _batch_loss(loss_fn: LossFn) -> BatchLoss:
    """``loss_fn`` (output, targets) as the step's batch loss (output, inputs, targets)."""

    def loss(output: torch.Tensor, _inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return loss_fn(output, targets)

    return loss


def _batches(loader: Iterable[Any]) -> Iterator[Any]:
    """The loader's batches, restarting it when it runs out (a sweep may exceed one pass)."""
    while True:
        empty = True
        for batch in loader:
            empty = False
            yield batch
        if empty:
            raise TrainingError("the LR finder's loader yielded no batch; pass a non-empty one")


@dataclass
class _Snapshot:
    model_state: dict[str, torch.Tensor]
    grads: list[torch.Tensor | None]
    training: dict[str, bool]
    rng: torch.Tensor
    cuda_rng: list[torch.Tensor] | None
    optimizer_state: dict[str, Any] | None


def _snapshot(model: nn.Module, optimizer: torch.optim.Optimizer | None) -> _Snapshot:
    return _Snapshot(
        model_state={k: v.detach().clone() for k, v in model.state_dict().items()},
        grads=[p.grad.detach().clone() if p.grad is not None else None for p in model.parameters()],
        training={name: module.training for name, module in model.named_modules()},
        rng=torch.get_rng_state(),
        cuda_rng=torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None,
        optimizer_state=copy.deepcopy(optimizer.state_dict()) if optimizer is not None else None,
    )


def _restore(model: nn.Module, optimizer: torch.optim.Optimizer | None, snap: _Snapshot) -> None:
    model.load_state_dict(snap.model_state)  # copies in place: Parameter objects are kept
    for param, grad in zip(model.parameters(), snap.grads, strict=True):
        param.grad = grad
    for name, module in model.named_modules():
        module.training = snap.training[name]
    torch.set_rng_state(snap.rng)
    if snap.cuda_rng is not None:
        torch.cuda.set_rng_state_all(snap.cuda_rng)
    if optimizer is not None and snap.optimizer_state is not None:
        optimizer.load_state_dict(snap.optimizer_state)


def _centered_average(values: list[float], half_width: int) -> list[float]:
    sums = np.concatenate([[0.0], np.cumsum(values)])
    out = []
    for i in range(len(values)):
        lo, hi = max(0, i - half_width), min(len(values), i + half_width + 1)
        out.append(float((sums[hi] - sums[lo]) / (hi - lo)))
    return out


def _steepest_lr(lrs: list[float], smoothed: list[float], best_index: int) -> float | None:
    """LR where d(smoothed loss)/d(log lr) is most negative, up to the minimum."""
    if best_index < 2:
        return None
    slope = np.gradient(np.array(smoothed[: best_index + 1]), np.log(lrs[: best_index + 1]))
    return lrs[int(np.argmin(slope))]


def _check_sweep(
    min_lr: float, max_lr: float, num_steps: int, divergence_factor: float, smoothing: float
) -> None:
    if not (0 < min_lr < max_lr) or not math.isfinite(max_lr):
        raise ConfigError(
            f"the LR finder needs 0 < min_lr < max_lr (got min_lr={min_lr}, max_lr={max_lr}); "
            "the book sweeps 1e-4 to 1"
        )
    if num_steps < 2:
        raise ConfigError(
            f"the LR finder needs num_steps >= 2 (got {num_steps}); sweep over about one epoch "
            "of a few hundred mini-batches"
        )
    if divergence_factor <= 1:
        raise ConfigError(f"divergence_factor must be > 1, got {divergence_factor}")
    if not 0 <= smoothing < 1:
        raise ConfigError(f"smoothing must be in [0, 1), got {smoothing}")


def _sweep(
    target: StepTarget,
    batches: Iterator[Any],
    lrs: list[float],
    ratios: list[float],
    device: torch.device,
    divergence_factor: float,
    smoothing: float,
) -> tuple[list[float], list[float], float | None]:
    """One step per LR until the online average diverges: (LRs run, their losses, the LR
    the sweep stopped at on divergence or None)."""
    done_lrs: list[float] = []
    losses: list[float] = []
    average, best = 0.0, math.inf
    for step, lr in enumerate(lrs):
        for group, ratio in zip(target.optimizer.param_groups, ratios, strict=True):
            group["lr"] = lr * ratio
        inputs, targets = next(batches)
        # a non-finite loss's update is undone with everything else when the sweep ends
        loss = train_step(target, inputs.to(device), targets.to(device)).loss
        value = float(loss.detach())
        if not math.isfinite(value):
            return done_lrs, losses, lr
        average = smoothing * average + (1 - smoothing) * value
        current = average / (1 - smoothing ** (step + 1))
        done_lrs.append(lr)
        losses.append(value)
        best = min(best, current)
        if current > divergence_factor * best:
            return done_lrs, losses, lr
    return done_lrs, losses, None


def find_lr(
    model: nn.Module,
    loader: Iterable[Any],
    loss_fn: LossFn,
    optimizer_cfg: OptimizerConfig,
    min_lr: float = 1e-4,
    max_lr: float = 1.0,
    num_steps: int | None = None,
    *,
    optimizer: torch.optim.Optimizer | None = None,
    divergence_factor: float = 4.0,
    smoothing: float = SMOOTHING,
    rules: StepRules | None = None,
) -> LRFinderResult:
    """Sweep the LR geometrically over ``num_steps`` batches of ``loader``; see the module doc.

    ``loader`` yields ``(inputs, targets)``; ``num_steps`` None means one pass (``len(loader)``).
    The sweep trains with a fresh optimizer built from ``optimizer_cfg`` over the trainable
    parameters, unless ``optimizer`` is given: then that one is used (its groups keep their LR
    ratios) and its state is restored afterwards. The model is always restored. Each step is
    graft.train.step's, with ``rules`` (penalties, clipping, constraints; none by default).
    """
    if num_steps is None:
        num_steps = len(loader)  # type: ignore[arg-type]
    _check_sweep(min_lr, max_lr, num_steps, divergence_factor, smoothing)
    trainable = [p for p in model.parameters() if p.requires_grad]
    if not trainable:
        raise TrainingError("the LR finder got a model with no trainable parameter")

    snap = _snapshot(model, optimizer)
    lrs = sweep_lrs(min_lr, max_lr, num_steps)
    try:
        sweep_opt = optimizer or build_optimizer(trainable, optimizer_cfg, lr=min_lr)
        reference = float(sweep_opt.param_groups[0]["lr"])
        ratios = [float(group["lr"]) / reference for group in sweep_opt.param_groups]
        device = trainable[0].device
        target = StepTarget(
            model, model, sweep_opt, trainable, _batch_loss(loss_fn), rules or StepRules()
        )
        model.train()
        done_lrs, losses, diverged_lr = _sweep(
            target, _batches(loader), lrs, ratios, device, divergence_factor, smoothing
        )
    finally:
        _restore(model, optimizer, snap)

    return _sweep_result(done_lrs, losses, diverged_lr, min_lr, max_lr, num_steps)


def _sweep_result(
    done_lrs: list[float],
    losses: list[float],
    diverged_lr: float | None,
    min_lr: float,
    max_lr: float,
    num_steps: int,
) -> LRFinderResult:
    """The sweep's curve smoothed, its minimum, steepest descent and suggested LR (logged)."""
    if not losses:
        raise TrainingError(
            f"the loss was not finite at the first LR of the sweep ({min_lr}); lower min_lr or "
            "check the data and the model's initialization"
        )
    half_width = max(0, round(CENTERED_WINDOW_FRACTION * num_steps))
    smoothed = _centered_average(losses, half_width)
    best_index = int(np.argmin(smoothed))
    best_lr = done_lrs[best_index]
    suggested = min(max(best_lr / SUGGESTION_DIVISOR, min_lr), max_lr)
    logger.info(
        "LR finder: %d steps, minimum smoothed loss %.4g at lr %.3g, %s; suggested lr %.3g",
        len(done_lrs),
        smoothed[best_index],
        best_lr,
        f"diverged at lr {diverged_lr:.3g}" if diverged_lr is not None else "no divergence",
        suggested,
    )
    return LRFinderResult(
        lrs=done_lrs,
        losses=losses,
        smoothed_losses=smoothed,
        suggested_lr=suggested,
        best_lr=best_lr,
        steepest_lr=_steepest_lr(done_lrs, smoothed, best_index),
        diverged_lr=diverged_lr,
        min_lr=min_lr,
        max_lr=max_lr,
    )


def plot_lr_finder(result: LRFinderResult, path: str | Path) -> Path:
    """Write the loss-vs-LR curve (log x axis) with the suggested LR marked, as a PNG."""
    import matplotlib.pyplot as plt

    from graft.io.plotting import save_figure

    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(result.lrs, result.losses, color="tab:gray", alpha=0.4, label="mini-batch loss")
    ax.plot(result.lrs, result.smoothed_losses, color="tab:blue", label="smoothed loss")
    ax.axvline(result.suggested_lr, color="tab:green", linestyle="--", label="suggested lr")
    ax.axvline(result.best_lr, color="tab:orange", linestyle=":", label="minimum loss")
    if result.diverged_lr is not None:
        ax.axvline(result.diverged_lr, color="tab:red", linestyle=":", label="diverged")
    ax.set_xscale("log")
    # Keep the interesting part visible: the blow-up would otherwise squash the curve.
    top = max(result.smoothed_losses[0], min(result.smoothed_losses)) * 1.5
    bottom = min(min(result.losses), min(result.smoothed_losses))
    ax.set_ylim(bottom - 0.05 * abs(top - bottom), top)
    ax.set_xlabel("learning rate")
    ax.set_ylabel("training loss")
    ax.set_title(f"LR finder: suggested lr {result.suggested_lr:.2g}")
    ax.legend(loc="best")
    fig.tight_layout()
    return save_figure(fig, path, dpi=110)
