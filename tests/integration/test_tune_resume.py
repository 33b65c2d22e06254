"""A tuning process killed after its first finished trial resumes with `graft tune --resume`:
the finished trial is not run again, the others complete, and MLflow holds one nested run per
trial under one tune stage run, the best one tagged. A search under tune.epoch_budget spends
only what the killed process left of its budget."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

import pytest
from killed_search import (
    KilledSearch,
    kill_after_first_finished_trial,
    resume_killed_search,
    search_inputs,
    tune_stage_runs,
)

from graft.config import GraftConfig, load_config
from graft.io import tracking
from graft.train.model_dir import MODEL_FILE
from graft.tune.runs import BEST_TAG, TRIAL_TAG

pytestmark = [pytest.mark.ray, pytest.mark.timeout(400)]

NUM_SAMPLES = 3
PHASES = '[{"trainable": "head", "epochs": 3}, {"trainable": "all", "epochs": 3, "lr_scale": 0.1}]'


def _killed_fifo_search(
    tmp_path: Path, untrained_model_dir: Callable[..., Path], *overrides: str
) -> tuple[GraftConfig, Path, KilledSearch]:
    """A random FIFO search of one trial at a time on the tiny preset, killed after its first
    finished trial: its config, output folder and what the kill left."""
    settings = [
        f"work_dir={tmp_path / 'work'}",
        "tune.max_concurrent=1",
        "tune.searcher=random",
        "tune.scheduler=fifo",
        f"finetune.phases={PHASES}",
        *overrides,
    ]
    config = load_config(preset="tiny", overrides=settings)
    dataset, pretrained = search_inputs(config, tmp_path, untrained_model_dir)
    out = tmp_path / "tune"
    return config, out, kill_after_first_finished_trial(config, settings, dataset, pretrained, out)


def test_killed_search_resumes_without_rerunning_finished_trials(
    tmp_path: Path, untrained_model_dir: Callable[..., Path]
) -> None:
    config, out, killed = _killed_fifo_search(
        tmp_path, untrained_model_dir, f"tune.num_samples={NUM_SAMPLES}"
    )
    finished, experiment, session = killed.finished, killed.experiment, killed.session
    assert len(finished) < NUM_SAMPLES, "the search ended before it could be interrupted"
    trials_dir = config.work_path / "tune-trials" / experiment
    finished_models = {t: (trials_dir / t / "model" / MODEL_FILE).stat().st_mtime for t in finished}

    printed = resume_killed_search(out)

    # the live progress counts what the killed process did, then goes on from there
    adopted = re.search(r"tune: resumed; before the interruption: (\d+) trials ended", printed)
    assert adopted is not None, printed[-3000:]
    assert int(adopted.group(1)) >= len(finished)
    assert f"{NUM_SAMPLES} trials ended, 0 running" in printed

    # every trial ran, the finished one was not run again
    trial_ids = {p.name for p in trials_dir.iterdir() if p.is_dir()}
    assert len(trial_ids) == NUM_SAMPLES
    assert finished <= trial_ids
    for trial_id, mtime in finished_models.items():
        assert (trials_dir / trial_id / "model" / MODEL_FILE).stat().st_mtime == mtime

    # MLflow: one tune stage run for the experiment, one child run per trial
    client = tracking.client_for(config)
    experiment_id = tracking.experiment_id(config)
    stage_runs = tune_stage_runs(config, experiment)
    assert len(stage_runs) == 1
    assert stage_runs[0].data.tags[tracking.PARENT_TAG] == session.parent_run_id
    assert stage_runs[0].info.status == "FINISHED"
    children = client.search_runs(
        [experiment_id],
        filter_string=f"tags.`{tracking.PARENT_TAG}` = '{stage_runs[0].info.run_id}'",
    )
    assert len(children) == NUM_SAMPLES
    assert {c.data.tags[TRIAL_TAG] for c in children} == trial_ids
    assert all(c.info.status == "FINISHED" for c in children)
    assert [c.data.tags.get(BEST_TAG) for c in children].count("true") == 1

    # outputs: the table covers every trial, the plots exist
    table = (out / "trials.csv").read_text().strip().splitlines()
    assert len(table) == 1 + NUM_SAMPLES
    assert (out / "metric_by_trial.png").stat().st_size > 5_000
    assert (out / "params_vs_metric.png").stat().st_size > 5_000
    assert (out / "best_model" / MODEL_FILE).exists()


def _trial_epochs(trials_root: Path) -> dict[str, int]:
    """Each trial's furthest epoch, from the reports Tune wrote for it (both processes')."""
    spent: dict[str, int] = {}
    for results in trials_root.glob("run_trial*/result.json"):
        epochs = [json.loads(line)["epoch"] for line in results.read_text().splitlines() if line]
        if epochs:
            spent[results.parent.name] = int(max(epochs))
    return spent


@pytest.mark.slow
def test_a_resumed_search_spends_only_what_is_left_of_its_epoch_budget(
    tmp_path: Path, untrained_model_dir: Callable[..., Path]
) -> None:
    budget, epochs_per_trial = 15, 6  # two and a half trials
    config, out, killed = _killed_fifo_search(
        tmp_path,
        untrained_model_dir,
        "tune.num_samples=6",
        f"tune.epoch_budget={budget}",
        # no patience-based stop: a trial that the budget does not cut trains all its epochs
        "finetune.early_stopping.enabled=false",
    )
    experiment_dir = config.work_path / "ray" / "tune" / killed.experiment
    before = _trial_epochs(experiment_dir)
    assert sum(before.values()) < budget, "the budget ran out before the kill"

    printed = resume_killed_search(out)

    spent = _trial_epochs(experiment_dir)
    # the resumed process's progress starts from the killed one's trial-epochs
    adopted = re.search(r"before the interruption: .*?(\d+) trial-epochs", printed)
    assert adopted is not None, printed[-3000:]
    assert int(adopted.group(1)) >= sum(before.values())
    last_line = [line for line in printed.splitlines() if line.startswith("tune: trial")][-1]
    assert f"{sum(spent.values())} trial-epochs" in last_line
    # a resumed search that forgot the first process's epochs would train 15 more: 3+ trials
    # after the kill and more than 21 epochs in all
    assert budget <= sum(spent.values()) <= budget + 2
    assert len(spent) == 3
    *full, cut = sorted(spent.values(), reverse=True)
    assert full == [epochs_per_trial, epochs_per_trial]
    assert cut < epochs_per_trial  # the budget ended the third trial
