"""The transfer-finetune stage: the pretrained backbone with a new head, trained on the target
task with Ray Train; with ``evaluate.protocol`` other than ``holdout``, also its
cross-validated accuracy (a fresh in-process model per fold)."""

from __future__ import annotations

from pathlib import Path

from graft.config import GraftConfig
from graft.evaluate.finetune_cv import check_pooled_rows_fit, cross_validate_finetune
from graft.stages.outputs import TrainOutput
from graft.stages.run_records import link_reused_runs
from graft.stages.training import TrainingStage, run_training_stage
from graft.train.in_process import FinetuneFoldTrainer, FinetuneStart
from graft.train.request import FitRequest
from graft.train.stage_requests import finetune_request

FINETUNE = TrainingStage(
    name="transfer-finetune", block="finetune", title="transfer-finetune (target task)"
)


def run(
    config: GraftConfig,
    dataset_dir: str,
    pretrained_dir: str,
    output_dir: str,
    parent_run_id: str,
) -> TrainOutput:
    out = Path(output_dir)
    # the dataset and the backbone may come from KFP's cache: name their runs here
    link_reused_runs(config, parent_run_id, [dataset_dir, pretrained_dir])

    def cross_validate(request: FitRequest, run_id: str) -> None:
        if config.evaluate.protocol.name != "holdout":
            # small target task: also estimate accuracy with K-fold (fresh model per fold)
            trainer = FinetuneFoldTrainer(FinetuneStart.from_request(request))
            splits = (request.train_path, request.val_path)
            cross_validate_finetune(config, trainer, splits, out, run_id)

    def request_for(run_id: str) -> FitRequest:
        request = finetune_request(config, dataset_dir, pretrained_dir, out / "scratch", run_id)
        if config.evaluate.protocol.name != "holdout":
            # a streamed target task too large to pool in memory is refused before the fit
            check_pooled_rows_fit(config, (request.train_path, request.val_path))
        return request

    return run_training_stage(
        config,
        FINETUNE,
        parent_run_id,
        output_dir,
        request_for=request_for,
        after_fit=cross_validate,
    )
