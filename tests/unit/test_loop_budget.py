"""The loop's budget arithmetic without Ray: virtual-epoch plan, cycling loader, LR scaling."""

from __future__ import annotations

import copy

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from graft.config import FinetuneConfig, PhaseConfig, ScheduleConfig, TrainConfig
from graft.errors import ConfigError, TrainingError
from graft.train.budget import lr_scale_factor, scaled_schedule, virtual_plan, worker_lr
from graft.train.loop_state import LoopState, cycling_batches
from graft.train.request import phases_for


def _virtual(**budget: object) -> TrainConfig:
    return TrainConfig.model_validate(
        {"batch_size": 100, "budget": {"mode": "virtual_epochs", **budget}}
    )


def test_virtual_plan_is_the_book_arithmetic_and_invariant_to_workers() -> None:
    config = _virtual(stop_point=14.3, num_checkpoints=15)
    one = virtual_plan(config, 1_000_000, 1)
    assert one is not None
    assert (one.steps_per_virtual_epoch, one.total_steps, one.examples_seen) == (
        9_533,
        142_995,
        14_299_500,
    )
    # the global batch doubles with the workers: half the steps, the same examples
    two = virtual_plan(_virtual(stop_point=14.3, num_checkpoints=15), 1_000_000, 2)
    assert two is not None and two.global_batch == 200
    assert two.steps_per_virtual_epoch == 4_766
    assert virtual_plan(TrainConfig(), 1_000_000, 2) is None  # epochs mode


def test_phases_count_virtual_epochs() -> None:
    assert phases_for(_virtual(num_checkpoints=7)) == [PhaseConfig(trainable="all", epochs=7)]
    assert phases_for(TrainConfig(epochs=3)) == [PhaseConfig(trainable="all", epochs=3)]
    finetune = FinetuneConfig.model_validate(
        {
            "budget": {"mode": "virtual_epochs", "num_checkpoints": 4},
            "phases": [{"trainable": "head", "epochs": 1}, {"trainable": "all", "epochs": 3}],
        }
    )
    assert [p.epochs for p in phases_for(finetune)] == [1, 3]
    finetune.budget.num_checkpoints = 5
    with pytest.raises(ConfigError, match=r"sum to 4 but finetune\.budget\.num_checkpoints is 5"):
        phases_for(finetune)


def test_linear_lr_scaling_multiplies_by_the_worker_count() -> None:
    config = TrainConfig.model_validate(
        {"batch_size": 32, "optimizer": {"lr": 0.01}, "scale_lr_with_workers": True}
    )
    assert lr_scale_factor(config, 4) == 4.0
    assert worker_lr(config, 4) == pytest.approx(0.04, rel=1e-15)
    assert worker_lr(config, 1) == 0.01
    assert worker_lr(TrainConfig.model_validate({"optimizer": {"lr": 0.01}}), 4) == 0.01
    schedule = ScheduleConfig(name="piecewise", boundaries=[5], values=[0.01, 0.001])
    assert scaled_schedule(schedule, 4.0).values == pytest.approx([0.04, 0.004])
    cycle = ScheduleConfig(name="one_cycle", one_cycle_max_lr=0.1)
    assert scaled_schedule(cycle, 2.0).one_cycle_max_lr == pytest.approx(0.2)
    assert scaled_schedule(cycle, 1.0) is cycle


def _loader(generator: torch.Generator) -> DataLoader[tuple[torch.Tensor, ...]]:
    data = TensorDataset(torch.arange(10.0), torch.arange(10))
    return DataLoader(data, batch_size=3, shuffle=True, generator=generator, drop_last=True)


def _take(iterator: object, n: int) -> list[list[int]]:
    return [next(iterator)[1].tolist() for _ in range(n)]  # type: ignore[call-overload]


def test_cycling_loader_passes_on_and_a_restored_state_replays_the_same_batches() -> None:
    generator = torch.Generator().manual_seed(0)
    state = LoopState()
    batches = cycling_batches(_loader(generator), state, generator)
    first = _take(batches, 4)  # 3 batches a pass (drop_last): the 4th starts pass 1
    assert state.data_pass == 1 and state.batch_in_pass == 1
    first_pass = [label for batch in first[:3] for label in batch]
    assert len(set(first_pass)) == 9  # 3 full batches of 10 examples: no repeat in a pass
    saved_state, saved_rng = copy.deepcopy(state), generator.get_state()
    rest = _take(batches, 5)

    generator2 = torch.Generator()
    generator2.set_state(saved_rng)
    resumed = cycling_batches(_loader(generator2), saved_state, generator2)
    assert _take(resumed, 5) == rest
    assert generator2.get_state().equal(generator.get_state())


def test_cycling_loader_refuses_an_empty_loader() -> None:
    generator = torch.Generator().manual_seed(0)
    data = TensorDataset(torch.arange(2.0), torch.arange(2))
    loader = DataLoader(data, batch_size=3, drop_last=True)
    with pytest.raises(TrainingError, match="yields no batch"):
        next(cycling_batches(loader, LoopState(), generator))
