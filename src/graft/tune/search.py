"""Ray Tune over the finetune: each trial is a full Ray Train fit (its own DDP workers), a
nested MLflow run under the tune stage's run, searched by Optuna TPE / HyperOpt / random and
stopped early by ASHA. An interrupted experiment resumes from its storage and does not rerun
finished trials.

Ray 2.60 (Train V2) rejects ``Tuner(trainer)``: the trainable is a function that calls
``TorchTrainer.fit()`` with a ``TuneReportCallback`` relaying worker reports to Tune.
"""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from graft.config import GraftConfig, SearchDimension, config_from_json, with_overrides
from graft.errors import TrainingError

log = logging.getLogger(__name__)

TRIAL_CPU = 0.01  # the trial's own actor only waits on its Train workers


@dataclass
class SearchResult:
    best_params: dict[str, Any]
    best_metric: float
    best_checkpoint_dir: str
    trials_table: str  # CSV path
    num_trials: int
    num_stopped_early: int
    total_epochs: int


def to_tune_space(space: dict[str, SearchDimension]) -> dict[str, Any]:
    from ray import tune

    converted: dict[str, Any] = {}
    for key, dim in space.items():
        if dim.type == "choice":
            converted[key] = tune.choice(list(dim.values or []))
            continue
        assert dim.low is not None and dim.high is not None  # the schema guarantees bounds
        if dim.type == "uniform":
            converted[key] = tune.uniform(dim.low, dim.high)
        elif dim.type == "loguniform":
            converted[key] = tune.loguniform(dim.low, dim.high)
        else:
            converted[key] = tune.randint(int(dim.low), int(dim.high) + 1)
    return converted


def make_searcher(config: GraftConfig) -> Any:
    from ray.tune.search import BasicVariantGenerator, ConcurrencyLimiter

    tune_cfg = config.tune
    if tune_cfg.searcher == "random":
        return BasicVariantGenerator(
            random_state=tune_cfg.seed, max_concurrent=tune_cfg.max_concurrent
        )
    if tune_cfg.searcher == "optuna":
        import optuna
        from ray.tune.search.optuna import OptunaSearch

        searcher: Any = OptunaSearch(
            metric=tune_cfg.metric,
            mode=tune_cfg.mode,
            sampler=optuna.samplers.TPESampler(seed=tune_cfg.seed, n_startup_trials=3),
        )
    else:
        from ray.tune.search.hyperopt import HyperOptSearch

        searcher = HyperOptSearch(
            metric=tune_cfg.metric, mode=tune_cfg.mode, random_state_seed=tune_cfg.seed
        )
    return ConcurrencyLimiter(searcher, max_concurrent=tune_cfg.max_concurrent)


def make_scheduler(config: GraftConfig, max_epochs: int) -> Any:
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    if config.tune.scheduler == "fifo":
        return FIFOScheduler()
    return ASHAScheduler(
        time_attr="training_iteration",
        max_t=max_epochs,
        grace_period=min(config.tune.grace_period, max_epochs),
        reduction_factor=config.tune.reduction_factor,
    )


def run_trial(
    params: dict[str, Any],
    *,
    base_config_json: str,
    dataset_dir: str,
    pretrained_dir: str,
    tune_run_id: str,
    trials_dir: str,
) -> None:
    """One trial: a nested MLflow run around a finetune fit with the trial's parameters."""
    from ray import tune
    from ray.tune.integration.ray_train import TuneReportCallback

    from graft import tracking
    from graft.train.fit import fit
    from graft.train.requests import finetune_request

    config = with_overrides(config_from_json(base_config_json), params)
    trial_id = tune.get_context().get_trial_id()
    run_id = tracking.create_child_run(
        config.resolved_tracking_uri(),
        tracking.experiment_id(config),
        tune_run_id,
        name=f"trial-{trial_id}",
        tags={"graft.stage": "tune-trial", "graft.trial_id": trial_id},
    )
    logger = tracking.RunLogger(config.resolved_tracking_uri(), run_id)
    logger.params(params)
    trial_dir = Path(trials_dir) / trial_id
    request = finetune_request(config, dataset_dir, pretrained_dir, trial_dir, run_id)
    try:
        fit(
            request,
            num_workers=config.tune.workers_per_trial,
            storage_path=trial_dir / "ray",
            run_name=f"trial-{trial_id}",
            output_dir=trial_dir / "model",
            max_failures=config.finetune.checkpoint.max_failures,
            num_to_keep=1,
            # the trial actor holds TRIAL_CPU: take it off the workers so a trial costs
            # exactly workers_per_trial CPUs and max_concurrent trials fit the cluster
            cpus_per_worker=1.0 - TRIAL_CPU / config.tune.workers_per_trial,
            callbacks=[TuneReportCallback()],
        )
    except BaseException:
        logger.terminate("KILLED")
        raise
    logger.terminate("FINISHED")


def _best_model_dir(checkpoint_path: str, destination: Path) -> str:
    from graft.train.loop import MODEL_FILE, SPEC_FILE

    destination.mkdir(parents=True, exist_ok=True)
    for name in (MODEL_FILE, SPEC_FILE):
        shutil.copyfile(Path(checkpoint_path) / name, destination / name)
    return str(destination)


def run_search(
    config: GraftConfig,
    dataset_dir: str,
    pretrained_dir: str,
    output_dir: Path,
    tune_run_id: str,
    experiment_name: str,
) -> SearchResult:
    from ray import tune

    from graft.train.loop import phases_for

    max_epochs = sum(p.epochs for p in phases_for(config.finetune))
    storage = (config.work_path / "ray" / "tune").resolve()
    trials_dir = (config.work_path / "tune-trials" / experiment_name).resolve()
    trainable = tune.with_resources(
        tune.with_parameters(
            run_trial,
            base_config_json=config.to_json(),
            dataset_dir=str(Path(dataset_dir).resolve()),
            pretrained_dir=str(Path(pretrained_dir).resolve()),
            tune_run_id=tune_run_id,
            trials_dir=str(trials_dir),
        ),
        {"CPU": TRIAL_CPU},
    )
    experiment_path = storage / experiment_name
    if tune.Tuner.can_restore(str(experiment_path)):
        log.info("resuming tuning experiment at %s", experiment_path)
        tuner = tune.Tuner.restore(str(experiment_path), trainable=trainable, resume_errored=True)
    else:
        tuner = tune.Tuner(
            trainable,
            param_space=to_tune_space(config.tune.space),
            tune_config=tune.TuneConfig(
                metric=config.tune.metric,
                mode=config.tune.mode,
                search_alg=make_searcher(config),
                scheduler=make_scheduler(config, max_epochs),
                num_samples=config.tune.num_samples,
            ),
            run_config=tune.RunConfig(name=experiment_name, storage_path=str(storage), verbose=0),
        )
    grid = tuner.fit()
    frame = grid.get_dataframe()
    output_dir.mkdir(parents=True, exist_ok=True)
    table = output_dir / "trials.csv"
    frame.to_csv(table, index=False)
    results = [grid[index] for index in range(len(grid))]
    usable = [r for r in results if r.metrics and "checkpoint_path" in r.metrics]
    if not usable:
        errors = [str(r.error) for r in results if r.error is not None]
        raise TrainingError(
            "no tuning trial produced a checkpoint"
            + (f" (first error: {errors[0].splitlines()[-1]})" if errors else "")
        )
    sign = 1.0 if config.tune.mode == "max" else -1.0
    final: list[dict[str, Any]] = [r.metrics or {} for r in usable]
    best_index = max(range(len(usable)), key=lambda i: sign * float(final[i][config.tune.metric]))
    best_metrics, best_config = final[best_index], usable[best_index].config or {}
    reported = [r.metrics for r in results if r.metrics]
    iterations = [int(m.get("training_iteration", 0)) for m in reported]
    params = {k: best_config[k] for k in config.tune.space}
    result = SearchResult(
        best_params=params,
        best_metric=float(best_metrics[config.tune.metric]),
        best_checkpoint_dir=_best_model_dir(
            best_metrics["checkpoint_path"], output_dir / "best_model"
        ),
        trials_table=str(table),
        num_trials=len(iterations),
        num_stopped_early=sum(1 for m in reported if not m.get("fit_complete")),
        total_epochs=sum(iterations),
    )
    (output_dir / "best.json").write_text(json.dumps(result.__dict__, indent=2))
    return result
