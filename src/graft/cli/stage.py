"""``graft stage`` and ``graft rayjob``: one training stage run here (or as the config's ``ray``
block sends it to a cluster), or printed as a KubeRay RayJob."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, cast

import typer

from graft.cli.options import (
    ConfigOption,
    PresetOption,
    SetOption,
    config_to_run_here,
    layered_config,
)
from graft.config import DEFAULT_IMAGE, GraftConfig
from graft.errors import GraftError
from graft.remote.command import RayStage, StageInputs

if TYPE_CHECKING:
    from graft.stages import TrainOutput, TuneOutput

StageNameArgument = Annotated[
    str, typer.Argument(help="The training stage: pretrain, transfer-finetune or tune.")
]
DatasetDirOption = Annotated[
    str, typer.Option("--dataset-dir", help="Prepared dataset folder (data-prep's output).")
]
StageOutputOption = Annotated[
    str, typer.Option("--output-dir", "-o", help="Where the stage writes its model.")
]
ParentRunOption = Annotated[
    str,
    typer.Option(
        "--parent-run-id", help="MLflow run id of the pipeline run (data-prep's parent_run_id)."
    ),
]
PretrainedDirOption = Annotated[
    str,
    typer.Option(help="Pretrained model folder: transfer-finetune and tune only."),
]
FinetunedDirOption = Annotated[
    str, typer.Option(help="tune only: the untuned finetuned model to compare with (optional).")
]
ConfigJsonOption = Annotated[
    str | None,
    typer.Option(
        "--config-json",
        help="The resolved config as JSON (what a submitted job receives), instead of "
        "--config/--preset/--set.",
    ),
]
RayImageOption = Annotated[
    str | None,
    typer.Option(help="Image of the Ray pods. Default: ray.rayjob.image, else compile's."),
]


def stage_(
    name: StageNameArgument,
    dataset_dir: DatasetDirOption,
    output_dir: StageOutputOption,
    parent_run_id: ParentRunOption,
    pretrained_dir: PretrainedDirOption = "",
    finetuned_dir: FinetunedDirOption = "",
    config_json: ConfigJsonOption = None,
    config: ConfigOption = None,
    preset: PresetOption = None,
    set_: SetOption = None,
) -> None:
    """Run one training stage and print its output as a `GRAFT_STAGE_RESULT {json}` line.

    The stage runs here as the config's `ray` block says: local Ray, a driver of an existing
    cluster (ray.mode=address, ray.submit=driver), or a Ray job submitted to that cluster
    (ray.submit=job), or a KubeRay RayJob created through the Kubernetes API (ray.mode=rayjob);
    a job's log is relayed here. Jobs and RayJobs run this same command on the cluster as a
    driver; s3:// folders (ray.staging_uri) are downloaded first and the output uploaded after.
    """
    from dataclasses import asdict

    from graft.config import config_from_json
    from graft.io.ray_runtime import shutdown_ray
    from graft.remote.command import result_line
    from graft.remote.staging import localized, publish_result

    if config_json is not None and (config or preset or set_):
        raise GraftError("pass either --config-json or --config/--preset/--set, not both")
    resolved = (
        config_from_json(config_json)
        if config_json is not None
        else config_to_run_here(config, preset, set_)
    )
    stage, requested = _stage_inputs(
        name, dataset_dir, output_dir, parent_run_id, pretrained_dir, finetuned_dir
    )
    # s3:// folders (ray.staging_uri) are worked on as local copies; the output goes back up
    with localized(requested) as inputs:
        try:
            output = _run_stage(stage, resolved, inputs)
        finally:
            shutdown_ray()
    typer.echo(result_line(publish_result(asdict(output), requested, inputs)))


def _run_stage(
    stage: RayStage, config: GraftConfig, inputs: StageInputs
) -> TrainOutput | TuneOutput:
    from graft.remote import dispatch

    if stage == "pretrain":
        return dispatch.pretrain(
            config, inputs.dataset_dir, inputs.output_dir, inputs.parent_run_id
        )
    if stage == "transfer-finetune":
        return dispatch.finetune(
            config,
            inputs.dataset_dir,
            inputs.pretrained_dir,
            inputs.output_dir,
            inputs.parent_run_id,
        )
    return dispatch.tune(
        config,
        inputs.dataset_dir,
        inputs.pretrained_dir,
        inputs.finetuned_dir,
        inputs.output_dir,
        inputs.parent_run_id,
    )


def rayjob(
    name: StageNameArgument,
    dataset_dir: DatasetDirOption,
    output_dir: StageOutputOption,
    parent_run_id: ParentRunOption,
    pretrained_dir: PretrainedDirOption = "",
    finetuned_dir: FinetunedDirOption = "",
    image: RayImageOption = None,
    config: ConfigOption = None,
    preset: PresetOption = None,
    set_: SetOption = None,
) -> None:
    """Print a KubeRay RayJob (ray.io/v1) that runs one training stage on its own cluster.

    Apply it with `graft rayjob pretrain ... | kubectl apply -f -`. The head runs the stage's
    driver; one worker pod per Ray Train worker takes the stage's `cluster.stages` resources;
    `ray.rayjob` sets the image, TTL, deadline and retries. The folders must be paths the
    cluster's pods can read (a shared volume or s3://).
    """
    from graft.remote.kuberay_manifest import rayjob_yaml

    resolved = layered_config(config, preset, set_)
    stage, inputs = _stage_inputs(
        name, dataset_dir, output_dir, parent_run_id, pretrained_dir, finetuned_dir
    )
    chosen = image or resolved.ray.rayjob.image or DEFAULT_IMAGE
    typer.echo(rayjob_yaml(resolved, stage, inputs, chosen), nl=False)


def _stage_inputs(
    name: str,
    dataset_dir: str,
    output_dir: str,
    parent_run_id: str,
    pretrained_dir: str,
    finetuned_dir: str,
) -> tuple[RayStage, StageInputs]:
    inputs = StageInputs(dataset_dir, output_dir, parent_run_id, pretrained_dir, finetuned_dir)
    inputs.check(name)  # refuses a stage that is not one of RayStage's
    return cast(RayStage, name), inputs
