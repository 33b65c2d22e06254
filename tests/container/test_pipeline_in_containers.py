"""The compiled tiny pipeline with every task in the Graft image (KFP's DockerRunner), against
MLflow, Postgres and S3 running as containers: what a cluster does, short of Kubernetes."""

from pathlib import Path

import boto3
import pytest
from docker_services import BUCKET, ContainerCluster, Images
from kfp import local
from mlflow.tracking import MlflowClient

from graft.config import load_config
from graft.kfp.components import make_components
from graft.kfp.container_run import container_run_args, prepare_pipeline_root, run_in_containers
from pipeline_runs import pipeline_runs
from servers import S3_ACCESS_KEY, S3_SECRET_KEY

pytestmark = [pytest.mark.container, pytest.mark.timeout(1800)]

STAGES = {"monitor", "data-prep", "pretrain", "transfer-finetune", "tune", "evaluate", "export"}


def test_the_tiny_pipeline_runs_in_containers_and_keeps_its_data_on_the_servers(
    images: Images, container_cluster: ContainerCluster, tmp_path: Path
) -> None:
    config = load_config(
        preset="tiny",
        overrides=[
            "tracking.experiment_name=containers",
            "export.model_name=graft-containers",
            f"ray.storage_uri=s3://{BUCKET}/ray",
        ],
    )
    summary = run_in_containers(
        config, images.graft, container_cluster.pod_environment(), tmp_path / "kfp"
    )
    assert summary["gate_passed"] is True
    assert set(summary["aliases"]) == {"challenger", "champion"}

    # every run, the registry and its aliases are on the server, not in a container
    client = MlflowClient(container_cluster.tracking_uri, container_cluster.tracking_uri)
    runs = pipeline_runs(client, "containers")
    children = runs.stages
    assert runs.parent.info.status == "FINISHED"
    assert set(children) == STAGES
    assert all(r.info.status == "FINISHED" for r in children.values())
    assert len(runs.trials) == config.tune.num_samples
    champion = client.get_model_version_by_alias("graft-containers", "champion")
    assert champion.version == summary["model_version"]
    assert champion.run_id == children["export"].info.run_id
    assert client.get_model_version_by_alias("graft-containers", "challenger").version == (
        champion.version
    )

    # Ray Train's checkpoints are on S3, where a retried task's new pod finds them
    s3 = boto3.client(
        "s3",
        endpoint_url=container_cluster.s3_endpoint,
        aws_access_key_id=S3_ACCESS_KEY,
        aws_secret_access_key=S3_SECRET_KEY,
        region_name="us-east-1",
    )
    keys = [
        item["Key"]
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix="ray/")
        for item in page.get("Contents", [])
    ]
    checkpoints = {key.split("/")[1] for key in keys if "/checkpoint_" in key}
    assert len(checkpoints) >= 2, sorted(keys)[:20]  # pretrain's fit and finetune's, at least
    # and MLflow's artifacts (the registered model's files) went through the server to S3
    assert any(
        key.startswith("mlflow/")
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix="mlflow/")
        for key in (item["Key"] for item in page.get("Contents", []))
    )


def test_a_pod_with_no_tracking_server_ends_with_one_error_line(
    images: Images,
    container_cluster: ContainerCluster,
    tmp_path: Path,
    capfd: pytest.CaptureFixture[str],
) -> None:
    environment = container_cluster.pod_environment()
    del environment["MLFLOW_TRACKING_URI"]
    local.init(
        runner=local.DockerRunner(**container_run_args(environment)),
        pipeline_root=str(prepare_pipeline_root(tmp_path / "kfp")),
        raise_on_error=False,
    )
    config = load_config(preset="tiny", overrides=[f"ray.storage_uri=s3://{BUCKET}/ray"])
    task = make_components(images.graft)["open-run"](
        config_json=config.to_json(), kfp_run_id="no-server"
    )
    logs = capfd.readouterr()
    # KFP's runner indents the container's lines
    lines = [line.strip() for line in (logs.out + logs.err).splitlines()]
    errors = [line for line in lines if line.startswith("error:")]
    assert len(errors) == 1, logs.out[-3000:]
    assert "inside this pipeline pod" in errors[0] and "MLFLOW_TRACKING_URI" in errors[0]
    assert "Traceback" not in logs.out + logs.err
    assert task is not None
