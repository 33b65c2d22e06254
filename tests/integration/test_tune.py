"""Ray Tune over real trials (in their trainables, or Ray Train fits): ASHA cuts trials, a
time budget ends the search, the best trial is handed on."""

import json
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NoReturn

import pandas as pd
import pytest
import ray
from ray import cloudpickle
from ray.tune.stopper import timeout as timeout_stopper

from graft.config import GraftConfig, load_config
from graft.data.prepare import prepare_dataset
from graft.errors import TrainingError
from graft.io import tracking
from graft.io.ray_runtime import TrainStorage, ensure_ray, shutdown_ray
from graft.train.fit import fit
from graft.train.request import FitRun
from graft.train.stage_requests import pretrain_request
from graft.tune import search
from graft.tune import trial as tune_trial
from graft.tune.runs import OUTCOME_TAG, STOP_REASON_TAG, trial_runs
from graft.tune.search import run_search

pytestmark = [pytest.mark.ray, pytest.mark.timeout(600)]

# the trial functions defined here run in Ray's workers, which cannot import a test module:
# ship them by value
cloudpickle.register_pickle_by_value(sys.modules[__name__])


def _config(work: Path, *overrides: str) -> GraftConfig:
    return load_config(
        preset="tiny",
        overrides=[
            f"work_dir={work}",
            "pretrain.epochs=2",
            "tune.lr_finder.enabled=false",
            *overrides,
        ],
    )


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """One dataset, one pretrained backbone and one local Ray for the module's searches."""
    root = tmp_path_factory.mktemp("tune")
    config = _config(root)
    dataset = root / "dataset"
    prepare_dataset(config.data, config.seed, dataset)
    ensure_ray(config.ray)
    try:
        pre = fit(
            pretrain_request(config, str(dataset), None),
            FitRun(
                num_workers=2,
                storage=TrainStorage(str((root / "ray").resolve())),
                run_name="pre",
                output_dir=root / "pre",
                max_failures=0,
                num_to_keep=1,
            ),
        )
        yield str(dataset), pre.model_dir
    finally:
        shutdown_ray()


def _cpus_freed_within(seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if ray.available_resources().get("CPU", 0.0) >= ray.cluster_resources()["CPU"] - 1e-6:
            return True
        time.sleep(1)
    return False


def test_optuna_asha_search_stops_some_trials_early(
    pretrained: tuple[str, str], tmp_path: Path
) -> None:
    dataset, pretrained_dir = pretrained
    config = _config(
        tmp_path,
        "tune.num_samples=4",
        "tune.grace_period=1",
        "tune.reduction_factor=2",
        # each trial is a 2-worker DDP fit; two such trials side by side fill the 2 CPUs
        "tune.workers_per_trial=2",
        "finetune.resources.cpus=0.5",
    )
    parent = tracking.start_pipeline_run(config, "test")
    result = run_search(config, dataset, pretrained_dir, tmp_path / "tune", parent, "asha-test")
    max_epochs = sum(p.epochs for p in config.finetune.phases)
    assert result.num_trials == 4
    # ASHA's cuts vary run to run: at least one trial cut, never all of them
    assert 1 <= result.num_stopped_early <= 3
    frame = pd.read_csv(result.trials_table)
    # every optimizer step took a global batch of 2 workers x finetune.batch_size
    assert (frame["examples_seen"] / frame["steps"] == 2 * config.finetune.batch_size).all()
    # each trial's MLflow run is ended with how it ended, though ASHA killed some mid-report
    client = tracking.client_for(config)
    runs = {t: client.get_run(r) for t, r in trial_runs(config, parent).items()}
    assert set(runs) == set(frame["trial_id"])
    assert {run.info.status for run in runs.values()} == {"FINISHED"}
    outcomes = [runs[t].data.tags[OUTCOME_TAG] for t in frame["trial_id"]]
    assert outcomes == frame["outcome"].tolist()
    assert outcomes.count("cut") == result.num_stopped_early
    assert result.total_epochs < 4 * max_epochs
    assert 0.0 < result.best_metric <= 1.0
    assert set(result.best_params) == set(config.tune.space)
    low = config.tune.space["finetune.optimizer.lr"].low
    high = config.tune.space["finetune.optimizer.lr"].high
    assert low <= result.best_params["finetune.optimizer.lr"] <= high
    assert (Path(result.best_checkpoint_dir) / "model.pt").exists()


def _first_to_arrive(marker: Path) -> bool:
    """Whether this trial is the first to get here: which trial starts first is up to Ray,
    so a test's trials take their roles by order of arrival (an exclusive create of
    ``marker``)."""
    try:
        os.close(os.open(marker, os.O_CREAT | os.O_EXCL))
    except FileExistsError:
        return False
    return True


def _start_then_block(
    params: dict[str, Any], search: tune_trial.SearchInputs, held: Path | None = None
) -> NoReturn:
    """A trial that makes its MLflow run, as run_trial does before its fit, then waits to be
    stopped: one whose workers are slow to start, held for as long as the test needs. It
    makes the file ``held`` once it waits."""
    trial = tune_trial.start_trial(params, search)
    trial.logger.params(trial.applied)
    if held is not None:
        held.touch()
    while True:  # until the search stops this trial
        time.sleep(0.5)


class _ClockFromACompleteFit:
    """Stands in for the ``time`` module of Tune's time-budget stopper: still until Tune has
    recorded a trial's last epoch (its ``fit_complete`` report, in the trial's result.json
    under ``experiment_dir``), then the seconds since. The budget then counts from a point the
    test chooses, not from however long this machine's load makes worker start-up take. A
    trial that fails instead starts the clock after ``give_up_s``: the test then fails on its
    assertions, not on its timeout."""

    def __init__(self, experiment_dir: Path, give_up_s: float = 300.0) -> None:
        self.experiment_dir = experiment_dir
        self.give_up_at = time.time() + give_up_s
        self.origin: float | None = None

    def _a_fit_completed(self) -> bool:
        for results in self.experiment_dir.glob("*/result.json"):
            for line in results.read_text().splitlines():
                try:
                    if json.loads(line).get("fit_complete"):
                        return True
                except json.JSONDecodeError:  # a line still being written
                    pass
        return False

    def time(self) -> float:
        if self.origin is None:
            if time.time() < self.give_up_at and not self._a_fit_completed():
                return 1.0  # Tune's stopper treats a last check of 0 as none
            self.origin = time.time() - 1.0
        return time.time() - self.origin


def test_time_budget_ends_a_hyperband_search_before_its_trials_run_out(
    pretrained: tuple[str, str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The first trial trains all its epochs; every later one is held as if its workers were
    still starting, so only the budget can end the search. The budget's clock starts once Tune
    recorded the first trial's last epoch: forced, not raced against worker start-up."""
    dataset, pretrained_dir = pretrained
    budget = 15.0
    config = _config(
        tmp_path,
        "tune.num_samples=100",
        "tune.searcher=random",
        "tune.scheduler=hyperband",
        "tune.hyperband_brackets=2",
        f"tune.time_budget_s={budget}",
        "finetune.early_stopping.enabled=false",  # the first trial trains all its epochs
    )
    clock = _ClockFromACompleteFit(tmp_path / "ray" / "tune" / "budget")
    monkeypatch.setattr(timeout_stopper, "time", clock)
    first = tmp_path / "first"

    def first_trains_later_ones_held(
        params: dict[str, Any], search: tune_trial.SearchInputs
    ) -> None:
        if not _first_to_arrive(first):
            _start_then_block(params, search)
        tune_trial.run_trial(params, search)

    parent = tracking.start_pipeline_run(config, "test")
    result = search.run_search(
        config,
        dataset,
        pretrained_dir,
        tmp_path / "tune",
        parent,
        "budget",
        trial_function=first_trains_later_ones_held,
    )
    assert clock.origin is not None
    after_training = time.time() - clock.origin
    # the budget, not the 100 samples, ended the search, and soon after it ran out
    assert budget <= after_training < budget + 60
    # max_concurrent=2: the held trial, then one more in the trained trial's place
    assert result.num_trials == 3
    assert result.num_before_first_epoch == 2
    frame = pd.read_csv(result.trials_table)
    assert sorted(frame["outcome"]) == ["before_first_epoch", "before_first_epoch", "completed"]
    # the one trial that reported is handed on
    assert result.best_trial_id == frame.loc[frame["outcome"] == "completed", "trial_id"].item()
    assert (Path(result.best_checkpoint_dir) / "model.pt").exists()
    shown = [line for line in capsys.readouterr().err.splitlines() if line.startswith("tune: ")]
    assert len(shown) == 3
    assert sum("stopped before its first epoch: time budget spent" in s for s in shown) == 2
    client = tracking.client_for(config)
    runs = [client.get_run(r) for r in trial_runs(config, parent).values()]
    held = [run for run in runs if run.data.tags[OUTCOME_TAG] == "before_first_epoch"]
    assert {run.data.tags[STOP_REASON_TAG] for run in held} == {"time budget spent"}
    assert _cpus_freed_within(30.0), ray.available_resources()


def test_a_time_budget_spent_before_any_first_epoch_fails_the_search_and_says_raise_it(
    pretrained: tuple[str, str], tmp_path: Path
) -> None:
    dataset, pretrained_dir = pretrained
    config = _config(
        tmp_path,
        "tune.num_samples=10",
        "tune.searcher=random",
        "tune.time_budget_s=10",
    )
    parent = tracking.start_pipeline_run(config, "test")
    with pytest.raises(TrainingError, match=r"tune\.time_budget_s=10 may end the search before"):
        search.run_search(
            config,
            dataset,
            pretrained_dir,
            tmp_path / "tune",
            parent,
            "spent",
            trial_function=_start_then_block,
        )
    # nothing lost: each trial that started has its row and its run, ended with the reason
    frame = pd.read_csv(tmp_path / "tune" / "trials.csv")
    assert len(frame) >= 2
    assert set(frame["outcome"]) == {"before_first_epoch"}
    client = tracking.client_for(config)
    runs = {t: client.get_run(r) for t, r in trial_runs(config, parent).items()}
    assert set(runs) == set(frame["trial_id"])
    assert {run.info.status for run in runs.values()} == {"KILLED"}
    assert {run.data.tags[STOP_REASON_TAG] for run in runs.values()} == {"time budget spent"}
    assert _cpus_freed_within(30.0), ray.available_resources()


def test_epoch_budget_ends_the_search_once_its_trials_trained_that_many_epochs(
    pretrained: tuple[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dataset, pretrained_dir = pretrained
    config = _config(
        tmp_path,
        "tune.num_samples=8",
        "tune.searcher=random",
        "tune.scheduler=fifo",  # nothing but the budget cuts a trial
        "tune.max_concurrent=2",
        "tune.epoch_budget=15",
    )
    max_epochs = sum(p.epochs for p in config.finetune.phases)
    assert max_epochs == 10  # the budget is a trial and a half
    parent = tracking.start_pipeline_run(config, "test")
    result = run_search(config, dataset, pretrained_dir, tmp_path / "tune", parent, "epochs")
    # spent the budget, overshooting by at most the epochs running trials were in
    assert 15 <= result.total_epochs < 15 + max_epochs
    assert 2 <= result.num_trials < 8
    assert result.num_stopped_early >= 1  # the budget cut a trial short
    # outside a terminal the search showed one line per trial as it ended, cut ones included
    shown = [line for line in capsys.readouterr().err.splitlines() if line.startswith("tune: ")]
    assert len(shown) == result.num_trials
    assert any(" cut at epoch " in line for line in shown)
    assert all(" trial-epochs; best val_accuracy " in line for line in shown)
    assert (Path(result.best_checkpoint_dir) / "model.pt").exists()
    # the trials the budget stopped gave their workers' CPUs back: a next search in this Ray
    # (a cluster's next pipeline run) can start its trials
    assert _cpus_freed_within(30.0), ray.available_resources()
    # the best metric against the trial-epochs spent, drawn from every epoch report
    progress_plot = tmp_path / "tune" / "progress_by_trial_epochs.png"
    assert str(progress_plot) in result.plots
    assert progress_plot.stat().st_size > 5_000


def test_trials_stopped_before_their_first_epoch_are_shown_counted_and_recorded(
    pretrained: tuple[str, str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The epoch budget runs out while one trial is still starting and another is still
    waiting for its actor: forced, not raced. The first trial to start trains; the second
    blocks after making its MLflow run (as one whose workers are slow to start); the third
    cannot start: each trial's actor here asks for 35% of the CPUs, the training worker 25%."""
    cpus = ray.cluster_resources()["CPU"]
    dataset, pretrained_dir = pretrained
    config = _config(
        tmp_path,
        "tune.num_samples=3",
        "tune.searcher=random",
        "tune.scheduler=fifo",
        "tune.max_concurrent=3",
        "tune.epoch_budget=2",
        # a trial's actor that waits on its Train worker (TRIAL_CPU, below)
        "tune.trial_runner=ray_train",
        f"finetune.resources.cpus={0.25 * cpus}",  # fits beside two actors, not a third
    )
    monkeypatch.setattr(search, "TRIAL_CPU", 0.35 * cpus)  # what the search asks per actor
    gate = tmp_path / "gate"
    gate.mkdir()

    def first_trains_second_blocks(params: dict[str, Any], search: tune_trial.SearchInputs) -> None:
        if not _first_to_arrive(gate / "trains"):
            _start_then_block(params, search, held=gate / "blocked")
        deadline = time.monotonic() + 120
        while not (gate / "blocked").exists():  # the budget must not run out before
            if time.monotonic() > deadline:
                raise TimeoutError("the second trial never started")
            time.sleep(0.2)
        tune_trial.run_trial(params, search)

    parent = tracking.start_pipeline_run(config, "test")
    result = search.run_search(
        config,
        dataset,
        pretrained_dir,
        tmp_path / "tune",
        parent,
        "held",
        trial_function=first_trains_second_blocks,
    )
    assert result.num_trials == 3
    assert result.num_before_first_epoch == 2
    assert 2 <= result.total_epochs < 10
    shown = [line for line in capsys.readouterr().err.splitlines() if line.startswith("tune: ")]
    assert len(shown) == 3
    before = [
        line for line in shown if "stopped before its first epoch: epoch budget spent" in line
    ]
    assert len(before) == 2
    assert "3 trials ended (2 before their first epoch)" in shown[-1]
    frame = pd.read_csv(result.trials_table)
    assert sorted(frame["outcome"]) == ["before_first_epoch", "before_first_epoch", "cut"]
    client = tracking.client_for(config)
    runs = {t: client.get_run(r) for t, r in trial_runs(config, parent).items()}
    assert set(runs) == set(frame["trial_id"])  # the trial that never started has its run too
    stopped = [run for run in runs.values() if run.data.tags[OUTCOME_TAG] == "before_first_epoch"]
    assert {run.info.status for run in stopped} == {"KILLED"}
    assert {run.data.tags[STOP_REASON_TAG] for run in stopped} == {"epoch budget spent"}
    assert all("finetune.optimizer.lr" in run.data.params for run in runs.values())
    assert _cpus_freed_within(30.0), ray.available_resources()
