"""The MLflow side of a tuning experiment: one tune stage run per Tune experiment, one nested
child run per trial, both found again by tag when an interrupted experiment resumes, so a
resumed search keeps writing into the same runs instead of leaving orphans behind."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any, NamedTuple

from graft import tracking
from graft.config import GraftConfig

EXPERIMENT_TAG = "graft.tune_experiment"
TRIAL_TAG = "graft.trial_id"
BEST_TAG = "graft.best_trial"
OUTCOME_TAG = "graft.trial_outcome"  # completed, early_stopped, cut, failed or no_result


class TrialOutcome(NamedTuple):
    """How a trial ended, as the finished search saw it: its MLflow run status and why."""

    status: str  # MLflow's: FINISHED, FAILED or KILLED
    outcome: str


def trial_outcome(last_result: Mapping[str, Any], errored: bool) -> TrialOutcome:
    """A trial's outcome from its last report to Tune.

    A trial's own run cannot say this: Tune stops a trial (a scheduler's cut, a budget, PBT's
    last epoch) by killing its actor mid-report, so the trial's code never learns it ended.
    Like Ray's own MLflow callback, a trial that was stopped on purpose is FINISHED; the
    outcome tag tells a scheduler's cut from a completed fit."""
    if errored:
        return TrialOutcome("FAILED", "failed")
    if not last_result:
        return TrialOutcome("KILLED", "no_result")  # stopped before its first epoch ended
    if last_result.get("stopped_early"):
        return TrialOutcome("FINISHED", "early_stopped")  # the finetune recipe's patience
    if last_result.get("fit_complete"):
        return TrialOutcome("FINISHED", "completed")
    return TrialOutcome("FINISHED", "cut")  # by the scheduler, the epoch or the time budget


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


def close_trial_runs(
    config: GraftConfig, runs: Mapping[str, str], outcomes: Mapping[str, TrialOutcome]
) -> None:
    """End each trial run (``runs``: trial id -> run id, from :func:`trial_runs`) with its
    trial's outcome (status and tag); a run whose trial has no outcome here is left as it is."""
    client = tracking.client_for(config)
    for trial_id, run_id in runs.items():
        if trial_id in outcomes:
            status, outcome = outcomes[trial_id]
            client.set_tag(run_id, OUTCOME_TAG, outcome)
            client.set_terminated(run_id, status)
