"""Learning-rate schedules of the book (power, exponential, piecewise, performance, 1cycle).

Every schedule is a thin wrapper over a torch scheduler, configured so the numbers are the
book's and not torch's defaults:

* power, exponential, piecewise and constant are a ``LambdaLR`` multiplier on each parameter
  group's LR, so groups with their own LR (finetuning) keep their ratio;
* plateau is ``ReduceLROnPlateau`` with ``patience = plateau_patience - 1`` and
  ``threshold = 0``: torch reduces once the bad-epoch count EXCEEDS its patience, Keras (and
  the book) once it REACHES it, so "5 epochs without improvement" means 5 here;
* one_cycle is ``OneCycleLR`` in the book's shape (linear, three phases, start = max/10, final
  = start/1000, momentum 0.95 -> 0.85 -> 0.95) instead of torch's (cosine, two phases, div 25).

The training loop calls ``after_batch()`` after every optimizer step and
``after_epoch(val_loss)`` after every validation; the schedule decides which of the two moves
it. ``t`` counts steps or epochs (``granularity``) since the schedule was built, so the LR used
for epoch/step 0 is the optimizer's LR times the schedule's factor at 0.

``state_dict()`` holds the scheduler's counters and the current LR/momentum of every group,
which is what a resumed run needs to continue the exact LR sequence: build a fresh optimizer and
schedule from the same config, then load both states (in either order).
"""

from __future__ import annotations

import bisect
import logging
import math
from collections.abc import Callable
from typing import Any, Literal

import torch
from torch.optim.lr_scheduler import LambdaLR, LRScheduler, OneCycleLR, ReduceLROnPlateau

from graft.config import ScheduleConfig
from graft.errors import ConfigError, TrainingError

logger = logging.getLogger(__name__)

Unit = Literal["step", "epoch"]

# The book's 1cycle (Smith 2018, [NB3] OneCycleScheduler) spends the last ~10% of the iterations
# on the final drop; the rest is split evenly between the rise and the fall, so the peak sits
# at 45% of the run and the fall back to the start LR ends at 90%.
_ONE_CYCLE_PCT_START = 0.45
# Below this many steps the three 1cycle phases are less than a step or two long each.
_ONE_CYCLE_MIN_STEPS = 10


def _factor_fn(cfg: ScheduleConfig, base_lr: float) -> Callable[[int], float]:
    """The multiplier on the initial LR at t (steps or epochs) for the LambdaLR schedules."""
    s, c = cfg.decay_steps, cfg.power
    if cfg.name == "constant":
        return lambda t: 1.0
    if cfg.name == "power":
        return lambda t: 1.0 / (1.0 + t / s) ** c
    if cfg.name == "exponential":
        return lambda t: 0.1 ** (t / s)
    if cfg.name == "piecewise":
        _check_piecewise(cfg)
        boundaries = list(cfg.boundaries)
        factors = [v / base_lr for v in cfg.values]
        # The book's rule: t < boundaries[0] -> values[0], boundaries[0] <= t < boundaries[1]
        # -> values[1], ... (Keras' PiecewiseConstantDecay switches one step later, at t > b).
        return lambda t: factors[bisect.bisect_right(boundaries, t)]
    raise ConfigError(f"schedule '{cfg.name}' is not a multiplier schedule")


def _check_piecewise(cfg: ScheduleConfig) -> None:
    if len(cfg.values) != len(cfg.boundaries) + 1:
        raise ConfigError(
            f"schedule.values needs one more entry than schedule.boundaries (got "
            f"{len(cfg.values)} values for {len(cfg.boundaries)} boundaries); e.g. boundaries "
            "[5, 15] with values [0.01, 0.005, 0.001]"
        )
    if any(v <= 0 for v in cfg.values):
        raise ConfigError(f"schedule.values must all be > 0, got {cfg.values}")
    if any(b <= 0 for b in cfg.boundaries) or any(
        b1 >= b2 for b1, b2 in zip(cfg.boundaries, cfg.boundaries[1:], strict=False)
    ):
        raise ConfigError(
            f"schedule.boundaries must be positive and strictly increasing, got {cfg.boundaries}"
        )


def _momentum_kind(optimizer: torch.optim.Optimizer) -> Literal["betas", "momentum"] | None:
    """Which knob 1cycle may cycle: Adam's beta1, SGD's momentum, or none.

    Plain SGD and RMSProp carry a ``momentum`` of 0; cycling it would silently turn them into
    momentum optimizers, so only a momentum that is already on is cycled.
    """
    if "betas" in optimizer.defaults:
        return "betas"
    if float(optimizer.defaults.get("momentum", 0.0)) > 0.0:
        return "momentum"
    return None


class LRSchedule:
    """One configured LR schedule bound to one optimizer; see the module docstring.

    Build it with :func:`build_schedule`. The optimizer's groups must already hold the LRs the
    schedule starts from (``base_lr`` is the LR of a group without its own).
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        cfg: ScheduleConfig,
        base_lr: float,
        steps_per_epoch: int,
        total_epochs: int,
    ) -> None:
        self.optimizer = optimizer
        self.name = cfg.name
        self.total_steps = steps_per_epoch * total_epochs
        self._momentum_kind: Literal["betas", "momentum"] | None = None
        self.scheduler: LRScheduler
        self.unit: Unit
        if cfg.name == "plateau":
            self.unit = "epoch"  # it needs a validation loss, which exists once per epoch
            self.scheduler = ReduceLROnPlateau(
                optimizer,
                mode="min",
                factor=cfg.plateau_factor,
                patience=cfg.plateau_patience - 1,
                threshold=0.0,
                threshold_mode="rel",
                cooldown=0,
                min_lr=0.0,
                eps=0.0,
            )
        elif cfg.name == "one_cycle":
            self.unit = "step"  # the cycle is defined over iterations
            self._momentum_kind = _momentum_kind(optimizer)
            self.scheduler = self._one_cycle(optimizer, cfg, base_lr)
        else:
            self.unit = cfg.granularity
            self.scheduler = LambdaLR(optimizer, _factor_fn(cfg, base_lr))

    def _one_cycle(
        self, optimizer: torch.optim.Optimizer, cfg: ScheduleConfig, base_lr: float
    ) -> OneCycleLR:
        if self.total_steps < _ONE_CYCLE_MIN_STEPS:
            logger.warning(
                "1cycle over only %d steps: its three phases collapse to a step or two each",
                self.total_steps,
            )
        max_lr = cfg.one_cycle_max_lr if cfg.one_cycle_max_lr is not None else base_lr
        if max_lr <= 0:
            raise ConfigError(f"schedule.one_cycle_max_lr must be > 0, got {max_lr}")
        # A group with its own LR (finetuning) gets a proportionally scaled cycle.
        max_lrs = [max_lr * group["lr"] / base_lr for group in optimizer.param_groups]
        high, low = cfg.one_cycle_momentum
        return OneCycleLR(
            optimizer,
            max_lr=max_lrs,
            total_steps=self.total_steps,
            pct_start=_ONE_CYCLE_PCT_START,
            anneal_strategy="linear",
            three_phase=True,
            div_factor=cfg.one_cycle_start_div,
            final_div_factor=cfg.one_cycle_final_div,
            cycle_momentum=self._momentum_kind is not None,
            base_momentum=low,
            max_momentum=high,
        )

    # -- driving ------------------------------------------------------------------------
    def after_batch(self) -> None:
        """Advance a per-step schedule; call after every ``optimizer.step()``."""
        if self.unit != "step" or isinstance(self.scheduler, ReduceLROnPlateau):
            return
        if isinstance(self.scheduler, OneCycleLR) and self.scheduler.last_epoch >= (
            self.total_steps - 1
        ):
            # Past the planned cycle (an uneven last shard, an extra batch) hold the final LR:
            # torch would extrapolate below zero, then raise.
            return
        self.scheduler.step()

    def after_epoch(self, val_loss: float | None = None) -> None:
        """Advance a per-epoch schedule; ``val_loss`` is required by the plateau schedule."""
        if isinstance(self.scheduler, ReduceLROnPlateau):
            if val_loss is None:
                raise TrainingError(
                    "the plateau schedule needs the epoch's validation loss; pass val_loss to "
                    "after_epoch() or choose another schedule.name"
                )
            self.scheduler.step(val_loss)
        elif self.unit == "epoch":
            self.scheduler.step()

    # -- reading ------------------------------------------------------------------------
    def current_lr(self) -> float:
        """The LR the next optimizer step will use (of the first group: the one to log)."""
        return float(self.optimizer.param_groups[0]["lr"])

    def current_lrs(self) -> list[float]:
        """The next step's LR of every parameter group."""
        return [float(group["lr"]) for group in self.optimizer.param_groups]

    def current_momentum(self) -> float | None:
        """The first group's momentum (SGD) or beta1 (Adam family); None if it has neither."""
        return _group_momentum(self.optimizer.param_groups[0])

    # -- checkpointing ------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Counters plus each group's schedule-owned values: what a resume needs to continue."""
        return {
            "name": self.name,
            "unit": self.unit,
            "scheduler": self.scheduler.state_dict(),
            "groups": [_schedule_values(group) for group in self.optimizer.param_groups],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a :meth:`state_dict`, writing LR, momentum and cycle bounds into the groups.

        Writing them back makes the order of ``optimizer.load_state_dict`` and this call
        irrelevant: building a scheduler resets the groups' LR to the schedule's start value.
        """
        if state.get("name") != self.name or state.get("unit") != self.unit:
            raise ConfigError(
                f"the checkpoint's schedule is {state.get('name')}/{state.get('unit')} but the "
                f"config says {self.name}/{self.unit}; resume with the config the run started with"
            )
        groups = self.optimizer.param_groups
        if len(state["groups"]) != len(groups):
            raise ConfigError(
                f"the checkpoint's schedule covers {len(state['groups'])} parameter groups, the "
                f"optimizer has {len(groups)}; resume with the same model and trainable layers"
            )
        self.scheduler.load_state_dict(state["scheduler"])
        for group, values in zip(groups, state["groups"], strict=True):
            values = dict(values)
            momentum = values.pop("momentum", None)
            group.update(values)
            if momentum is not None:
                if "betas" in group:
                    group["betas"] = (momentum, *group["betas"][1:])
                elif "momentum" in group:
                    group["momentum"] = momentum


# Group entries a schedule writes: the LR, LambdaLR's start LR and OneCycleLR's cycle bounds.
_SCHEDULE_GROUP_KEYS = ("lr", "initial_lr", "max_lr", "min_lr", "max_momentum", "base_momentum")


def _group_momentum(group: dict[str, Any]) -> float | None:
    if "betas" in group:
        return float(group["betas"][0])
    if "momentum" in group:
        return float(group["momentum"])
    return None


def _schedule_values(group: dict[str, Any]) -> dict[str, Any]:
    values = {key: group[key] for key in _SCHEDULE_GROUP_KEYS if key in group}
    values["momentum"] = _group_momentum(group)
    return values


def build_schedule(
    optimizer: torch.optim.Optimizer,
    cfg: ScheduleConfig,
    base_lr: float,
    steps_per_epoch: int,
    total_epochs: int,
) -> LRSchedule:
    """Bind the configured schedule to ``optimizer`` (built with default LR ``base_lr``).

    ``steps_per_epoch`` and ``total_epochs`` size the 1cycle (which always runs per batch over
    ``steps_per_epoch * total_epochs`` steps); the other schedules only need them for validation.
    """
    if not math.isfinite(base_lr) or base_lr <= 0:
        raise ConfigError(f"base_lr must be a finite value > 0, got {base_lr}")
    if steps_per_epoch < 1 or total_epochs < 1:
        raise ConfigError(
            f"a schedule needs at least one step per epoch and one epoch (got steps_per_epoch="
            f"{steps_per_epoch}, total_epochs={total_epochs}); use a batch size no larger than "
            "the training set"
        )
    return LRSchedule(optimizer, cfg, base_lr, steps_per_epoch, total_epochs)
