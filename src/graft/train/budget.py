"""Training budgets measured in examples, not epochs: virtual epochs and the linear LR rule.

ML Design Patterns ch. 4 (S0-18..S0-21): an epoch is a bad unit. It is an integer (stopping at
14.3 passes instead of 15 saves 700,000 examples of compute on a 1M-example set), a checkpoint a
pass is too rare for resilience, and it changes meaning when the data grows or the batch size
is tuned. A *virtual epoch* is the number of steps between two checkpoints, chosen so that the
total number of examples shown is fixed::

    global_batch            = per_worker_batch * num_workers
    steps_per_virtual_epoch = floor(stop_point * num_examples / (global_batch * num_checkpoints))
    total_steps             = steps_per_virtual_epoch * num_checkpoints
    examples_seen           = total_steps * global_batch   (<= stop_point * num_examples)

The examples per checkpoint depend only on the global batch's divisibility, not on how it is
split over workers: 1 worker x 100 and 2 workers x 50 train on the same 14,299,500 examples.
The arithmetic is exact: ``stop_point`` is read as the decimal the user wrote (14.3 is 143/10,
not 14.300000000000000710...), so no float rounding moves a floor by one step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from graft.config import ScheduleConfig, TrainConfig
from graft.errors import ConfigError


@dataclass(frozen=True)
class VirtualEpochBudget:
    num_examples: int
    stop_point: float  # passes over the data the whole run is worth (may be fractional)
    per_worker_batch: int
    num_workers: int
    num_checkpoints: int
    global_batch: int
    steps_per_virtual_epoch: int
    total_steps: int
    examples_per_virtual_epoch: int
    examples_seen: int  # what the run trains on: total_steps * global_batch
    examples_budget: int  # floor(stop_point * num_examples), the target examples_seen meets

    @property
    def examples_lost_to_flooring(self) -> int:
        return self.examples_budget - self.examples_seen


def _exact(value: float, name: str) -> Fraction:
    if isinstance(value, bool) or not math.isfinite(value) or value <= 0:
        raise ConfigError(f"{name} must be a finite number > 0, got {value!r}")
    # repr() is the shortest decimal that round-trips: the number the user typed.
    return Fraction(value) if isinstance(value, int) else Fraction(repr(float(value)))


def _positive_int(value: int, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{name} must be an integer >= 1, got {value!r}")
    return value


def virtual_epoch_budget(
    num_examples: int,
    stop_point: float,
    per_worker_batch: int,
    num_workers: int = 1,
    num_checkpoints: int = 1,
) -> VirtualEpochBudget:
    """The virtual-epoch plan for a run; see the module docstring for the formulas.

    Raises ConfigError when the budget is smaller than one global batch per checkpoint.
    """
    _positive_int(num_examples, "num_examples")
    _positive_int(per_worker_batch, "per_worker_batch")
    _positive_int(num_workers, "num_workers")
    _positive_int(num_checkpoints, "num_checkpoints")
    stop = _exact(stop_point, "stop_point")
    global_batch = per_worker_batch * num_workers
    total = stop * num_examples
    steps = math.floor(total / (global_batch * num_checkpoints))
    if steps < 1:
        raise ConfigError(
            f"a budget of {float(total):,.0f} examples (stop_point {stop_point} x "
            f"{num_examples:,} examples) is less than one global batch ({global_batch} = "
            f"{per_worker_batch} x {num_workers} workers) per checkpoint ({num_checkpoints}); "
            "raise stop_point, or lower the batch size or num_checkpoints"
        )
    total_steps = steps * num_checkpoints
    return VirtualEpochBudget(
        num_examples=num_examples,
        stop_point=float(stop_point),
        per_worker_batch=per_worker_batch,
        num_workers=num_workers,
        num_checkpoints=num_checkpoints,
        global_batch=global_batch,
        steps_per_virtual_epoch=steps,
        total_steps=total_steps,
        examples_per_virtual_epoch=steps * global_batch,
        examples_seen=total_steps * global_batch,
        examples_budget=math.floor(total),
    )


def linear_scaled_lr(lr: float, global_batch: int, reference_batch: int) -> float:
    """The linear scaling rule (Goyal et al. 2017): ``lr * global_batch / reference_batch``.

    ``lr`` is the learning rate tuned at ``reference_batch``; with k times the global batch
    (more workers, or a larger per-worker batch) each step averages k times more examples, so
    the step is made k times larger. Use with a warmup for large k.
    """
    if not math.isfinite(lr) or lr <= 0:
        raise ConfigError(f"lr must be a finite value > 0, got {lr}")
    _positive_int(global_batch, "global_batch")
    _positive_int(reference_batch, "reference_batch")
    return lr * global_batch / reference_batch


def lr_scale_factor(config: TrainConfig, world_size: int) -> float:
    """What the LR is multiplied by on ``world_size`` workers: 1, or ``world_size`` under the
    linear scaling rule (``scale_lr_with_workers``; reference batch: one worker's batch)."""
    if not config.scale_lr_with_workers:
        return 1.0
    return linear_scaled_lr(1.0, config.batch_size * world_size, config.batch_size)


def worker_lr(config: TrainConfig, world_size: int) -> float:
    """The base LR of a fit on ``world_size`` workers (``optimizer.lr`` x the scale factor)."""
    return config.optimizer.lr * lr_scale_factor(config, world_size)


def scaled_schedule(schedule: ScheduleConfig, factor: float) -> ScheduleConfig:
    """The schedule with its absolute LRs (1cycle peak, piecewise values) times ``factor``."""
    if factor == 1.0:
        return schedule
    update: dict[str, Any] = {"values": [v * factor for v in schedule.values]}
    if schedule.one_cycle_max_lr is not None:
        update["one_cycle_max_lr"] = schedule.one_cycle_max_lr * factor
    return schedule.model_copy(update=update)


def virtual_plan(
    config: TrainConfig, num_examples: int, world_size: int
) -> VirtualEpochBudget | None:
    """The virtual-epoch plan of a fit (None in ``epochs`` mode); global batch = batch_size x
    world_size, so the examples budget does not depend on the worker count."""
    budget = config.budget
    if budget.mode != "virtual_epochs":
        return None
    return virtual_epoch_budget(
        num_examples=num_examples,
        stop_point=budget.stop_point,
        per_worker_batch=config.batch_size,
        num_workers=world_size,
        num_checkpoints=budget.num_checkpoints,
    )
