"""The search space as declared: searchers' suggestions respect the types and conditions,
grid is refused where it cannot work, schedulers are what the config names (PBT's own checks
are in test_tune_pbt.py and test_pbt_search.py)."""

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from graft.config import GraftConfig, load_config, validate_config
from graft.errors import ConfigError
from graft.tune.plots import param_importances, plot_search
from graft.tune.progress import search_progress
from graft.tune.search_algorithms import make_scheduler, make_searcher
from graft.tune.space import active_params, param_space, to_tune_space

SPACE: dict[str, Any] = {
    "finetune.optimizer.lr": {"type": "loguniform", "low": 1e-4, "high": 3e-2},
    "finetune.optimizer.name": {"type": "choice", "values": ["sgd", "momentum", "adamw"]},
    "finetune.optimizer.momentum": {
        "type": "uniform",
        "low": 0.5,
        "high": 0.99,
        "when": "finetune.optimizer.name == momentum",
    },
    "finetune.batch_size": {"type": "int", "low": 8, "high": 32},
}


def _config(**tune: Any) -> GraftConfig:
    data = load_config(preset="tiny").model_dump(mode="json")
    data["tune"] = {**data["tune"], **tune}
    return validate_config(data)


def test_optuna_suggestions_respect_types_bounds_and_conditions() -> None:
    config = _config(space=SPACE, searcher="optuna", seed=3)
    searcher = make_searcher(config)
    searcher.set_search_properties(config.tune.metric, config.tune.mode, param_space(config))
    seen_momentum = 0
    for index in range(12):
        suggested = searcher.suggest(f"trial_{index}")
        searcher.on_trial_complete(f"trial_{index}", {"val_accuracy": 0.5 + index / 100})
        assert 1e-4 <= suggested["finetune.optimizer.lr"] <= 3e-2
        assert isinstance(suggested["finetune.batch_size"], int)
        assert 8 <= suggested["finetune.batch_size"] <= 32
        assert suggested["finetune.optimizer.name"] in ("sgd", "momentum", "adamw")
        conditional = "finetune.optimizer.momentum" in suggested
        # define-by-run: the conditional key exists exactly when its condition holds
        assert conditional == (suggested["finetune.optimizer.name"] == "momentum")
        if conditional:
            seen_momentum += 1
            assert 0.5 <= suggested["finetune.optimizer.momentum"] <= 0.99
    assert seen_momentum >= 1


def test_random_searcher_samples_every_key_and_trials_drop_inactive_ones() -> None:
    config = _config(space=SPACE, searcher="random")
    space = to_tune_space(config.tune.space)
    assert set(space) == set(SPACE)
    sampled = {key: domain.sample() for key, domain in space.items()}
    applied = active_params(config.tune.space, sampled)
    assert ("finetune.optimizer.momentum" in applied) == (
        sampled["finetune.optimizer.name"] == "momentum"
    )
    assert applied["finetune.optimizer.lr"] == sampled["finetune.optimizer.lr"]


def test_grid_enumerates_choice_and_int_dimensions() -> None:
    grid_space = {
        "finetune.optimizer.name": {"type": "choice", "values": ["sgd", "adamw"]},
        "finetune.batch_size": {"type": "int", "low": 8, "high": 10},
    }
    config = _config(space=grid_space, searcher="grid")
    space = param_space(config)
    assert space["finetune.optimizer.name"] == {"grid_search": ["sgd", "adamw"]}
    assert space["finetune.batch_size"] == {"grid_search": [8, 9, 10]}


def test_grid_refuses_continuous_dimensions() -> None:
    with pytest.raises(
        ConfigError, match=r"grid needs discrete dimensions.*finetune\.optimizer\.lr"
    ):
        _config(searcher="grid", space=SPACE)


@pytest.mark.parametrize(
    ("when", "fragment"),
    [
        ("finetune.optimizer.name = momentum", "is not a condition"),
        ("finetune.optimizer.lr == 0.1", "not another 'choice' dimension"),
        ("finetune.optimizer.name == rmsprop", "not one of its values"),
    ],
)
def test_bad_conditions_are_refused(when: str, fragment: str) -> None:
    space = {**SPACE, "finetune.optimizer.momentum": {**SPACE["finetune.optimizer.momentum"]}}
    space["finetune.optimizer.momentum"]["when"] = when
    with pytest.raises(ConfigError, match=fragment):
        _config(space=space)


@pytest.mark.parametrize(
    ("scheduler", "expected"),
    [
        ("asha", "AsyncHyperBandScheduler"),
        ("hyperband", "AsyncHyperBandScheduler"),
        ("median", "MedianStoppingRule"),
        ("fifo", "FIFOScheduler"),
    ],
)
def test_scheduler_follows_the_config(scheduler: str, expected: str) -> None:
    config = _config(scheduler=scheduler, grace_period=2, hyperband_brackets=3)
    made = make_scheduler(config, max_epochs=16)
    assert type(made).__name__ == expected
    if scheduler == "hyperband":
        assert len(made._brackets) == 3
    if scheduler == "asha":
        assert len(made._brackets) == 1
        assert made._time_attr == "epoch"


def test_search_plots_and_importances(tmp_path: Path) -> None:
    config = _config(space=SPACE)
    rows = []
    for index in range(8):
        lr = 1e-4 * (2**index)
        rows.append(
            {
                "trial_id": f"abc_{index:05d}",
                "val_accuracy": 0.5 + 0.05 * index,  # driven by lr only
                "fit_complete": float(index % 2),
                "config/finetune.optimizer.lr": lr,
                "config/finetune.optimizer.name": ["sgd", "momentum", "adamw"][index % 3],
                "config/finetune.batch_size": 8 + (index * 5) % 24,
            }
        )
    frame = pd.DataFrame(rows)
    # without the per-epoch reports there is no progress-vs-compute plot
    paths = plot_search(frame, config.tune.space, "val_accuracy", "max", tmp_path)
    names = {Path(p).name for p in paths}
    assert names == {"metric_by_trial.png", "params_vs_metric.png", "param_importance.png"}
    reports = pd.DataFrame({"timestamp": [1, 2], "epoch": [1.0, 2.0], "val_accuracy": [0.5, 0.6]})
    progress = search_progress([reports], "val_accuracy", "max")
    paths = plot_search(frame, config.tune.space, "val_accuracy", "max", tmp_path, progress, 8)
    assert {Path(p).name for p in paths} == names | {"progress_by_trial_epochs.png"}
    assert all(Path(p).stat().st_size > 5_000 for p in paths)
    importances = param_importances(frame, config.tune.space, "val_accuracy", "max")
    assert importances is not None
    assert max(importances, key=importances.__getitem__) == "finetune.optimizer.lr"


def test_importance_needs_three_trials() -> None:
    config = _config(space=SPACE)
    frame = pd.DataFrame(
        [{"trial_id": "a_00000", "val_accuracy": 0.5, "config/finetune.optimizer.lr": 1e-3}]
    )
    assert param_importances(frame, config.tune.space, "val_accuracy", "max") is None


def test_importance_is_skipped_when_every_trial_scored_the_same(tmp_path: Path) -> None:
    """fANOVA raises on a metric without variance ("zero total variance in all trees"): a
    search whose trials all tie (a small validation split) must still end with its plots."""
    config = _config(space=SPACE)
    frame = pd.DataFrame(
        [
            {
                "trial_id": f"a_{index:05d}",
                "val_accuracy": 0.96,
                "config/finetune.optimizer.lr": 10 ** (-4 + index / 3),
            }
            for index in range(5)
        ]
    )
    assert param_importances(frame, config.tune.space, "val_accuracy", "max") is None
    paths = plot_search(frame, config.tune.space, "val_accuracy", "max", tmp_path)
    assert "param_importance.png" not in {Path(p).name for p in paths}


def test_cli_resume_without_session_is_one_clear_error(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "graft.cli", "tune", "--resume", "--output-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "COLUMNS": "200"},
    )
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert "no tuning session" in result.stderr
