"""graft.io.ray_compat against the installed Ray: the release it was checked against, the
PBT scheduler state it writes (Ray's real scheduler and trials, no Ray instance) and Ray
Train's report logger. Its GCS table reads need a running Ray;
tests/integration/test_orphaned_groups.py covers them."""

import logging
from types import SimpleNamespace

import pytest
import ray
from ray.tune.experiment import Trial
from ray.tune.schedulers import PopulationBasedTraining

from graft.config.runtime import LOG_LEVEL_ENV
from graft.io import ray_compat
from graft.train.workers import quiet_per_report_logging


def test_the_installed_ray_is_the_release_ray_compat_was_checked_against() -> None:
    """A Ray upgrade fails here first: re-check each function of ray_compat, then move
    CHECKED_RAY_VERSION."""
    assert ray.__version__ == ray_compat.CHECKED_RAY_VERSION


def _scheduler_with_one_trial(interval: int) -> tuple[PopulationBasedTraining, Trial]:
    scheduler = PopulationBasedTraining(
        time_attr="epoch",
        perturbation_interval=interval,
        hyperparam_mutations={"lr": [0.1, 0.2]},
        synch=True,
    )
    scheduler.set_search_properties("val_loss", "min")
    trial = Trial("segments", config={"lr": 0.1}, stub=True, trial_id="t0")
    scheduler.on_trial_add(SimpleNamespace(search_alg=None), trial)
    return scheduler, trial


def test_the_pbt_time_attr_is_the_one_the_scheduler_was_made_with() -> None:
    scheduler, _ = _scheduler_with_one_trial(interval=2)
    assert ray_compat.pbt_time_attr(scheduler) == "epoch"


def test_a_trial_marked_perturbed_at_an_epoch_is_next_perturbed_an_interval_later() -> None:
    scheduler, trial = _scheduler_with_one_trial(interval=2)
    ray_compat.mark_pbt_trial_perturbed_at(scheduler, trial, 5)
    state = scheduler._trial_state[trial]
    assert (state.last_train_time, state.last_perturbation_time) == (5, 5)
    assert scheduler._next_perturbation_sync == 7


def test_marking_an_earlier_epoch_never_moves_the_sync_point_back() -> None:
    scheduler, trial = _scheduler_with_one_trial(interval=2)
    ray_compat.mark_pbt_trial_perturbed_at(scheduler, trial, 5)
    ray_compat.mark_pbt_trial_perturbed_at(scheduler, trial, 1)
    assert scheduler._next_perturbation_sync == 7


def test_the_report_logger_is_the_one_ray_train_logs_each_report_to() -> None:
    """Ray Train V2 logs every ``ray.train.report`` through its context module's logger; the
    one ray_compat names must be that very object, or quieting it quiets nothing."""
    from ray.train.v2._internal.execution import context as train_context

    assert ray_compat.train_report_logger() is train_context.logger


def test_workers_quiet_the_per_report_log_unless_graft_logs_at_debug(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    report_logger = ray_compat.train_report_logger()
    monkeypatch.setattr(report_logger, "level", logging.NOTSET)
    monkeypatch.setenv(LOG_LEVEL_ENV, "debug")
    quiet_per_report_logging()
    assert report_logger.level == logging.NOTSET
    monkeypatch.setenv(LOG_LEVEL_ENV, "INFO")
    quiet_per_report_logging()
    assert report_logger.level == logging.WARNING
    assert not report_logger.isEnabledFor(logging.INFO)
    assert report_logger.isEnabledFor(logging.WARNING)
