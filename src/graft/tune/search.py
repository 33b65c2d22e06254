"""Ray Tune over the finetune: each trial is a finetune fit (in its own Tune actor with one
worker, or a Ray Train fit of its own DDP workers: ``tune.trial_runner``), a
nested MLflow run under the tune stage's run, searched by Optuna TPE / HyperOpt / random /
grid and stopped early by ASHA, asynchronous Hyperband or the median stopping rule. An
interrupted experiment resumes from its storage and does not rerun finished trials; a trial
that was running restarts from its last Ray Train checkpoint. ``scheduler=pbt`` runs
Population Based Training instead, with trials of several fits each (graft.tune.pbt).

Conditional keys (``when: "<choice key> == <value>"``): Optuna suggests them define-by-run, so
TPE only models them over the trials where they apply; the other searchers sample every key
and a trial drops the inactive ones (they keep their config value).

Ray 2.60 (Train V2) rejects ``Tuner(trainer)``: the trainable is a function that runs the
loop itself and reports to Tune (graft.train.local_fit), or calls ``TorchTrainer.fit()``
with a ``TuneReportCallback`` relaying worker reports to Tune.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from graft.config import GraftConfig
from graft.errors import TrainingError
from graft.io.ray_runtime import TrainStorage, train_storage
from graft.tune.pbt import run_pbt_trial
from graft.tune.search_algorithms import make_scheduler, make_searcher, search_stopper
from graft.tune.search_start import SearchStart
from graft.tune.space import active_params, param_space
from graft.tune.trial import TIME_ATTR, TRIAL_CPU, SearchInputs, run_trial

if TYPE_CHECKING:
    from graft.tune.runs import TrialOutcome

log = logging.getLogger(__name__)


@dataclass
class SearchResult:
    best_params: dict[str, Any]
    best_metric: float
    best_checkpoint_dir: str
    trials_table: str  # CSV path
    num_trials: int  # every trial Tune made, also one stopped before it started
    num_stopped_early: int  # cut by the scheduler or a budget after their first epoch
    total_epochs: int
    num_before_first_epoch: int = 0  # stopped (not failed) before their first report
    best_trial_id: str = ""
    plots: list[str] = field(default_factory=list)


def existing_best(results: list[Any], metric: str, mode: str, store: TrainStorage) -> Any:
    """The best-scoring result whose reported checkpoint still holds its model.

    A trial stopped by the scheduler or a budget may have rotated out the checkpoint of its
    last report to Tune before the stop reached its workers; handing on another checkpoint
    would hand on weights its metric does not describe, so such a trial is passed over."""
    from graft.train.model_dir import MODEL_FILE

    sign = 1.0 if mode == "max" else -1.0
    ranked = sorted(results, key=lambda r: -sign * float(r.metrics[metric]))
    for rank, result in enumerate(ranked):
        if store.has_file(result.metrics["checkpoint_path"], MODEL_FILE):
            if rank:
                log.warning(
                    "the %d better trial(s) %s lost the checkpoint of their last report (Ray "
                    "Train rotated it out before Tune's stop reached them); handing on trial "
                    "%s (%s=%.4f)",
                    rank,
                    [r.metrics.get("trial_id") for r in ranked[:rank]],
                    result.metrics.get("trial_id"),
                    metric,
                    float(result.metrics[metric]),
                )
            return result
    raise TrainingError(
        f"none of the {len(ranked)} tuning trials' last reported checkpoints is left on "
        f"{store.path}: each was rotated out or removed after the trial stopped"
    )


def trial_outcomes(results: list[Any], trial_ids: Iterable[str]) -> dict[str, TrialOutcome]:
    """Each trial's outcome, by trial id. Tune's stand-in result of a trial that never
    reported carries the id; failing that, the trial's folder name does (Tune names it
    ``<trainable>_<trial id>_<tag>``), for one of the ``trial_ids`` known from elsewhere."""
    from graft.tune.runs import trial_outcome

    known = list(trial_ids)
    outcomes: dict[str, TrialOutcome] = {}
    for result in results:
        metrics = result.metrics or {}
        trial_id = metrics.get("trial_id") or next(
            (t for t in known if f"_{t}_" in Path(str(result.path)).name), None
        )
        if trial_id is not None:
            outcomes[str(trial_id)] = trial_outcome(metrics, result.error is not None)
    return outcomes


def trials_frame(
    reported: Any, configs: dict[str, dict[str, Any]], outcomes: dict[str, TrialOutcome]
) -> Any:
    """``trials.csv``: Tune's table of the trials that reported (their last report and
    config), a row for each other trial in ``configs`` (trial id -> config: its id and
    config), and every trial's outcome."""
    import pandas as pd

    listed = set(reported["trial_id"].astype(str)) if "trial_id" in reported else set()
    missing = [
        {"trial_id": trial_id, **{f"config/{k}": v for k, v in config.items()}}
        for trial_id, config in configs.items()
        if trial_id not in listed
    ]
    frame = pd.concat([reported, pd.DataFrame(missing)], ignore_index=True) if missing else reported
    if "trial_id" in frame:
        frame["outcome"] = [
            outcomes[t].outcome if t in outcomes else "" for t in frame["trial_id"].astype(str)
        ]
    return frame


def _best_model_dir(checkpoint_path: str, destination: Path, store: TrainStorage) -> str:
    from graft.train.model_dir import MODEL_FILE, SPEC_FILE

    store.fetch(checkpoint_path, destination, (MODEL_FILE, SPEC_FILE))
    return str(destination)


def run_search(
    config: GraftConfig,
    dataset_dir: str,
    pretrained_dir: str,
    output_dir: Path,
    tune_run_id: str,
    experiment_name: str,
    trial_function: Callable[[dict[str, Any], SearchInputs], None] | None = None,
    callbacks: Sequence[Any] = (),
    start: SearchStart | None = None,
) -> SearchResult:
    """The search; ``trial_function`` (with :func:`run_trial`'s signature) replaces the
    trial that the config chooses, for a test that must hold a trial back; ``callbacks``
    (Tune callbacks) watch it besides Graft's own (a bench times the trials); ``start``
    (graft.tune.search_start; None: cold) gives a warm search its seeds, which are its first
    trials, and its prior results. A resumed search keeps the searcher it started with."""
    from graft.train.request import phases_for
    from graft.tune.runs import BEFORE_FIRST_EPOCH

    max_epochs = sum(p.epochs for p in phases_for(config.finetune))
    store = train_storage(config.ray, config.work_path / "ray" / "tune", "tune")
    trials_dir = (config.work_path / "tune-trials" / experiment_name).resolve()
    if trial_function is None and config.tune.scheduler == "pbt":
        trial_function = run_pbt_trial
    elif trial_function is None:
        trial_function = run_trial
    trials_store = train_storage(config.ray, trials_dir, f"tune-trials/{experiment_name}")
    inputs = SearchInputs(
        base_config_json=config.to_json(),
        dataset_dir=str(Path(dataset_dir).resolve()),
        pretrained_dir=str(Path(pretrained_dir).resolve()),
        tune_run_id=tune_run_id,
        trials_dir=str(trials_dir),
        experiment_name=experiment_name,
        trials_store=trials_store,
    )
    trainable = _trainable(config, trial_function, inputs)
    tuner = _tuner(config, trainable, store, experiment_name, max_epochs, callbacks, start)
    started = time.monotonic()
    grid = tuner.fit()
    elapsed = time.monotonic() - started
    results = [_with_checkpoint_path(grid[index]) for index in range(len(grid))]
    reported = [r.metrics for r in results if r.metrics and TIME_ATTR in r.metrics]
    epochs = [int(m[TIME_ATTR]) for m in reported]
    frame, outcomes = _record_trials(
        config, grid, results, store, tune_run_id, experiment_name, sum(epochs), elapsed
    )
    output_dir.mkdir(parents=True, exist_ok=True)
    table = output_dir / "trials.csv"
    frame.to_csv(table, index=False)
    usable = [r for r in results if r.metrics and "checkpoint_path" in r.metrics]
    if not usable:
        raise _no_checkpoint_error(config, results)
    best = existing_best(usable, config.tune.metric, config.tune.mode, trials_store)
    counts = [outcome.outcome for outcome in outcomes.values()]
    result = SearchResult(
        **_best_trial(config, best, output_dir / "best_model", store),
        trials_table=str(table),
        num_trials=len(results),
        num_stopped_early=counts.count("cut"),
        total_epochs=sum(epochs),
        num_before_first_epoch=counts.count(BEFORE_FIRST_EPOCH),
    )
    result.plots = _plot_search(config, frame, results, output_dir)
    (output_dir / "best.json").write_text(json.dumps(result.__dict__, indent=2))
    return result


def _best_trial(
    config: GraftConfig, best: Any, model_dir: Path, store: TrainStorage
) -> dict[str, Any]:
    """The best trial's fields of the search result; its model is fetched into ``model_dir``."""
    best_metrics, best_config = best.metrics or {}, best.config or {}
    params = {k: best_config[k] for k in config.tune.space if k in best_config}
    return {
        "best_params": active_params(config.tune.space, params),
        "best_metric": float(best_metrics[config.tune.metric]),
        "best_checkpoint_dir": _best_model_dir(best_metrics["checkpoint_path"], model_dir, store),
        "best_trial_id": str(best_metrics.get("trial_id", "")),
    }


def _with_checkpoint_path(result: Any) -> Any:
    """``result`` with its model's folder as ``checkpoint_path``. A Ray Train trial (and a PBT
    trial) reports that path; a trial that trains in its trainable reports its checkpoint to
    Tune, which stored it where the result's (latest) checkpoint says: every report of such a
    trial carries a checkpoint, and the trial waits in each report until Tune took it."""
    if result.metrics and "checkpoint_path" not in result.metrics and result.checkpoint:
        result.metrics["checkpoint_path"] = result.checkpoint.path
    return result


def _trainable(
    config: GraftConfig,
    trial_function: Callable[[dict[str, Any], SearchInputs], None],
    inputs: SearchInputs,
) -> Any:
    """``trial_function`` with the search's shared inputs bound and a trial's resources: a
    worker's when it trains in its trainable, else TRIAL_CPU (its Train workers hold theirs)."""
    from ray import tune

    in_actor = config.tune.in_trainable
    resources = config.finetune.resources.ray_resources() if in_actor else {"CPU": TRIAL_CPU}
    return tune.with_resources(tune.with_parameters(trial_function, search=inputs), resources)


def _tuner(
    config: GraftConfig,
    trainable: Any,
    store: TrainStorage,
    experiment_name: str,
    max_epochs: int,
    callbacks: Sequence[Any] = (),
    start: SearchStart | None = None,
) -> Any:
    """The experiment ``experiment_name`` in ``store``: resumed where it exists, else new."""
    from ray import tune

    experiment_path = store.join(experiment_name)
    if tune.Tuner.can_restore(experiment_path, storage_filesystem=store.filesystem):
        log.info("resuming tuning experiment at %s", experiment_path)
        return tune.Tuner.restore(
            experiment_path,
            trainable=trainable,
            resume_errored=True,
            storage_filesystem=store.filesystem,
        )
    return tune.Tuner(
        trainable,
        param_space=param_space(config),
        tune_config=tune.TuneConfig(
            metric=config.tune.metric,
            mode=config.tune.mode,
            search_alg=make_searcher(config, start),
            scheduler=make_scheduler(config, max_epochs),
            # a grid enumerates its trials itself: each grid point runs once
            num_samples=1 if config.tune.searcher == "grid" else config.tune.num_samples,
            time_budget_s=config.tune.time_budget_s,
            # a trial that trains in its trainable starts in milliseconds in a reused actor
            # (torch imported, threads set). A Ray Train trial must not: a reused actor keeps
            # a stopped trial's Train controller alive, and with it the workers' placement
            # group, so the CPUs leak and later trials never start
            reuse_actors=config.tune.in_trainable,
        ),
        run_config=_run_config(config, store, experiment_name, max_epochs, callbacks),
    )


def _run_config(
    config: GraftConfig,
    store: TrainStorage,
    experiment_name: str,
    max_epochs: int,
    callbacks: Sequence[Any] = (),
) -> Any:
    from ray import tune

    from graft.tune.live_progress import LiveSearchProgress, SearchTally
    from graft.tune.orphaned_groups import OrphanedGroupSweeper

    return tune.RunConfig(
        name=experiment_name,
        storage_path=store.path,
        storage_filesystem=store.filesystem,
        verbose=0,
        stop=search_stopper(config, max_epochs),
        callbacks=[
            # gives back the CPUs of trials stopped while their workers were starting
            OrphanedGroupSweeper(),
            LiveSearchProgress(
                SearchTally(
                    config.tune.metric,
                    config.tune.mode,
                    config.tune.num_samples,
                    config.tune.epoch_budget,
                    config.tune.time_budget_s,
                )
            ),
            *callbacks,
        ],
        **_trial_checkpointing(config),
    )


def _trial_checkpointing(config: GraftConfig) -> dict[str, Any]:
    """What a Ray Train trial's fit sets for its checkpoints and failures, set on Tune for
    trials that train in their trainable: Tune keeps their checkpoints, and restarts a failed
    trial from its latest one as Ray Train restarts a failed worker group."""
    from ray import tune

    if not config.tune.in_trainable:
        return {}
    checkpointing: dict[str, Any] = {
        "failure_config": tune.FailureConfig(max_failures=config.finetune.checkpoint.max_failures),
    }
    if config.tune.scheduler != "pbt":
        # each epoch's checkpoint replaces the one before (a PBT trial's, one per segment,
        # stays: another trial may be told to continue from it)
        checkpointing["checkpoint_config"] = tune.CheckpointConfig(
            num_to_keep=config.finetune.checkpoint.num_to_keep
        )
    return checkpointing


def _record_trials(
    config: GraftConfig,
    grid: Any,
    results: list[Any],
    store: TrainStorage,
    tune_run_id: str,
    experiment_name: str,
    trial_epochs: int,
    elapsed_s: float,
) -> tuple[Any, dict[str, TrialOutcome]]:
    """Close every trial's MLflow run with its outcome (making one for a trial that never
    started) and return ``trials.csv``'s frame and the outcomes, by trial id."""
    from ray import tune

    from graft.tune.runs import (
        close_trial_runs,
        runs_for_unstarted_trials,
        search_stop_reason,
        trial_runs,
    )

    # every trial's config, also one that never reported (its Result carries none)
    configs = tune.ExperimentAnalysis(
        grid.experiment_path, storage_filesystem=store.filesystem
    ).get_all_configs()
    runs = trial_runs(config, tune_run_id)
    outcomes = trial_outcomes(results, [*runs, *configs])
    runs = runs_for_unstarted_trials(
        config,
        tune_run_id,
        experiment_name,
        runs,
        {t: active_params(config.tune.space, c) for t, c in configs.items() if t in outcomes},
    )
    stop_reason = search_stop_reason(
        epoch_budget=config.tune.epoch_budget,
        trial_epochs=trial_epochs,
        time_budget_s=config.tune.time_budget_s,
        elapsed_s=elapsed_s,
    )
    close_trial_runs(config, runs, outcomes, stop_reason)
    return trials_frame(grid.get_dataframe(), configs, outcomes), outcomes


def _no_checkpoint_error(config: GraftConfig, results: list[Any]) -> TrainingError:
    errors = [str(r.error) for r in results if r.error is not None]
    budget = config.tune.time_budget_s
    return TrainingError(
        "no tuning trial produced a checkpoint"
        + (f" (first error: {errors[0].splitlines()[-1]})" if errors else "")
        + (
            f"; tune.time_budget_s={budget:g} may end the search before a first epoch: raise it"
            if budget is not None and not errors
            else ""
        )
    )


def _plot_search(
    config: GraftConfig, frame: Any, results: list[Any], output_dir: Path
) -> list[str]:
    from graft.tune.plots import plot_search
    from graft.tune.progress import search_progress

    progress = search_progress(
        (r.metrics_dataframe for r in results if r.metrics_dataframe is not None),
        config.tune.metric,
        config.tune.mode,
    )
    return plot_search(
        frame,
        config.tune.space,
        config.tune.metric,
        config.tune.mode,
        output_dir,
        progress,
        config.tune.epoch_budget,
    )
