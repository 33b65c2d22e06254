"""Kubernetes settings from the config reach the compiled IR, task by task."""

from pathlib import Path

import pytest
from compiled_pipeline import compile_tiny, executor_label, pipeline_tasks, stage_tasks

from graft.config import load_config
from graft.errors import ConfigError


def _executor(spec: dict, task: str) -> tuple[str, dict]:
    label = executor_label(pipeline_tasks(spec)[task])
    return label, spec["deploymentSpec"]["executors"][label]["container"]


def test_resources_accelerators_placement_and_retries_per_task(tmp_path: Path) -> None:
    spec, platform = compile_tiny(
        tmp_path,
        "cluster.stages.pretrain.accelerator_type=nvidia.com/gpu",
        "cluster.stages.pretrain.accelerator_count=2",
        "cluster.stages.pretrain.node_selector={pool: gpu}",
        "cluster.stages.pretrain.tolerations=[{key: nvidia.com/gpu, operator: Exists, "
        "effect: NoSchedule}]",
        "cluster.stages.evaluate.memory_limit=3Gi",
    )
    name, container = _executor(spec, "pretrain")
    resources = container["resources"]
    assert resources["accelerator"]["resourceCount"] == "2"
    assert resources["accelerator"]["resourceType"] == "nvidia.com/gpu"
    assert resources["resourceCpuRequest"] == "2"
    assert resources["resourceMemoryLimit"] == "16Gi"
    assert platform[name]["nodeSelector"]["labels"] == {"pool": "gpu"}
    assert platform[name]["tolerations"] == [
        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
    ]
    tasks = stage_tasks(spec)
    assert tasks["pretrain"]["retryPolicy"]["maxRetryCount"] == 2
    assert "retryPolicy" not in tasks["evaluate"]
    eval_name, eval_container = _executor(spec, "evaluate")
    assert eval_container["resources"]["resourceMemoryLimit"] == "3Gi"
    assert "accelerator" not in eval_container["resources"]
    assert "nodeSelector" not in platform[eval_name]
    assert container["image"] == "registry.example/graft:test"


def _secret(executor: dict, name: str) -> dict:
    (secret,) = [s for s in executor.get("secretAsEnv", []) if s["secretName"] == name]
    return secret


def test_s3_credentials_come_from_a_secret_on_every_task(tmp_path: Path) -> None:
    _, platform = compile_tiny(tmp_path)
    assert len(platform) == 10  # open-run, monitor, the stages (both backbones), exit task
    for executor in platform.values():
        secret = _secret(executor, "graft-s3")
        envs = {pair["envVar"] for pair in secret["keyToEnv"]}
        assert envs == {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}


def test_the_mlflow_user_comes_from_a_required_secret_on_every_task(tmp_path: Path) -> None:
    _, platform = compile_tiny(tmp_path)
    assert len(platform) == 10
    assert "exec-finalize-run" in platform  # the exit task ends MLflow runs as this user too
    for executor in platform.values():
        secret = _secret(executor, "graft-mlflow-auth")
        # MLflow's client reads these itself; the tracking URI carries no credentials
        assert {(p["secretKey"], p["envVar"]) for p in secret["keyToEnv"]} == {
            ("username", "MLFLOW_TRACKING_USERNAME"),
            ("password", "MLFLOW_TRACKING_PASSWORD"),
        }
        # the chart's MLflow answers 401 without a user: a missing Secret stops the pod
        assert secret["optional"] is False


def test_no_secret_when_disabled(tmp_path: Path) -> None:
    _, platform = compile_tiny(tmp_path, "cluster.s3_secret=null", "cluster.mlflow_secret=null")
    assert all("secretAsEnv" not in executor for executor in platform.values())


def test_the_s3_secret_is_optional_only_while_the_config_names_no_s3_location(
    tmp_path: Path,
) -> None:
    _, platform = compile_tiny(tmp_path)
    assert all(_secret(executor, "graft-s3")["optional"] for executor in platform.values())
    _, platform = compile_tiny(tmp_path, "ray.storage_uri=s3://graft/checkpoints")
    # a pod whose Secret is missing must not start without keys and fail at its first upload
    assert not any(_secret(e, "graft-s3")["optional"] for e in platform.values())


def test_image_pull_secrets_and_memory_backed_shm_on_every_task(tmp_path: Path) -> None:
    _, platform = compile_tiny(tmp_path, "cluster.image_pull_secrets=[regcred, mirror.pull]")
    assert len(platform) == 10
    for executor in platform.values():
        assert [s["secretName"] for s in executor["imagePullSecret"]] == ["regcred", "mirror.pull"]
        # Ray's object store needs more than a container's 64 MiB /dev/shm
        assert executor["emptyDirMounts"] == [
            {"volumeName": "dshm", "mountPath": "/dev/shm", "medium": "Memory", "sizeLimit": "2Gi"}
        ]


def test_no_pull_secrets_by_default_and_no_shm_when_disabled(tmp_path: Path) -> None:
    _, platform = compile_tiny(tmp_path, "cluster.shm_size=null")
    assert all("imagePullSecret" not in e and "emptyDirMounts" not in e for e in platform.values())


@pytest.mark.parametrize(
    ("override", "fix"),
    [
        ("cluster.shm_size=2 GB", "write e.g. 2Gi or 512Mi"),
        ("cluster.image_pull_secrets=[RegCred]", "not a Kubernetes Secret name"),
        ("cluster.s3_secret=S3_Keys", r"cluster.s3_secret: 'S3_Keys' is not a Kubernetes"),
        ("cluster.mlflow_secret=mlflow user", r"cluster.mlflow_secret: 'mlflow user' is not"),
        ("cluster.ray_token_secret=Ray", r"cluster.ray_token_secret: 'Ray' is not"),
    ],
)
def test_bad_pod_settings_fail_at_load_with_the_fix(override: str, fix: str) -> None:
    with pytest.raises(ConfigError, match=fix) as refused:
        load_config(preset="tiny", overrides=[override])
    assert "\n" not in str(refused.value)
