"""A finished search ends every trial's MLflow run with how the trial ended: Tune kills a
stopped trial's actor mid-report, so the trial's own code cannot."""

from pathlib import Path
from types import SimpleNamespace

import pandas as pd
from local_tracking import tiny_config_tracked_in

from graft.io import tracking
from graft.tune.runs import (
    OUTCOME_TAG,
    STOP_REASON_TAG,
    TrialOutcome,
    close_trial_runs,
    runs_for_unstarted_trials,
    search_stop_reason,
    trial_outcome,
    trial_run,
    trial_runs,
)
from graft.tune.search import trial_outcomes, trials_frame


def test_each_way_a_trial_ends_has_its_status_and_outcome() -> None:
    last_epoch = {"epoch": 10.0, "fit_complete": 1.0, "stopped_early": 0.0}
    assert trial_outcome(last_epoch, errored=False) == TrialOutcome("FINISHED", "completed")
    patience = {"epoch": 6.0, "fit_complete": 1.0, "stopped_early": 1.0}
    assert trial_outcome(patience, errored=False) == TrialOutcome("FINISHED", "early_stopped")
    cut = {"epoch": 3.0, "fit_complete": 0.0, "stopped_early": 0.0}
    assert trial_outcome(cut, errored=False) == TrialOutcome("FINISHED", "cut")
    assert trial_outcome(cut, errored=True) == TrialOutcome("FAILED", "failed")
    assert trial_outcome({}, errored=False) == TrialOutcome("KILLED", "before_first_epoch")
    assert trial_outcome({}, errored=True) == TrialOutcome("FAILED", "failed")
    # what Tune hands back for a trial that never reported: its id and host, no epoch
    stand_in = {"trial_id": "a1b2c3d4", "hostname": "node-1", "date": "2026-12-05_02-00-00"}
    assert trial_outcome(stand_in, errored=False) == TrialOutcome("KILLED", "before_first_epoch")


def test_the_reason_a_search_stopped_its_waiting_trials() -> None:
    assert (
        search_stop_reason(epoch_budget=15, trial_epochs=15, time_budget_s=None, elapsed_s=5.0)
        == "epoch budget spent"
    )
    assert (
        search_stop_reason(epoch_budget=15, trial_epochs=9, time_budget_s=60.0, elapsed_s=61.0)
        == "time budget spent"
    )
    assert (
        search_stop_reason(epoch_budget=None, trial_epochs=9, time_budget_s=60.0, elapsed_s=20.0)
        == "the search ended"
    )


def test_a_trial_that_never_reported_is_found_by_its_folder_name() -> None:
    reported = SimpleNamespace(
        metrics={"trial_id": "a1b2c3d4", "epoch": 10.0, "fit_complete": 1.0},
        error=None,
        path="/w/ray/tune/exp/run_trial_a1b2c3d4_1_lr=0.0100_2026-12-05_02-00-00",
    )
    crashed = SimpleNamespace(
        metrics={},
        error=RuntimeError("worker start-up timed out"),
        path="/w/ray/tune/exp/run_trial_e5f6a7b8_2_lr=0.0010_2026-12-05_02-00-01",
    )
    outcomes = trial_outcomes([reported, crashed], ["a1b2c3d4", "e5f6a7b8", "0000"])
    assert outcomes == {
        "a1b2c3d4": TrialOutcome("FINISHED", "completed"),
        "e5f6a7b8": TrialOutcome("FAILED", "failed"),
    }


def test_the_trials_table_has_a_row_for_a_trial_that_never_reported() -> None:
    reported = SimpleNamespace(
        metrics={"trial_id": "a1", "epoch": 3.0, "fit_complete": 0.0},
        error=None,
        path="/w/run_trial_a1_1",
    )
    # Tune's stand-in for a trial that never reported: its id, no config
    unstarted = SimpleNamespace(metrics={"trial_id": "b2"}, error=None, path="/w/x")
    tune_table = pd.DataFrame(
        [{"trial_id": "a1", "epoch": 3.0, "config/finetune.optimizer.lr": 0.01}]
    )
    configs = {"a1": {"finetune.optimizer.lr": 0.01}, "b2": {"finetune.optimizer.lr": 0.5}}
    outcomes = trial_outcomes([reported, unstarted], [])
    frame = trials_frame(tune_table, configs, outcomes)
    assert frame["trial_id"].tolist() == ["a1", "b2"]
    assert frame["outcome"].tolist() == ["cut", "before_first_epoch"]
    assert frame["config/finetune.optimizer.lr"].tolist() == [0.01, 0.5]


def test_every_trial_has_a_run_ended_with_its_outcome_also_one_that_never_started(
    tmp_path: Path,
) -> None:
    config = tiny_config_tracked_in(tmp_path)
    parent = tracking.start_pipeline_run(config, "test")
    stage = tracking.create_child_run(
        config.resolved_tracking_uri(), tracking.experiment_id(config), parent, "tune", {}
    )
    started = trial_run(config, stage, "exp", "a1")  # the trial's own code made its run
    runs = runs_for_unstarted_trials(
        config,
        stage,
        "exp",
        trial_runs(config, stage),
        {"a1": {"finetune.optimizer.lr": 0.01}, "b2": {"finetune.optimizer.lr": 0.5}},
    )
    assert runs["a1"] == started and set(runs) == {"a1", "b2"}
    assert runs == trial_runs(config, stage)  # found again as the search finds its trials
    outcomes = {"a1": TrialOutcome("FINISHED", "cut"), "b2": trial_outcome({}, errored=False)}
    close_trial_runs(config, runs, outcomes, "epoch budget spent")
    client = tracking.client_for(config)
    unstarted = client.get_run(runs["b2"])
    assert unstarted.info.status == "KILLED"
    assert unstarted.data.tags[OUTCOME_TAG] == "before_first_epoch"
    assert unstarted.data.tags[STOP_REASON_TAG] == "epoch budget spent"
    assert unstarted.data.params == {"finetune.optimizer.lr": "0.5"}  # what the searcher chose
    cut = client.get_run(runs["a1"])
    assert (cut.info.status, cut.data.tags[OUTCOME_TAG]) == ("FINISHED", "cut")
    assert STOP_REASON_TAG not in cut.data.tags
