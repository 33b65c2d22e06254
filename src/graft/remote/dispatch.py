"""Run a training stage here or away from this process, as the config's ``ray`` block says:
in process, as a Ray job on an existing cluster (``ray.mode: address``, ``submit: job``) or
as a KubeRay RayJob (``ray.mode: rayjob``). The KFP adapters and the CLI call the training
stages through :func:`pretrain`, :func:`finetune` and :func:`tune`.

Both carry the stage's folders through ``ray.staging_uri`` when it is set
(:mod:`graft.remote.staging`), and both need a tracking server the cluster's pods can reach:
that, the staging bucket and Ray Train's checkpoint storage are checked here before anything
is started.
"""

from __future__ import annotations

from typing import Any

from graft import stages
from graft.config import GraftConfig
from graft.errors import ConfigError
from graft.io import storage
from graft.remote.command import RayStage, StageInputs
from graft.remote.staging import download_output, upload_inputs


def pretrain(
    config: GraftConfig, dataset_dir: str, output_dir: str, parent_run_id: str
) -> stages.TrainOutput:
    if config.ray.runs_stages_elsewhere:
        inputs = StageInputs(dataset_dir, output_dir, parent_run_id)
        return stages.TrainOutput(**run_stage_on_cluster(config, "pretrain", inputs))
    return stages.pretrain.run(config, dataset_dir, output_dir, parent_run_id)


def finetune(
    config: GraftConfig,
    dataset_dir: str,
    pretrained_dir: str,
    output_dir: str,
    parent_run_id: str,
) -> stages.TrainOutput:
    if config.ray.runs_stages_elsewhere:
        inputs = StageInputs(dataset_dir, output_dir, parent_run_id, pretrained_dir)
        return stages.TrainOutput(**run_stage_on_cluster(config, "transfer-finetune", inputs))
    return stages.finetune.run(config, dataset_dir, pretrained_dir, output_dir, parent_run_id)


def tune(
    config: GraftConfig,
    dataset_dir: str,
    pretrained_dir: str,
    finetuned_dir: str,
    output_dir: str,
    parent_run_id: str,
) -> stages.TuneOutput:
    if config.ray.runs_stages_elsewhere:
        inputs = StageInputs(dataset_dir, output_dir, parent_run_id, pretrained_dir, finetuned_dir)
        return stages.TuneOutput(**run_stage_on_cluster(config, "tune", inputs))
    return stages.tune.run(
        config, dataset_dir, pretrained_dir, finetuned_dir, output_dir, parent_run_id
    )


def run_stage_on_cluster(
    config: GraftConfig, stage: RayStage, inputs: StageInputs
) -> dict[str, Any]:
    """The stage's output dataclass as a dict, its folders on this machine."""
    check_cluster_can_track(config)
    shared = config.ray.shared_train_storage
    if shared and storage.is_s3(shared):
        storage.check_writable(shared)  # the job would fail at its first checkpoint
    staging = config.ray.staging_uri
    remote = upload_inputs(inputs, staging, stage) if staging else inputs
    if config.ray.mode == "rayjob":
        from graft.remote.kuberay import run_stage_as_rayjob

        result = run_stage_as_rayjob(config, stage, remote)
    else:
        from graft.remote.ray_job import run_stage_as_job

        result = run_stage_as_job(config, stage, remote)
    return download_output(remote, inputs, result) if staging else result


def check_cluster_can_track(config: GraftConfig) -> None:
    """A stage whose pods share no filesystem with this process (mode=rayjob, or any staged
    stage) must log to a tracking server: a file or SQLite store would stay in the pod."""
    if config.ray.mode != "rayjob" and not config.ray.staging_uri:
        return
    if not config.tracks_to_a_server():
        uri = config.resolved_tracking_uri()
        raise ConfigError(
            f"tracking.tracking_uri is '{uri}', which the cluster's pods cannot write to; a "
            "stage run there (ray.mode=rayjob or ray.staging_uri set) needs an MLflow tracking "
            "server: set tracking.tracking_uri=http://<mlflow>:5000 (the chart's service)"
        )
