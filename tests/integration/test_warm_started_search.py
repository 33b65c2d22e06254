"""A tune stage warm-started from the champion's search on a real local Ray: the searcher's
first trials are the champion search's best trials, fitted to the space as it is now."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from champion_search import LoggedTrial, log_champion_search
from graft import stages
from graft.config import load_config
from graft.data.prepare import prepare_dataset
from graft.io import tracking
from graft.io.ray_runtime import shutdown_ray
from graft.tune.warm_start import SEEDS_TAG, WARM_START_TAG

pytestmark = [pytest.mark.ray, pytest.mark.timeout(300)]

LR = "finetune.optimizer.lr"
DROPOUT = "model.dropout.rate"


def test_the_first_trials_are_the_champions_best_trials_clipped_to_the_new_space(
    tmp_path: Path, untrained_model_dir: Callable[..., Path]
) -> None:
    config = load_config(
        preset="tiny",
        overrides=[
            f"work_dir={tmp_path / 'work'}",
            f"tracking.tracking_uri=sqlite:///{tmp_path / 'mlflow.db'}",
            "export.model_name=graft-warm-start",
            "tune.lr_finder.enabled=false",
            "tune.num_samples=2",  # the 2 seeds are its 2 trials
            "tune.max_concurrent=1",  # one trial at a time: the trials start in their order
            "tune.scheduler=fifo",
            "tune.warm_start_top_k=2",
            'finetune.phases=[{"trainable": "head", "epochs": 1}]',
            'tune.space={"finetune.optimizer.lr": {"type": "loguniform", "low": 0.001, "high":'
            ' 0.01}, "model.dropout.rate": {"type": "uniform", "low": 0.0, "high": 0.3}}',
        ],
    )
    # the champion's search also searched the batch size, and LRs up to 0.1
    log_champion_search(
        config,
        [
            LoggedTrial({LR: "0.05", "finetune.batch_size": "32"}, [0.9]),  # LR clipped
            LoggedTrial({LR: "0.0005", "finetune.batch_size": "8"}, [0.2]),  # not in the top 2
            LoggedTrial({LR: "0.004", "finetune.batch_size": "16"}, [0.7]),
        ],
    )
    dataset = tmp_path / "dataset"
    prepare_dataset(config.data, config.seed, dataset)
    pretrained = untrained_model_dir(config, dataset, tmp_path / "pretrained")
    parent = tracking.start_pipeline_run(config, "warm")
    try:
        output = stages.tune.run(config, str(dataset), str(pretrained), "", str(tmp_path), parent)
    finally:
        shutdown_ray()
    assert output.trials == 2  # the seeds take the place of samples
    # one trial at a time: each trial's run starts after the one before it ended
    params = [run.params for run in tracking.child_runs(config, output.run_id)]
    assert [float(p[LR]) for p in params] == [0.01, 0.004]
    # the searcher filled the key the seeds lack, inside its bounds
    assert all(0.0 <= float(p[DROPOUT]) <= 0.3 for p in params)
    assert all("finetune.batch_size" not in p for p in params)
    tags = tracking.client_for(config).get_run(output.run_id).data.tags
    assert tags[WARM_START_TAG] == "seeded" and tags[SEEDS_TAG] == "2"
