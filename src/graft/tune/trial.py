"""One trial of a search: its config, its nested MLflow run, its Ray Train storage, and the
finetune fit that ASHA, Hyperband or the median rule may stop (PBT's trials: graft.tune.pbt).

The fit runs where ``tune.trial_runner`` says: inside the trial's own Tune trainable (one
worker: graft.train.local_fit, each epoch reported to Tune with its checkpoint) or as a Ray
Train fit of ``tune.workers_per_trial`` DDP workers (relayed to Tune by a callback)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from graft.config import GraftConfig, config_from_json, with_overrides
from graft.io.ray_runtime import TrainStorage
from graft.io.tracking import RunLogger
from graft.train.local_fit import fit_here
from graft.train.loop_session import LocalSession
from graft.train.request import FitRequest, FitRun
from graft.tune.space import active_params

TRIAL_CPU = 0.01  # a Ray Train trial's own actor only waits on its Train workers

# schedulers measure a trial's progress in epochs: a trial restarted from its Train checkpoint
# reports its true epoch, while Tune's training_iteration would start again at 1
TIME_ATTR = "epoch"


@dataclass(frozen=True)
class SearchInputs:
    """What every trial of one search shares, bound once by the search (Tune's
    ``with_parameters``). The config crosses to the trial actors as its JSON."""

    base_config_json: str
    dataset_dir: str
    pretrained_dir: str
    tune_run_id: str
    trials_dir: str
    experiment_name: str = ""
    # on a cluster, under the shared storage: any node may run a trial's workers, and the
    # search's driver reads the best trial's checkpoint
    trials_store: TrainStorage | None = None


def run_trial(params: dict[str, Any], search: SearchInputs) -> None:
    """One trial: a nested MLflow run around a finetune fit with the trial's parameters."""
    from graft.train.stage_requests import finetune_request

    trial = start_trial(params, search)
    config, logger, trial_dir = trial.config, trial.logger, trial.dir
    logger.params(trial.applied)
    request = finetune_request(
        config, search.dataset_dir, search.pretrained_dir, trial_dir, trial.run_id
    )
    try:
        if config.tune.in_trainable:
            # a stop from Tune ends the loop inside its report (SystemExit, below)
            fit_here(request, trial_session(config), trial_dir / "model")
        else:
            _ray_train_trial(request, trial, search)
    except SystemExit:
        # Tune stopped the trial (inside a report): the search ends its run with the outcome,
        # and a reused actor's next trial waits for this one's thread (2 s at most)
        raise
    except BaseException:
        logger.terminate("KILLED")
        raise
    logger.terminate("FINISHED")


def _ray_train_trial(request: FitRequest, trial: TrialStart, search: SearchInputs) -> None:
    from ray.tune.integration.ray_train import TuneReportCallback

    from graft.train.fit import fit

    run = trial_fit_run(
        trial.config,
        trial_storage(search.trials_store, trial.dir),
        f"trial-{trial.trial_id}",
        trial.dir / "model",
        # Tune relays a report without waiting: a trial that Tune stops keeps training
        # until the stop reaches its workers, and each new checkpoint deletes the oldest.
        # Two kept make it likely that the one Tune last recorded survives; the search
        # only hands on a checkpoint that did (existing_best)
        num_to_keep=2,
        callbacks=(TuneReportCallback(),),
    )
    fit(request, run)


def trial_session(config: GraftConfig) -> LocalSession:
    """The session of a loop that trains in this Tune trial's trainable: each epoch reported
    to Tune with its checkpoint (Tune persists it before the loop goes on), and resumed from
    the checkpoint Tune restored the trial with (a restart, a resumed search)."""
    from ray import tune

    return LocalSession(
        report_to=_report_to_tune,
        checkpoint=tune.get_checkpoint(),
        device_name=trial_device(config),
    )


def trial_device(config: GraftConfig) -> str:
    # Ray shows the actor only the GPUs it was given (CUDA_VISIBLE_DEVICES): the first is its
    return "cuda:0" if config.finetune.resources.gpus > 0 else "cpu"


def _report_to_tune(metrics: dict[str, float], folder: str | None) -> None:
    from ray import tune

    tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(folder) if folder else None)


@dataclass(frozen=True)
class TrialStart:
    """What every kind of trial sets up first: its config, MLflow run and folder."""

    config: GraftConfig
    applied: dict[str, Any]  # the trial's active search parameters
    trial_id: str
    run_id: str
    logger: RunLogger  # on the trial's nested run
    dir: Path


def start_trial(
    params: dict[str, Any],
    search: SearchInputs,
    fixed_overrides: dict[str, Any] | None = None,
) -> TrialStart:
    """The trial's config (the base with its parameters and ``fixed_overrides``) and its
    nested MLflow run under the tune stage's run (reused when the trial is restarted)."""
    from ray import tune

    from graft.tune.runs import trial_run

    base = config_from_json(search.base_config_json)
    applied = active_params(base.tune.space, params)
    config = with_overrides(base, {**applied, **(fixed_overrides or {})})
    trial_id = tune.get_context().get_trial_id()
    run_id = trial_run(config, search.tune_run_id, search.experiment_name, trial_id)
    logger = RunLogger(config.resolved_tracking_uri(), run_id)
    trial_dir = Path(search.trials_dir) / trial_id
    return TrialStart(config, applied, trial_id, run_id, logger, trial_dir)


def trial_fit_run(
    config: GraftConfig, store: TrainStorage, run_name: str, output_dir: Path, **changes: Any
) -> FitRun:
    """A trial's Ray Train run: the finetune settings on ``tune.workers_per_trial`` workers.
    The trial actor holds TRIAL_CPU: it is taken off the workers, so a trial costs exactly what
    its workers ask for and max_concurrent trials fit the cluster."""
    return FitRun.for_stage(
        config.finetune,
        run_name=run_name,
        output_dir=output_dir,
        storage=store,
        num_workers=config.tune.workers_per_trial,
        cpu_discount=TRIAL_CPU / config.tune.workers_per_trial,
        **changes,
    )


def trial_storage(trials_store: TrainStorage | None, trial_dir: Path) -> TrainStorage:
    """A trial's Ray Train storage: ``<trial id>/ray`` under the search's trial storage, which
    the search's driver built (with its S3 settings: a trial actor's process may lack them)."""
    if trials_store is None:  # called without run_search: a local folder
        return TrainStorage(str((trial_dir / "ray").resolve()))
    return trials_store.with_subpath(f"{trial_dir.name}/ray")
