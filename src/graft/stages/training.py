"""What the two training stages (pretrain, transfer-finetune) share: one fit in the stage's
MLflow run (Ray Train's, or one worker in this process: ``runner``), its learning curves and
history logged, and the best epoch handed on."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from graft.config import GraftConfig, StageName, TrainConfig
from graft.evaluate.plots import plot_learning_curves
from graft.io import tracking
from graft.io.ray_runtime import TrainStorage, ensure_ray, train_storage
from graft.stages.common import run_name_key
from graft.stages.outputs import TrainOutput
from graft.stages.run_records import write_run_record
from graft.train.fit import FitResult, fit
from graft.train.local_fit import fit_in_process
from graft.train.request import FitRequest, FitRun


@dataclass(frozen=True)
class TrainingStage:
    """What tells the two training stages apart."""

    name: StageName  # the MLflow stage run
    block: Literal["pretrain", "finetune"]  # its config block: params prefix, Ray Train run name
    title: str  # the learning curves' title

    def settings(self, config: GraftConfig) -> TrainConfig:
        return config.pretrain if self.block == "pretrain" else config.finetune


def run_training_stage(
    config: GraftConfig,
    stage: TrainingStage,
    parent_run_id: str,
    output_dir: str,
    request_for: Callable[[str], FitRequest],
    after_fit: Callable[[FitRequest, str], None] | None = None,
) -> TrainOutput:
    """Fit the request ``request_for(run_id)`` builds inside the stage's MLflow run;
    ``after_fit(request, run_id)`` runs in that run after the fit is logged."""
    settings = stage.settings(config)
    train_store = train_storage(config.ray, config.work_path / "ray")
    in_process = trains_in_process(config, settings, train_store)
    if not in_process or config.data.loader == "streaming":  # Ray Data streams need a Ray
        ensure_ray(config.ray)
    with tracking.stage_run(config, parent_run_id, stage.name) as run_id:
        logger = tracking.logger_for(config, run_id)
        logger.params(tracking.flatten(settings.model_dump(mode="json"), f"{stage.block}."))
        logger.tags({"graft.runner": "in_process" if in_process else "ray_train"})
        request = request_for(run_id)
        run = FitRun.for_stage(
            settings,
            run_name=f"{stage.block}-{run_name_key(parent_run_id)}",
            output_dir=Path(output_dir),
            storage=train_store,
        )
        result = fit_in_process(request, run) if in_process else fit(request, run)
        _log_fit(config, run_id, result, stage.title)
        write_run_record(result.model_dir, stage.name, run_id, parent_run_id)
        if after_fit is not None:
            after_fit(request, run_id)
    return _train_output(result, run_id)


def trains_in_process(config: GraftConfig, settings: TrainConfig, storage: TrainStorage) -> bool:
    """Whether the stage's fit runs in this process (``runner``; auto: one CPU worker on
    in-memory data with local checkpoints, where a Ray Train worker group would cost more
    start-up than the fit trains). Not for a stage sent to a Ray cluster (``ray.submit=job``,
    ``ray.mode=rayjob``): there this process is the job's driver on the head node, and the
    fit belongs on the cluster's workers."""
    if settings.runner != "auto":
        return settings.runner == "in_process"
    return (
        settings.num_workers == 1
        and settings.resources.gpus == 0
        and config.data.loader == "memory"
        and storage.filesystem is None
        and not config.ray.runs_stages_elsewhere
    )


def _log_fit(config: GraftConfig, run_id: str, result: FitResult, title: str) -> None:
    logger = tracking.logger_for(config, run_id)
    if result.history:
        plot = plot_learning_curves(
            result.history, title, Path(result.model_dir) / "learning_curves.png"
        )
        logger.artifact(plot, "plots")
    logger.dict({"history": result.history}, "history.json")
    # the checkpoint index: where the final checkpoint lives in Ray Train's storage
    logger.tags({"graft.checkpoint_path": result.checkpoint_path})


def _train_output(result: FitResult, run_id: str) -> TrainOutput:
    """The monitored best epoch's validation figures (the weights restored at the end)."""
    # an autoencoder pretrain has no accuracy: its best epoch has the lowest reconstruction loss
    best = max(
        result.history,
        key=lambda h: h.get("val_accuracy", -h["val_loss"]),
        default=result.final_metrics,
    )
    return TrainOutput(
        model_dir=result.model_dir,
        run_id=run_id,
        val_accuracy=float(best.get("val_accuracy", 0.0)),
        val_loss=float(best.get("val_loss", 0.0)),
        epochs_run=len(result.history),
    )
