"""A finished search ends every trial's MLflow run with how the trial ended: Tune kills a
stopped trial's actor mid-report, so the trial's own code cannot."""

from types import SimpleNamespace

from graft.tune.runs import TrialOutcome, trial_outcome
from graft.tune.search import trial_outcomes


def test_each_way_a_trial_ends_has_its_status_and_outcome() -> None:
    last_epoch = {"epoch": 10.0, "fit_complete": 1.0, "stopped_early": 0.0}
    assert trial_outcome(last_epoch, errored=False) == TrialOutcome("FINISHED", "completed")
    patience = {"epoch": 6.0, "fit_complete": 1.0, "stopped_early": 1.0}
    assert trial_outcome(patience, errored=False) == TrialOutcome("FINISHED", "early_stopped")
    cut = {"epoch": 3.0, "fit_complete": 0.0, "stopped_early": 0.0}
    assert trial_outcome(cut, errored=False) == TrialOutcome("FINISHED", "cut")
    assert trial_outcome(cut, errored=True) == TrialOutcome("FAILED", "failed")
    assert trial_outcome({}, errored=False) == TrialOutcome("KILLED", "no_result")
    assert trial_outcome({}, errored=True) == TrialOutcome("FAILED", "failed")


def test_a_trial_that_never_reported_is_found_by_its_folder_name() -> None:
    reported = SimpleNamespace(
        metrics={"trial_id": "a1b2c3d4", "fit_complete": 1.0},
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
