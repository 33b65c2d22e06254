"""The MLflow side of a tuning experiment: one tune stage run per Tune experiment, one nested
child run per trial, both found again by tag when an interrupted experiment resumes, so a
resumed search keeps writing into the same runs instead of leaving orphans behind."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any, NamedTuple

from graft.config import GraftConfig
from graft.io import tracking

EXPERIMENT_TAG = "graft.tune_experiment"
TRIAL_TAG = "graft.trial_id"
BEST_TAG = "graft.best_trial"
TUNE_DISABLED_TAG = "graft.tune"  # "disabled" on the tune stage run of tune.enabled=false
# completed, early_stopped, cut, failed or BEFORE_FIRST_EPOCH
OUTCOME_TAG = "graft.trial_outcome"
STOP_REASON_TAG = "graft.trial_stop_reason"  # why a trial ended before its first epoch
BEFORE_FIRST_EPOCH = "before_first_epoch"
# Every report a trial makes carries its epoch. Tune's stand-in result for a trial that never
# reported (its id, host and time) does not, so this key tells the two apart.
REPORT_KEY = "epoch"


class TrialOutcome(NamedTuple):
    """How a trial ended, as the finished search saw it: its MLflow run status and why."""

    status: str  # MLflow's: FINISHED, FAILED or KILLED
    outcome: str


def trial_outcome(last_result: Mapping[str, Any], errored: bool) -> TrialOutcome:
    """A trial's outcome from its last report to Tune.

    A trial's own run cannot say this: Tune stops a trial (a scheduler's cut, a budget, PBT's
    last epoch) by killing its actor mid-report, so the trial's code never learns it ended.
    Like Ray's own MLflow callback, a trial that was stopped on purpose is FINISHED; the
    outcome tag tells a scheduler's cut from a completed fit. A trial the search stopped before
    its first report (a budget spent while its workers started, or before its actor could
    start) is KILLED: it has no result to finish with."""
    if errored:
        return TrialOutcome("FAILED", "failed")
    if not has_report(last_result):
        return TrialOutcome("KILLED", BEFORE_FIRST_EPOCH)
    if last_result.get("stopped_early"):
        return TrialOutcome("FINISHED", "early_stopped")  # the finetune recipe's patience
    if last_result.get("fit_complete"):
        return TrialOutcome("FINISHED", "completed")
    return TrialOutcome("FINISHED", "cut")  # by the scheduler, the epoch or the time budget


def has_report(last_result: Mapping[str, Any]) -> bool:
    """Whether a trial's last result is a report of its own, not Tune's stand-in."""
    return REPORT_KEY in last_result


def search_stop_reason(
    *,
    epoch_budget: int | None,
    trial_epochs: int,
    time_budget_s: float | None,
    elapsed_s: float,
) -> str:
    """Why a search stopped the trials still running or waiting when it ended, in the words
    its progress lines and the trials' runs use."""
    if epoch_budget is not None and trial_epochs >= epoch_budget:
        return "epoch budget spent"
    if time_budget_s is not None and elapsed_s >= time_budget_s:
        return "time budget spent"
    return "the search ended"


def _find_run(config: GraftConfig, filter_string: str) -> str | None:
    client = tracking.client_for(config)
    found = client.search_runs(
        [tracking.experiment_id(config)], filter_string=filter_string, max_results=1
    )
    return str(found[0].info.run_id) if found else None


@contextmanager
def tune_stage_run(config: GraftConfig, parent_run_id: str, experiment_name: str) -> Iterator[str]:
    """The tune stage's run under ``parent_run_id``: the existing one of this Tune experiment
    when it is resumed (a retry, ``graft tune --resume``), else a new one."""
    client = tracking.client_for(config)
    run_id = _find_run(
        config,
        f"tags.`{tracking.PARENT_TAG}` = '{parent_run_id}' "
        f"and tags.`{EXPERIMENT_TAG}` = '{experiment_name}'",
    )
    if run_id is None:
        run = client.create_run(
            tracking.experiment_id(config),
            run_name="tune",
            tags={
                tracking.PARENT_TAG: parent_run_id,
                "graft.stage": "tune",
                "graft.kind": "stage",
                EXPERIMENT_TAG: experiment_name,
            },
        )
        run_id = str(run.info.run_id)
    else:
        client.update_run(run_id, status="RUNNING")
    with tracking.terminated_when_done(client, run_id) as active:
        yield active


def trial_run(config: GraftConfig, tune_run_id: str, experiment_name: str, trial_id: str) -> str:
    """The nested run of one trial; a trial restarted after an interruption gets its old run
    back (its per-epoch metrics continue where the restored Train checkpoint continues)."""
    existing = _find_run(
        config,
        f"tags.`{TRIAL_TAG}` = '{trial_id}' and tags.`{EXPERIMENT_TAG}` = '{experiment_name}'",
    )
    if existing is not None:
        tracking.client_for(config).update_run(existing, status="RUNNING")
        return existing
    return tracking.create_child_run(
        config.resolved_tracking_uri(),
        tracking.experiment_id(config),
        tune_run_id,
        name=f"trial-{trial_id}",
        tags={"graft.stage": "tune-trial", TRIAL_TAG: trial_id, EXPERIMENT_TAG: experiment_name},
    )


def trial_runs(config: GraftConfig, tune_run_id: str) -> dict[str, str]:
    """Trial id -> run id of every trial run nested under the tune stage run."""
    client = tracking.client_for(config)
    runs = client.search_runs(
        [tracking.experiment_id(config)],
        filter_string=f"tags.`{tracking.PARENT_TAG}` = '{tune_run_id}'",
        max_results=10_000,
    )
    return {
        str(run.data.tags[TRIAL_TAG]): str(run.info.run_id)
        for run in runs
        if TRIAL_TAG in run.data.tags
    }


def tag_best_trial(config: GraftConfig, tune_run_id: str, best_trial_id: str) -> str | None:
    """Tag the best trial's run ``graft.best_trial=true`` (and only it); its run id."""
    client = tracking.client_for(config)
    best = None
    for trial_id, run_id in trial_runs(config, tune_run_id).items():
        if trial_id == best_trial_id:
            client.set_tag(run_id, BEST_TAG, "true")
            best = run_id
        else:
            client.set_tag(run_id, BEST_TAG, "false")
    return best


def runs_for_unstarted_trials(
    config: GraftConfig,
    tune_run_id: str,
    experiment_name: str,
    runs: Mapping[str, str],
    params_by_trial: Mapping[str, Mapping[str, Any]],
) -> dict[str, str]:
    """``runs`` (trial id -> run id) with a run for every trial in ``params_by_trial`` that has
    none: a trial the search stopped before its actor started never ran the code that makes
    its run, yet it was a trial of the search, with parameters the searcher chose."""
    complete = dict(runs)
    for trial_id, params in params_by_trial.items():
        if trial_id not in complete:
            complete[trial_id] = trial_run(config, tune_run_id, experiment_name, trial_id)
            tracking.RunLogger(config.resolved_tracking_uri(), complete[trial_id]).params(
                dict(params)
            )
    return complete


def close_trial_runs(
    config: GraftConfig,
    runs: Mapping[str, str],
    outcomes: Mapping[str, TrialOutcome],
    stop_reason: str,
) -> None:
    """End each trial run (``runs``: trial id -> run id, from :func:`trial_runs`) with its
    trial's outcome (status and tag, and ``stop_reason`` for a trial stopped before its first
    epoch); a run whose trial has no outcome here is left as it is."""
    client = tracking.client_for(config)
    for trial_id, run_id in runs.items():
        if trial_id in outcomes:
            status, outcome = outcomes[trial_id]
            client.set_tag(run_id, OUTCOME_TAG, outcome)
            if outcome == BEFORE_FIRST_EPOCH:
                client.set_tag(run_id, STOP_REASON_TAG, stop_reason)
            client.set_terminated(run_id, status)
