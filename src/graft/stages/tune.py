"""The tune stage: search the finetune space, hand on the best model (the untuned one if it
scored higher on validation), and write the search's report."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from graft.config import LR_SEARCH_KEY, GraftConfig
from graft.data.manifest import DataManifest
from graft.errors import ConfigError
from graft.io import tracking
from graft.io.ray_runtime import ensure_ray
from graft.stages.common import run_name_key, validation_accuracy
from graft.stages.outputs import TuneOutput
from graft.tune import search
from graft.tune.html_report import write_tune_report
from graft.tune.lr_range import narrow_lr_range
from graft.tune.runs import TUNE_DISABLED_TAG, tag_best_trial, tune_stage_run
from graft.tune.warm_start import search_start


def run(
    config: GraftConfig,
    dataset_dir: str,
    pretrained_dir: str,
    finetuned_dir: str,
    output_dir: str,
    parent_run_id: str,
) -> TuneOutput:
    """Search the finetune space; hand on the best model, the untuned one if it was better.

    Both candidates are re-scored on the validation split here, since a trial's last report
    may predate its restored-best weights. ``finetuned_dir`` may be empty (``graft tune`` on
    its own): the best trial is then handed on as is.

    The Tune experiment is named after ``parent_run_id``: a retry with the same parent (a KFP
    retry, ``graft tune --resume``) resumes it, reuses its MLflow runs and does not rerun the
    trials that finished."""
    out = Path(output_dir)
    finetuned_val_accuracy = (
        validation_accuracy(dataset_dir, finetuned_dir) if finetuned_dir else float("-inf")
    )
    experiment_name = f"tune-{run_name_key(parent_run_id)}"
    with tune_stage_run(config, parent_run_id, experiment_name) as run_id:
        logger = tracking.logger_for(config, run_id)
        if not config.tune.enabled:
            return _hand_on_untuned(config, logger, out, finetuned_dir, finetuned_val_accuracy)
        config = _narrow_lr_range(config, logger, dataset_dir, pretrained_dir, out)
        # after the LR finder: the seeds are fitted to the narrowed LR range
        start = search_start(config, logger, DataManifest.read(dataset_dir).dataset_hash)
        ensure_ray(config.ray)
        result = search.run_search(
            config,
            dataset_dir,
            pretrained_dir,
            out,
            tune_run_id=run_id,
            experiment_name=experiment_name,
            start=start,
        )
        _log_search(config, logger, result)
        tuned_val_accuracy = validation_accuracy(dataset_dir, result.best_checkpoint_dir)
        tuned_better = tuned_val_accuracy >= finetuned_val_accuracy
        logger.tags({"graft.tune.winner": "tuned" if tuned_better else "finetune"})
        accuracies = (tuned_val_accuracy, finetuned_val_accuracy)
        _write_search_report(config, logger, out, result, accuracies, bool(finetuned_dir))
    return TuneOutput(
        model_dir=result.best_checkpoint_dir if tuned_better else finetuned_dir,
        run_id=run_id,
        val_accuracy=max(tuned_val_accuracy, finetuned_val_accuracy),
        best_params=result.best_params,
        source="tuned" if tuned_better else "finetune",
        trials=result.num_trials,
        stopped_early=result.num_stopped_early,
        before_first_epoch=result.num_before_first_epoch,
    )


def _hand_on_untuned(
    config: GraftConfig,
    logger: tracking.RunLogger,
    out: Path,
    finetuned_dir: str,
    finetuned_val_accuracy: float,
) -> TuneOutput:
    """``tune.enabled=false``: the finetuned model goes on untuned, with a report saying so."""
    if not finetuned_dir:
        raise ConfigError(
            "tune.enabled=false and no finetuned model to hand on; enable tuning or "
            "pass the finetuned model directory"
        )
    logger.tags({TUNE_DISABLED_TAG: "disabled"})
    report = write_tune_report(
        out,
        title=f"Graft tune: {config.name}",
        summary={
            "search": "not run (tune.enabled=false)",
            "handed on": "the finetuned model, untuned",
            "validation accuracy": finetuned_val_accuracy,
        },
        best_params={},
    )
    logger.artifact(report, "tune")
    return TuneOutput(finetuned_dir, logger.run_id, finetuned_val_accuracy, {}, "finetune")


def _narrow_lr_range(
    config: GraftConfig,
    logger: tracking.RunLogger,
    dataset_dir: str,
    pretrained_dir: str,
    out: Path,
) -> GraftConfig:
    """The config whose LR dimension the LR finder narrowed (when it is on and LR is
    searched), else ``config``."""
    if not (config.tune.lr_finder.enabled and LR_SEARCH_KEY in config.tune.space):
        return config
    narrowed, lr_range = narrow_lr_range(config, dataset_dir, pretrained_dir, out / "lr_finder")
    logger.metrics(lr_range.metrics(), step=0)
    logger.artifact(lr_range.plot, "tune/lr_finder")
    return narrowed


def _log_search(
    config: GraftConfig, logger: tracking.RunLogger, result: search.SearchResult
) -> None:
    logger.params({f"best.{k}": v for k, v in result.best_params.items()})
    logger.metrics(
        {
            f"best_{config.tune.metric}": result.best_metric,
            "trials": result.num_trials,
            "trials_stopped_early": result.num_stopped_early,
            "trials_before_first_epoch": result.num_before_first_epoch,
            "trial_epochs": result.total_epochs,
        },
        step=0,
    )
    logger.artifact(result.trials_table, "tune")
    for plot in result.plots:
        logger.artifact(plot, "tune/plots")
    best_run = tag_best_trial(config, logger.run_id, result.best_trial_id)
    logger.tags(
        {"graft.tune.best_trial_id": result.best_trial_id}
        | ({"graft.tune.best_trial_run_id": best_run} if best_run else {})
    )


def _write_search_report(
    config: GraftConfig,
    logger: tracking.RunLogger,
    out: Path,
    result: search.SearchResult,
    accuracies: tuple[float, float],
    compared_with_finetuned: bool,
) -> None:
    """The search's page; ``accuracies`` are the tuned and the untuned model's on validation."""
    tuned_val_accuracy, finetuned_val_accuracy = accuracies
    tuned_better = tuned_val_accuracy >= finetuned_val_accuracy
    report = write_tune_report(
        out,
        title=f"Graft tune: {config.name}",
        summary={
            "handed on": "the best trial's model"
            if tuned_better
            else "the untuned finetuned model (it scored higher on validation)",
            "tuned validation accuracy": tuned_val_accuracy,
            "untuned validation accuracy": finetuned_val_accuracy
            if compared_with_finetuned
            else "no finetuned model given",
            f"best trial's {config.tune.metric}": result.best_metric,
            "trials": result.num_trials,
            "stopped early": result.num_stopped_early,
            "stopped before their first epoch": result.num_before_first_epoch,
            "trial-epochs": result.total_epochs,
        },
        best_params=result.best_params,
        trials=pd.read_csv(result.trials_table),
        metric=config.tune.metric,
        space_keys=config.tune.space,
        plots=result.plots,
    )
    logger.artifact(report, "tune")
