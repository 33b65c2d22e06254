"""Ray Tune over real Ray Train trials: ASHA cuts trials, the best one is handed on."""

from pathlib import Path

import pytest

from graft.config import load_config
from graft.data.prepare import prepare_dataset
from graft.ray_cluster import ensure_ray, shutdown_ray
from graft.train.fit import fit
from graft.train.requests import pretrain_request
from graft.tune.search import run_search

pytestmark = [pytest.mark.ray, pytest.mark.timeout(600)]


def test_optuna_asha_search_stops_some_trials_early(tmp_path: Path) -> None:
    config = load_config(
        preset="tiny",
        overrides=[
            f"work_dir={tmp_path}",
            "tune.num_samples=4",
            "tune.reduction_factor=2",
            "pretrain.epochs=2",
        ],
    )
    dataset = tmp_path / "dataset"
    prepare_dataset(config.data, config.seed, dataset)
    ensure_ray(config.ray)
    try:
        pre = fit(
            pretrain_request(config, str(dataset), None),
            num_workers=2,
            storage_path=tmp_path / "ray",
            run_name="pre",
            output_dir=tmp_path / "pre",
            max_failures=0,
            num_to_keep=1,
        )
        from graft import tracking

        parent = tracking.start_pipeline_run(config, "test")
        result = run_search(
            config, str(dataset), pre.model_dir, tmp_path / "tune", parent, "asha-test"
        )
    finally:
        shutdown_ray()
    max_epochs = sum(p.epochs for p in config.finetune.phases)
    assert result.num_trials == 4
    # ASHA's cuts vary run to run: at least one trial cut, never all of them
    assert 1 <= result.num_stopped_early <= 3
    assert result.total_epochs < 4 * max_epochs
    assert 0.0 < result.best_metric <= 1.0
    assert set(result.best_params) == set(config.tune.space)
    low = config.tune.space["finetune.optimizer.lr"].low
    high = config.tune.space["finetune.optimizer.lr"].high
    assert low <= result.best_params["finetune.optimizer.lr"] <= high
    assert (Path(result.best_checkpoint_dir) / "model.pt").exists()
