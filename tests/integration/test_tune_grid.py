"""Grid search with a conditional key under the median stopping rule, on real Ray trials:
every grid point runs once, a trial applies a conditional key only when its condition holds,
and each trial is a nested MLflow run with exactly the parameters it applied."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from search_helpers import search_on_own_ray
from test_tune_resume import PHASES

from graft.config import load_config
from graft.io import tracking

# slow: a third Ray Tune run in the suite; `make test-all` runs it
pytestmark = [pytest.mark.ray, pytest.mark.slow, pytest.mark.timeout(300)]

SPACE = (
    'tune.space={"finetune.optimizer.name": {"type": "choice", "values": ["sgd", "momentum"]},'
    ' "finetune.optimizer.momentum": {"type": "choice", "values": [0.5, 0.9],'
    ' "when": "finetune.optimizer.name == momentum"}}'
)


def test_grid_runs_each_point_once_and_applies_conditions(
    tmp_path: Path, untrained_model_dir: Callable[..., Path]
) -> None:
    config = load_config(
        preset="tiny",
        overrides=[
            f"work_dir={tmp_path / 'work'}",
            "tune.searcher=grid",
            "tune.scheduler=median",
            "tune.median_min_samples=2",
            "tune.max_concurrent=2",
            f"finetune.phases={PHASES}",
            SPACE,
        ],
    )
    result, _, stage = search_on_own_ray(config, tmp_path, untrained_model_dir, "grid-test")
    # 2 names x 2 momenta; num_samples (3 in the tiny preset) does not repeat the grid
    assert result.num_trials == 4
    assert 0 <= result.num_stopped_early <= 3
    children = tracking.client_for(config).search_runs(
        [tracking.experiment_id(config)],
        filter_string=f"tags.`{tracking.PARENT_TAG}` = '{stage}'",
    )
    assert len(children) == 4
    applied = [c.data.params for c in children]
    for params in applied:
        if params["finetune.optimizer.name"] == "sgd":
            assert "finetune.optimizer.momentum" not in params
        else:
            assert params["finetune.optimizer.momentum"] in ("0.5", "0.9")
    momenta = {p.get("finetune.optimizer.momentum") for p in applied}
    assert momenta == {None, "0.5", "0.9"}
    assert "finetune.optimizer.name" in result.best_params
    if result.best_params["finetune.optimizer.name"] == "sgd":
        assert "finetune.optimizer.momentum" not in result.best_params
    # the search hands over which trial won (the tune stage tags its run)
    assert result.best_trial_id
    assert {Path(p).name for p in result.plots} >= {"metric_by_trial.png", "params_vs_metric.png"}
