"""Population Based Training as configured: which configs it accepts, the scheduler and
mutations it builds from tune.space, how a trial cuts the finetune into segments and takes
over another trial's weights."""

import json
import random
from pathlib import Path
from typing import Any

import pytest
import torch

from graft.config import GraftConfig, PhaseConfig, load_config, validate_config
from graft.errors import ConfigError
from graft.tune.pbt import (
    ClipToSpace,
    SegmentState,
    continued,
    pbt_mutations,
    record_exploit,
    segment_phases,
    start_from_checkpoint,
)
from graft.tune.search_algorithms import make_scheduler

SPACE: dict[str, Any] = {
    "finetune.optimizer.lr": {"type": "loguniform", "low": 1e-4, "high": 3e-2},
    "model.dropout.rate": {"type": "uniform", "low": 0.0, "high": 0.5},
    "finetune.batch_size": {"type": "int", "low": 8, "high": 32},
    "finetune.optimizer.name": {"type": "choice", "values": ["sgd", "momentum", "adamw"]},
}


def _config(**tune: Any) -> GraftConfig:
    data = load_config(preset="tiny").model_dump(mode="json")
    data["tune"] = {
        **data["tune"],
        "scheduler": "pbt",
        "searcher": "random",
        "num_samples": 4,
        "max_concurrent": 4,
        **tune,
    }
    return validate_config(data)


def test_pbt_runs_with_the_random_searcher() -> None:
    config = _config(space=SPACE, pbt={"perturbation_interval": 3, "quantile_fraction": 0.5})
    assert config.tune.scheduler == "pbt"
    assert config.tune.pbt.perturbation_interval == 3
    assert config.tune.pbt.quantile_fraction == 0.5
    assert config.tune.pbt.resample_probability == 0.25


@pytest.mark.parametrize("searcher", ["optuna", "hyperopt", "grid"])
def test_pbt_refuses_other_searchers_and_names_the_fix(searcher: str) -> None:
    space = {"finetune.optimizer.name": SPACE["finetune.optimizer.name"]}
    with pytest.raises(ConfigError, match=rf"searcher={searcher}.*set tune.searcher=random"):
        _config(searcher=searcher, space=space)


def test_pbt_refuses_conditional_keys() -> None:
    space = {
        **SPACE,
        "finetune.optimizer.momentum": {
            "type": "uniform",
            "low": 0.5,
            "high": 0.99,
            "when": "finetune.optimizer.name == momentum",
        },
    }
    with pytest.raises(ConfigError, match=r"conditional tune.space keys.*optimizer\.momentum"):
        _config(space=space)


def test_pbt_refuses_an_interval_that_never_perturbs() -> None:
    # the tiny preset's finetune has 5 + 5 epochs
    with pytest.raises(ConfigError, match=r"perturbation_interval=10 is not below.*10 epochs"):
        _config(pbt={"perturbation_interval": 10})
    assert _config(pbt={"perturbation_interval": 9}).tune.pbt.perturbation_interval == 9


@pytest.mark.parametrize(
    ("settings", "fragment"),
    [
        ({"quantile_fraction": 0.6}, "quantile_fraction"),
        ({"quantile_fraction": 0.0}, "quantile_fraction"),
        ({"resample_probability": 1.5}, "resample_probability"),
        ({"perturbation_interval": 0}, "perturbation_interval"),
    ],
)
def test_pbt_settings_are_bounded(settings: dict[str, float], fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment):
        _config(pbt=settings)


def test_pbt_needs_a_population() -> None:
    with pytest.raises(ConfigError, match="set num_samples >= 2"):
        _config(num_samples=1)


def test_pbt_needs_the_whole_population_at_once() -> None:
    with pytest.raises(ConfigError, match=r"max_concurrent=2 < tune.num_samples=4.*=4"):
        _config(max_concurrent=2)


def test_make_scheduler_builds_pbt_with_the_space_as_mutations() -> None:
    from ray.tune.schedulers import PopulationBasedTraining
    from ray.tune.search.sample import Integer, LogUniform, Uniform

    config = _config(
        space=SPACE,
        pbt={
            "perturbation_interval": 2,
            "quantile_fraction": 0.5,
            "resample_probability": 0.1,
            "synch": True,
        },
    )
    made = make_scheduler(config, max_epochs=10)
    assert isinstance(made, PopulationBasedTraining)
    assert made._time_attr == "epoch"
    assert made._perturbation_interval == 2
    assert made._quantile_fraction == 0.5
    assert made._resample_probability == 0.1
    assert made._synch is True
    mutations = made._hyperparam_mutations
    assert set(mutations) == set(SPACE)
    assert mutations["finetune.optimizer.name"] == ["sgd", "momentum", "adamw"]
    lr = mutations["finetune.optimizer.lr"]
    assert (lr.lower, lr.upper) == (1e-4, 3e-2)
    assert isinstance(lr.sampler, LogUniform)
    assert isinstance(mutations["model.dropout.rate"].sampler, Uniform)
    batch = mutations["finetune.batch_size"]
    assert isinstance(batch, Integer) and (batch.lower, batch.upper) == (8, 33)


def test_explored_values_stay_in_the_space() -> None:
    from ray.tune.schedulers.pbt import _explore

    config = _config(space=SPACE)
    clip = ClipToSpace(config.tune.space)
    at_edges = {
        "finetune.optimizer.lr": 3e-2,
        "model.dropout.rate": 0.5,
        "finetune.batch_size": 8,
        "finetune.optimizer.name": "adamw",
    }
    random.seed(0)
    seen_lrs = set()
    for _ in range(50):
        new, _ops = _explore(at_edges, pbt_mutations(config.tune.space), 0.0, (1.2, 0.8), clip)
        seen_lrs.add(new["finetune.optimizer.lr"])
        assert 1e-4 <= new["finetune.optimizer.lr"] <= 3e-2
        assert 0.0 <= new["model.dropout.rate"] <= 0.5
        assert isinstance(new["finetune.batch_size"], int)
        assert 8 <= new["finetune.batch_size"] <= 32
        assert new["finetune.optimizer.name"] in ("momentum", "adamw")  # a neighbour or itself
    # x1.2 clipped back to the bound, x0.8 scaled: both perturbations happen
    assert sorted(seen_lrs) == [pytest.approx(0.8 * 3e-2), 3e-2]


def test_segments_cut_the_phase_plan() -> None:
    phases = [
        PhaseConfig(trainable="head", epochs=3),
        PhaseConfig(trainable="all", epochs=4, lr_scale=0.1),
    ]
    first, cut = segment_phases(phases, 0, 2)
    assert (first, [(p.trainable, p.epochs) for p in cut]) == (0, [("head", 2)])
    first, cut = segment_phases(phases, 2, 2)  # crosses the phase boundary
    assert (first, [(p.trainable, p.epochs) for p in cut]) == (0, [("head", 1), ("all", 1)])
    assert cut[1].lr_scale == 0.1
    first, cut = segment_phases(phases, 6, 2)  # the plan's last epoch only
    assert (first, [(p.trainable, p.epochs) for p in cut]) == (1, [("all", 1)])
    covered = [sum(p.epochs for p in segment_phases(phases, s, 2)[1]) for s in range(0, 7, 2)]
    assert covered == [2, 2, 2, 1]
    with pytest.raises(ValueError, match="outside"):
        segment_phases(phases, 7, 1)


def test_segment_metrics_continue_the_trial_scale() -> None:
    state = SegmentState(epochs_done=4, trained_by="a", steps=40.0, examples_seen=640.0)
    row = {"epoch": 1.0, "phase": 0.0, "steps": 10.0, "examples_seen": 160.0, "val_loss": 0.3}
    assert continued(row, state, first_phase=1) == {
        "epoch": 5.0,
        "phase": 1.0,
        "steps": 50.0,
        "examples_seen": 800.0,
        "val_loss": 0.3,
    }


def _weights(seed: int) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    return {"head.weight": torch.randn(2, 4), "head.bias": torch.randn(2)}


def test_a_segment_starts_from_the_checkpoint_weights_bit_identical(tmp_path: Path) -> None:
    donor = tmp_path / "donor"
    donor.mkdir()
    torch.save(_weights(1), donor / "model.pt")
    SegmentState(epochs_done=3, trained_by="trial_b", steps=30.0).save(donor)
    init = tmp_path / "init_weights.pt"
    torch.save(_weights(2), init)
    state = start_from_checkpoint(donor, init)
    assert (state.epochs_done, state.trained_by, state.steps) == (3, "trial_b", 30.0)
    loaded = torch.load(init, weights_only=True)
    assert all(torch.equal(loaded[k], v) for k, v in _weights(1).items())


def test_another_architecture_is_refused(tmp_path: Path) -> None:
    donor = tmp_path / "donor"
    donor.mkdir()
    torch.save({"head.weight": torch.zeros(2, 8), "head.bias": torch.zeros(2)}, donor / "model.pt")
    SegmentState(epochs_done=1, trained_by="b").save(donor)
    init = tmp_path / "init_weights.pt"
    torch.save(_weights(2), init)
    with pytest.raises(ConfigError, match=r"another architecture.*head\.weight"):
        start_from_checkpoint(donor, init)
    assert torch.equal(torch.load(init, weights_only=True)["head.bias"], _weights(2)["head.bias"])


def test_an_exploit_is_recorded_once_per_donor_checkpoint(tmp_path: Path) -> None:
    params = {"finetune.optimizer.lr": 0.01}
    record_exploit(tmp_path, "b", 2, params)
    record_exploit(tmp_path, "b", 2, params)  # the same restart, retried
    lineage = record_exploit(tmp_path, "c", 4, params)
    assert [(e["donor"], e["at_epoch"]) for e in lineage] == [("b", 2), ("c", 4)]
    assert json.loads((tmp_path / "pbt_lineage.json").read_text()) == lineage
