"""A pretrain task whose container is killed mid-run, run again as KFP retries it: the new
container resumes from the checkpoint on S3, and ends with the weights of a run never killed."""

import json
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import boto3
import pytest
import torch
from docker_services import (
    BUCKET,
    ContainerCluster,
    Images,
    logged,
    stage_runs,
)
from kfp import local
from pretrain_only import pretrain_pipeline
from ray.train.v2._internal.constants import CHECKPOINT_MANAGER_SNAPSHOT_FILENAME

from graft.config import GraftConfig, load_config
from graft.kfp.components import make_components
from graft.kfp.container_run import container_run_args, prepare_pipeline_root
from graft.train.model_dir import load_checkpoint_model
from servers import S3_ACCESS_KEY, S3_SECRET_KEY

pytestmark = [pytest.mark.container, pytest.mark.timeout(1800)]

PREFIX = "ray-kill"


def _registered_checkpoint(cluster: ContainerCluster) -> bool:
    """Whether Ray Train has recorded a checkpoint in its run state on S3, which is what a new
    container resumes from. A checkpoint's files appear before that record (Ray Train uploads
    them, then the controller writes its snapshot): a kill between the two would leave a retry
    nothing to resume, so waiting for the files alone made this test flaky."""
    s3 = boto3.client(
        "s3",
        endpoint_url=cluster.s3_endpoint,
        aws_access_key_id=S3_ACCESS_KEY,
        aws_secret_access_key=S3_SECRET_KEY,
        region_name="us-east-1",
    )
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=f"{PREFIX}/")
    snapshots = [
        item["Key"]
        for page in pages
        for item in page.get("Contents", [])
        if item["Key"].endswith(f"/{CHECKPOINT_MANAGER_SNAPSHOT_FILENAME}")
    ]
    for key in snapshots:
        state = json.loads(s3.get_object(Bucket=BUCKET, Key=key)["Body"].read())
        if state.get("latest_checkpoint_result") is not None:
            return True
    return False


def _task_containers(image: str) -> list[str]:
    listed = subprocess.run(
        ["docker", "ps", "-q", "--filter", f"ancestor={image}"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return listed.stdout.split()


def _prepare(components: dict[str, Any], config: GraftConfig, run_id: str) -> dict[str, Any]:
    """open-run, then data-prep: pretrain's inputs, and the parent run it logs under."""
    opened = components["open-run"](config_json=config.to_json(), kfp_run_id=run_id)
    digest = opened.outputs["data_digest"]
    prep = components["data-prep"](config_json=config.to_json(), data_digest=digest)
    return {
        "config_json": config.to_json(),
        "data_digest": digest,
        "dataset_uri": prep.outputs["dataset"].uri,
        "parent": opened.outputs["Output"],
    }


def test_a_killed_pretrain_container_resumes_from_its_s3_checkpoint(
    images: Images, container_cluster: ContainerCluster, tmp_path: Path
) -> None:
    config = load_config(
        preset="tiny",
        overrides=[
            "tracking.experiment_name=container-kill",
            f"ray.storage_uri=s3://{BUCKET}/{PREFIX}",
            "pretrain.epochs=40",  # long enough for the kill to land mid-run
            "pretrain.early_stopping.enabled=false",
        ],
    )
    local.init(
        runner=local.DockerRunner(**container_run_args(container_cluster.pod_environment())),
        pipeline_root=str(prepare_pipeline_root(tmp_path / "kfp")),
        raise_on_error=False,
    )
    components = make_components(images.graft)
    pretrain = pretrain_pipeline(components)
    prep = _prepare(components, config, "killed")
    inputs = {key: prep[key] for key in ("config_json", "data_digest", "dataset_uri")}

    killed: list[str] = []

    def kill_after_the_first_registered_checkpoint() -> None:
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline and not _registered_checkpoint(container_cluster):
            time.sleep(1)
        killed.extend(_task_containers(images.graft))
        for container in killed:
            subprocess.run(["docker", "kill", container], check=False, timeout=60)

    killer = threading.Thread(target=kill_after_the_first_registered_checkpoint, daemon=True)
    killer.start()
    pretrain(**inputs)  # fails: its container is killed
    killer.join(timeout=60)
    assert killed, "no pretrain container was running when its first checkpoint was recorded"

    # KFP's retry: the same task, same inputs, a new container with an empty filesystem
    resumed = pretrain(**inputs)
    killed_run, resumed_run = stage_runs(container_cluster, prep["parent"], "pretrain")
    assert killed_run.info.status == "RUNNING"  # SIGKILL: nothing in the container ended it
    assert resumed_run.info.status == "FINISHED"
    # it resumed: its first epoch is the one after the latest checkpoint, not epoch 1
    epochs = logged(container_cluster, resumed_run.info.run_id, "epoch")
    assert epochs[0] > 1, epochs
    assert epochs[-1] == config.pretrain.epochs
    (resumed_from,) = logged(container_cluster, resumed_run.info.run_id, "resumed_from_epoch")
    assert resumed_from == epochs[0] - 1

    # a new parent run: the newest one tagged with this data and config takes pretrain's run
    clean_prep = _prepare(components, config, "uninterrupted")
    clean = pretrain(**{key: clean_prep[key] for key in inputs})
    resumed_model, _ = load_checkpoint_model(resumed.output.path)
    clean_model, _ = load_checkpoint_model(clean.output.path)
    for (name, a), (_, b) in zip(
        clean_model.state_dict().items(), resumed_model.state_dict().items(), strict=True
    ):
        assert torch.allclose(a, b, atol=1e-6), name
