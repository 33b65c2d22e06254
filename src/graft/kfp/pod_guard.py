"""Refuse, inside a pipeline pod, the settings that would lose a run's data without a word.

On a laptop a SQLite tracking store and Ray Train checkpoints under ``work_dir`` are the
right defaults. In a pod they are not: the pod's filesystem goes when the task ends, so every
task would log to its own throwaway MLflow database (runs, registry and test-split ledger
gone, the gate never seeing a champion), and a retried training task would start from
scratch while claiming to resume. So a component checks its config before any work and fails
with one ``error:`` line that names the fix.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from graft.config import GraftConfig, PipelineTaskName, StageName
from graft.config.runtime import KFP_POD_ENV
from graft.errors import ConfigError

# Stages whose work Ray Train checkpoints, and which a KFP retry reruns from the top.
CHECKPOINTED_STAGES: tuple[StageName, ...] = ("pretrain", "transfer-finetune", "tune")


def in_pipeline_pod(environ: Mapping[str, str]) -> bool:
    return any(environ.get(name) for name in KFP_POD_ENV)


def check_pipeline_pod(
    config: GraftConfig, stage: PipelineTaskName, environ: Mapping[str, str] | None = None
) -> None:
    """Raise ConfigError when ``config`` would lose data in the pipeline pod running ``stage``;
    outside a pipeline pod, do nothing."""
    env = os.environ if environ is None else environ
    if not in_pipeline_pod(env):
        return
    _refuse_pod_local_tracking(config, env)
    _refuse_pod_local_checkpoints(config, stage)


def _refuse_pod_local_tracking(config: GraftConfig, environ: Mapping[str, str]) -> None:
    if config.tracks_to_a_server(environ):
        return
    uri = config.resolved_tracking_uri(environ)
    raise ConfigError(
        f"the MLflow tracking URI is '{uri}', a file inside this pipeline pod: each task would "
        "log to its own database, and the runs, the registered models and the test-split "
        "ledger would go with the pod; set tracking.tracking_uri (or MLFLOW_TRACKING_URI in "
        "the pod) to the MLflow server, e.g. http://graft-mlflow:5000 (the chart's service)"
    )


def _refuse_pod_local_checkpoints(config: GraftConfig, stage: PipelineTaskName) -> None:
    retries = config.cluster.stages.for_stage(stage).retries
    if stage not in CHECKPOINTED_STAGES or retries == 0:
        return
    if config.ray.shared_train_storage is not None:
        return
    key = f"cluster.stages.{stage.replace('-', '_')}.retries"
    raise ConfigError(
        f"{stage} retries {retries} time(s) ({key}), but Ray Train would keep its checkpoints "
        f"under {config.work_dir}/ray inside this pod, so a retry would start from scratch: set "
        "ray.storage_uri=s3://bucket/prefix (or ray.staging_uri) so that a retried task "
        f"resumes from its last checkpoint, or set {key}=0"
    )
