"""One epoch's training steps on a worker: the optimizer steps (graft.train.step), the LR
schedule's per-batch move, the per-step diagnostics, and the sums the epoch reports."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from graft.train.diagnostics import ActivationRecorder, step_diagnostics
from graft.train.loop_state import LoopState
from graft.train.schedules import LRSchedule
from graft.train.step import StepTarget, train_step

if TYPE_CHECKING:
    from graft.io.tracking import RunLogger


@contextmanager
def cyclic_gc_paused() -> Iterator[None]:
    """Python's cyclic garbage collector off inside the block, back on (if it was) after.

    The loop runs an epoch's training steps inside it. The steps create almost no reference
    cycles (a few objects per hundred steps), but a worker holds some 400,000 long-lived
    objects (torch, torch._dynamo and sympy, imported lazily by the first optimizer step and
    by ``torch.use_deterministic_algorithms``; Ray), and once the per-epoch report and
    checkpoint have allocated enough, a full collection walks all of them: 0.2-0.3 s on one
    core, landing in whatever step comes next. Paused, that collection runs between epochs;
    under DDP it no longer stalls every worker's all-reduce at a random step either.
    Reference counting still frees everything that is not in a cycle."""
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


@dataclass
class StepDiagnostics:
    """Rank 0's per-step diagnostics (``diagnostics.every_n_steps``) to MLflow; the
    activations are recorded on the forward pass unless the phase trains on cached trunk
    outputs (the recorder's blocks do not run then)."""

    logger: RunLogger
    every: int
    recorder: ActivationRecorder | None
    capture_forward: bool = True

    def due(self, step: int) -> bool:
        return self.every > 0 and step % self.every == 0

    def log(
        self, step: int, totals: EpochTotals, lr: float, momentum: float | None, loss: float
    ) -> None:
        values = step_diagnostics(totals.grad_before, totals.grad_after, lr, momentum)
        values["diag.train_loss"] = loss
        if self.recorder is not None:
            values.update(self.recorder.metrics())
        self.logger.metrics(values, step=step)


@dataclass
class EpochTotals:
    """An epoch's training steps, summed (tensors: a .item() per step would sync)."""

    loss_sum: torch.Tensor
    correct: torch.Tensor
    seen: int = 0
    steps: int = 0
    grad_before: float = 0.0
    grad_after: float = 0.0


def train_epoch_steps(
    target: StepTarget,
    schedule: LRSchedule,
    batches: Any,
    state: LoopState,
    device: torch.device,
    *,
    epoch_batches: int,
    labelled: bool,
    diagnostics: StepDiagnostics | None = None,
) -> EpochTotals:
    """One epoch's optimizer steps over ``batches``, the schedule moving after each. The
    reported grad norms are the epoch's last step's: they are measured only there (and on
    diagnosed steps)."""
    totals = EpochTotals(
        torch.zeros((), device=device), torch.zeros((), dtype=torch.int64, device=device)
    )
    with cyclic_gc_paused():
        for xb, yb in batches:
            xb, yb = xb.to(device, non_blocking=True), yb.to(device, non_blocking=True)
            step = state.global_step + 1
            diagnose = diagnostics is not None and diagnostics.due(step)
            if diagnose:  # the LR and momentum this step uses, before the schedule moves
                step_lr, step_momentum = schedule.current_lr(), schedule.current_momentum()
            recorder = diagnostics.recorder if diagnose and diagnostics is not None else None
            measure = diagnose or totals.steps + 1 >= epoch_batches
            outcome = train_step(
                target,
                xb,
                yb,
                measure=measure,
                capture=recorder.capture()
                if recorder is not None and diagnostics is not None and diagnostics.capture_forward
                else None,
            )
            if measure:
                totals.grad_before = outcome.grad_norm_before
                totals.grad_after = outcome.grad_norm_after
            schedule.after_batch()
            state.global_step = step
            totals.steps += 1
            if diagnose and diagnostics is not None:
                diagnostics.log(step, totals, step_lr, step_momentum, outcome.loss.item())
            totals.loss_sum += outcome.loss.detach() * len(yb)
            if labelled:
                totals.correct += (outcome.output.detach().argmax(1) == yb).sum()
            totals.seen += len(yb)
    return totals
