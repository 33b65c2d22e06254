"""LR schedules: the book's numbers, Keras' plateau semantics, the book's 1cycle, exact resume."""

from __future__ import annotations

import io
import warnings
from collections.abc import Callable
from typing import Any

import pytest
import torch
from pydantic import ValidationError
from torch import nn

from graft.config import OptimizerConfig, ScheduleConfig
from graft.errors import ConfigError, TrainingError
from graft.train.optimizers import build_optimizer
from graft.train.schedules import LRSchedule, build_schedule

warnings.filterwarnings("ignore", message="Detected call of `lr_scheduler.step\\(\\)`")


def make(
    cfg: ScheduleConfig,
    base_lr: float = 0.01,
    steps_per_epoch: int = 10,
    total_epochs: int = 10,
    optimizer: str = "momentum",
) -> tuple[torch.optim.Optimizer, LRSchedule]:
    param = nn.Parameter(torch.zeros(2))
    opt = build_optimizer([param], OptimizerConfig(name=optimizer), lr=base_lr)  # type: ignore[arg-type]
    return opt, build_schedule(opt, cfg, base_lr, steps_per_epoch, total_epochs)


def lrs_per_step(schedule: LRSchedule, steps: int) -> list[float]:
    out = []
    for _ in range(steps):
        out.append(schedule.current_lr())
        schedule.optimizer.step()
        schedule.after_batch()
    return out


def lrs_per_epoch(schedule: LRSchedule, epochs: int) -> list[float]:
    out = []
    for _ in range(epochs):
        out.append(schedule.current_lr())
        schedule.optimizer.step()
        schedule.after_epoch(val_loss=1.0)
    return out


def test_power_halves_at_s_and_thirds_at_2s() -> None:
    s = 1000
    cfg = ScheduleConfig(name="power", granularity="step", decay_steps=s, power=1.0)
    lrs = lrs_per_step(make(cfg)[1], 4 * s + 1)
    for k, expected in enumerate([0.01, 0.005, 0.01 / 3, 0.0025, 0.002]):
        assert lrs[k * s] == pytest.approx(expected, rel=1e-9)


def test_exponential_is_ten_times_smaller_every_s_epochs() -> None:
    cfg = ScheduleConfig(name="exponential", granularity="epoch", decay_steps=20)
    lrs = lrs_per_epoch(make(cfg)[1], 41)
    assert lrs[0] == pytest.approx(0.01, rel=1e-12)
    assert lrs[19] == pytest.approx(0.0011220185, rel=1e-7)
    assert lrs[20] == pytest.approx(0.001, rel=1e-9)
    assert lrs[40] == pytest.approx(1e-4, rel=1e-9)
    assert lrs[1] / lrs[0] == pytest.approx(0.8912509381, rel=1e-9)


def test_epoch_granularity_holds_the_lr_within_an_epoch_and_step_changes_it_every_batch() -> None:
    per_epoch = make(ScheduleConfig(name="exponential", granularity="epoch", decay_steps=2))[1]
    assert len(set(lrs_per_step(per_epoch, 10))) == 1
    per_step = make(ScheduleConfig(name="exponential", granularity="step", decay_steps=2))[1]
    assert len(set(lrs_per_step(per_step, 10))) == 10


def test_piecewise_switches_at_the_boundaries() -> None:
    cfg = ScheduleConfig(name="piecewise", boundaries=[5, 15], values=[0.01, 0.005, 0.001])
    lrs = lrs_per_epoch(make(cfg, base_lr=0.01)[1], 20)
    expected = [0.01] * 5 + [0.005] * 10 + [0.001] * 5
    assert lrs == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize(
    ("boundaries", "values"),
    [([5, 15], [0.01, 0.005]), ([15, 5], [0.01, 0.005, 0.001]), ([5], [0.01, 0.0])],
)
def test_piecewise_rejects_inconsistent_tables(boundaries: list[int], values: list[float]) -> None:
    with pytest.raises(ValidationError, match="schedule"):  # at config load
        ScheduleConfig(name="piecewise", boundaries=boundaries, values=values)
    cfg = ScheduleConfig.model_construct(name="piecewise", boundaries=boundaries, values=values)
    with pytest.raises(ConfigError, match="schedule"):  # and for an unvalidated config
        make(cfg)


def test_plateau_reduces_after_exactly_patience_epochs_without_improvement() -> None:
    cfg = ScheduleConfig(name="plateau", plateau_patience=5, plateau_factor=0.5)
    _, schedule = make(cfg, base_lr=0.01)
    losses = [1.0, 0.9, 0.95, 0.95, 0.95, 0.95, 0.95]
    seen = []
    for loss in losses:
        schedule.optimizer.step()
        schedule.after_epoch(loss)
        seen.append(schedule.current_lr())
    # Epochs 3..7 do not improve on 0.9; the 5th of them (the 7th epoch) halves the LR.
    # torch's own patience=5 would only halve after a 6th.
    assert seen == [0.01] * 6 + [0.005]


def test_plateau_needs_a_validation_loss() -> None:
    _, schedule = make(ScheduleConfig(name="plateau"))
    with pytest.raises(TrainingError, match="val_loss"):
        schedule.after_epoch(None)


@pytest.mark.parametrize("optimizer", ["momentum", "adam"])
def test_one_cycle_has_the_books_shape(optimizer: str) -> None:
    cfg = ScheduleConfig(name="one_cycle", one_cycle_max_lr=0.1)
    _, schedule = make(cfg, base_lr=0.01, steps_per_epoch=100, total_epochs=10, optimizer=optimizer)
    lrs, momenta = [], []
    for _ in range(1000):
        lrs.append(schedule.current_lr())
        momenta.append(schedule.current_momentum())
        schedule.optimizer.step()
        schedule.after_batch()
    high, low = cfg.one_cycle_momentum
    assert lrs[0] == pytest.approx(0.1 / cfg.one_cycle_start_div, rel=1e-9)
    peak = max(range(1000), key=lrs.__getitem__)
    assert peak == 449 and lrs[peak] == pytest.approx(0.1, rel=1e-9)
    assert lrs[898] == pytest.approx(0.01, rel=1e-9)
    final = 0.1 / cfg.one_cycle_start_div / cfg.one_cycle_final_div
    assert lrs[999] == pytest.approx(final, rel=1e-9)
    for a, b in [(0, 449), (449, 898), (898, 999)]:
        diffs = [y - x for x, y in zip(lrs[a:b], lrs[a + 1 : b + 1], strict=True)]
        assert all(d > 0 for d in diffs) or all(d < 0 for d in diffs)  # linear, monotone
    assert momenta[0] == pytest.approx(high) and momenta[449] == pytest.approx(low)
    assert momenta[898] == pytest.approx(high) and momenta[999] == pytest.approx(high)
    # Past the planned total the final LR holds (torch would go negative, then raise).
    lrs_past = lrs_per_step(schedule, 5)
    assert lrs_past == pytest.approx([lrs_per_step(schedule, 1)[0]] * 5) and lrs_past[0] > 0


def test_one_cycle_does_not_give_plain_sgd_momentum() -> None:
    _, schedule = make(ScheduleConfig(name="one_cycle"), optimizer="sgd")
    lrs_per_step(schedule, 30)
    assert schedule.current_momentum() == 0.0


def test_multiplier_schedules_keep_group_lr_ratios() -> None:
    head, backbone = nn.Parameter(torch.zeros(2)), nn.Parameter(torch.zeros(2))
    groups: list[dict[str, Any]] = [{"params": [head]}, {"params": [backbone], "lr": 0.001}]
    opt = build_optimizer(groups, OptimizerConfig(name="momentum"), lr=0.01)
    cfg = ScheduleConfig(name="exponential", granularity="step", decay_steps=10)
    schedule = build_schedule(opt, cfg, 0.01, steps_per_epoch=10, total_epochs=1)
    lrs_per_step(schedule, 10)
    assert schedule.current_lrs() == pytest.approx([0.001, 0.0001], rel=1e-12)


# -- resume ---------------------------------------------------------------------------------

STEPS_PER_EPOCH, EPOCHS = 5, 4
VAL_LOSSES = [1.0, 1.1, 1.2, 1.3]  # never improves after epoch 1: plateau(patience 2) cuts


RESUME_CASES: dict[str, tuple[ScheduleConfig, str]] = {
    "power_step": (ScheduleConfig(name="power", granularity="step", decay_steps=3), "momentum"),
    "exponential_epoch": (ScheduleConfig(name="exponential", decay_steps=2), "nag"),
    "piecewise_step": (
        ScheduleConfig(
            name="piecewise", granularity="step", boundaries=[4, 9], values=[0.1, 0.05, 0.01]
        ),
        "rmsprop",
    ),
    "plateau": (ScheduleConfig(name="plateau", plateau_patience=2), "adam"),
    "one_cycle_adam": (ScheduleConfig(name="one_cycle", one_cycle_max_lr=0.5), "adam"),
    "one_cycle_momentum": (ScheduleConfig(name="one_cycle"), "momentum"),
}


def _fresh(
    cfg: ScheduleConfig, optimizer: str, optimizer_state: dict | None = None
) -> tuple[nn.Linear, LRSchedule]:
    """A new model, optimizer and schedule; ``optimizer_state`` is loaded before the schedule
    is built (the other order is exercised by loading it afterwards)."""
    torch.manual_seed(0)
    model = nn.Linear(3, 1)
    opt = build_optimizer(model.parameters(), OptimizerConfig(name=optimizer), lr=0.1)  # type: ignore[arg-type]
    if optimizer_state is not None:
        opt.load_state_dict(optimizer_state)
    return model, build_schedule(opt, cfg, 0.1, STEPS_PER_EPOCH, EPOCHS)


def _train(
    model: nn.Linear, schedule: LRSchedule, steps: range, record: Callable[[], None]
) -> None:
    x = torch.linspace(-1, 1, 12).reshape(4, 3)
    for step in steps:
        record()
        schedule.optimizer.zero_grad()
        model(x).square().mean().backward()
        schedule.optimizer.step()
        schedule.after_batch()
        if (step + 1) % STEPS_PER_EPOCH == 0:
            schedule.after_epoch(VAL_LOSSES[step // STEPS_PER_EPOCH])


@pytest.mark.parametrize("optimizer_state_first", [False, True])
@pytest.mark.parametrize("case", list(RESUME_CASES))
def test_resumed_run_continues_the_identical_lr_sequence(
    case: str, optimizer_state_first: bool
) -> None:
    cfg, optimizer = RESUME_CASES[case]
    total = STEPS_PER_EPOCH * EPOCHS

    def recorder(model: nn.Linear, schedule: LRSchedule, into: list) -> Callable[[], None]:
        return lambda: into.append((schedule.current_lr(), schedule.current_momentum()))

    model, schedule = _fresh(cfg, optimizer)
    uninterrupted: list = []
    _train(model, schedule, range(total), recorder(model, schedule, uninterrupted))
    final_weights = model.weight.detach().clone()

    model, schedule = _fresh(cfg, optimizer)
    resumed: list = []
    _train(model, schedule, range(7), recorder(model, schedule, resumed))
    buffer = io.BytesIO()
    torch.save(
        {
            "model": model.state_dict(),
            "optimizer": schedule.optimizer.state_dict(),
            "schedule": schedule.state_dict(),
        },
        buffer,
    )
    buffer.seek(0)
    checkpoint = torch.load(buffer, weights_only=True)

    if optimizer_state_first:
        model, schedule = _fresh(cfg, optimizer, optimizer_state=checkpoint["optimizer"])
        schedule.load_state_dict(checkpoint["schedule"])
    else:
        model, schedule = _fresh(cfg, optimizer)
        schedule.load_state_dict(checkpoint["schedule"])
        schedule.optimizer.load_state_dict(checkpoint["optimizer"])
    model.load_state_dict(checkpoint["model"])
    _train(model, schedule, range(7, total), recorder(model, schedule, resumed))

    assert resumed == uninterrupted
    assert len({lr for lr, _ in uninterrupted}) > 1  # the schedule did change the LR
    assert torch.equal(model.weight.detach(), final_weights)


def test_loading_another_schedules_state_is_refused() -> None:
    _, power = make(ScheduleConfig(name="power"))
    _, plateau = make(ScheduleConfig(name="plateau"))
    with pytest.raises(ConfigError, match="resume with the config"):
        plateau.load_state_dict(power.state_dict())
