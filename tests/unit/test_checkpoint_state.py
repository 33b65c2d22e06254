"""A checkpoint's training state is read back with tensors and plain values only: what a
resumed fit needs survives the trip, and a checkpoint whose pickle would run code is refused
before it runs (issue 18: no code from data)."""

from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from graft.config import OptimizerConfig, ScheduleConfig
from graft.errors import TrainingError
from graft.train.loop_state import LoopState, set_rng_state, training_state
from graft.train.model_dir import STATE_FILE, load_training_state
from graft.train.optimizers import build_optimizer
from graft.train.schedules import build_schedule


def _draws(generator: torch.Generator) -> tuple[object, ...]:
    return (
        random.random(),
        float(np.random.normal()),  # also exercises numpy's cached Gaussian
        float(np.random.rand()),
        float(torch.rand(1)),
        float(torch.rand(1, generator=generator)),
    )


@pytest.mark.parametrize("schedule", ["one_cycle", "plateau", "exponential"])
def test_the_training_state_round_trips_through_a_weights_only_load(
    tmp_path: Path, schedule: str
) -> None:
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3))
    optimizer = build_optimizer(list(model.parameters()), OptimizerConfig(name="adamw"), 0.01)
    lr_schedule = build_schedule(optimizer, ScheduleConfig(name=schedule), 0.01, 5, 3)
    model(torch.randn(8, 4)).sum().backward()
    optimizer.step()
    generator = torch.Generator().manual_seed(3)
    random.seed(1)
    np.random.seed(2)
    np.random.normal()  # leaves a cached Gaussian in numpy's state
    state = LoopState(
        phase_index=1,
        global_epoch=4,
        best_metric=0.25,
        best_state={k: v.clone() for k, v in model.state_dict().items()},
        history=[{"epoch": 1.0, "val_loss": 0.5}],
        pass_rng=generator.get_state(),
    )
    payload = training_state(
        model, optimizer, lr_schedule.state_dict(), state, generator, '{"spec": 1}'
    )
    torch.save(payload, tmp_path / STATE_FILE)
    expected = _draws(generator)

    saved = load_training_state(tmp_path)
    random.seed(99)
    np.random.seed(99)
    torch.manual_seed(99)
    generator.manual_seed(99)
    set_rng_state(saved["rng"], generator)
    assert _draws(generator) == expected
    assert LoopState(**saved["loop"]).history == state.history
    assert saved["spec_json"] == '{"spec": 1}'
    for key, tensor in model.state_dict().items():
        assert torch.equal(saved["model"][key], tensor)
    restored = build_optimizer(list(model.parameters()), OptimizerConfig(name="adamw"), 0.01)
    restored.load_state_dict(saved["optimizer"])
    assert restored.state_dict()["state"].keys() == optimizer.state_dict()["state"].keys()


class _WritesAMarker:
    """What an attacker would put in a checkpoint: unpickling it runs a command."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, ...]:
        return (os.system, (f"touch {self.marker}",))


def test_a_checkpoint_whose_pickle_would_run_code_is_refused(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    torch.save({"model": {}, "loop": _WritesAMarker(marker)}, tmp_path / STATE_FILE)
    with pytest.raises(TrainingError) as caught:
        load_training_state(tmp_path)
    assert not marker.exists()
    message = str(caught.value)
    assert f"refusing to resume from {tmp_path / STATE_FILE}" in message
    assert "system" in message  # the global it would have called
    assert "Delete the checkpoint" in message
