"""The pretrain stage: the source-task model, trained with Ray Train."""

from __future__ import annotations

from graft.config import GraftConfig
from graft.stages.outputs import TrainOutput
from graft.stages.training import TrainingStage, run_training_stage
from graft.train.stage_requests import pretrain_request

PRETRAIN = TrainingStage(name="pretrain", block="pretrain", title="pretrain (source task)")


def run(config: GraftConfig, dataset_dir: str, output_dir: str, parent_run_id: str) -> TrainOutput:
    return run_training_stage(
        config,
        PRETRAIN,
        parent_run_id,
        output_dir,
        request_for=lambda run_id: pretrain_request(config, dataset_dir, run_id),
    )
