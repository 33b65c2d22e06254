"""In a pipeline pod, settings that would lose the run's data end the task with one line."""

import subprocess
import sys
from pathlib import Path

import pytest

from graft.config import GraftConfig, load_config
from graft.errors import ConfigError
from graft.kfp.pod_guard import check_pipeline_pod

IN_POD = {"KFP_POD_NAME": "graft-training-x7k2-pretrain", "KFP_POD_UID": "0b7c"}
SERVER = "tracking.tracking_uri=http://graft-mlflow:5000"
SHARED = "ray.storage_uri=s3://graft/checkpoints"


def _config(*overrides: str) -> GraftConfig:
    return load_config(preset="tiny", overrides=list(overrides))


def test_outside_a_pipeline_pod_the_local_defaults_stand() -> None:
    check_pipeline_pod(_config(), "pretrain", environ={})


def test_a_sqlite_store_in_a_pipeline_pod_is_refused_with_the_fix() -> None:
    with pytest.raises(ConfigError) as error:
        check_pipeline_pod(_config(SHARED), "data-prep", environ=IN_POD)
    message = str(error.value)
    assert "sqlite:///" in message and "inside this pipeline pod" in message
    assert "MLFLOW_TRACKING_URI" in message and "tracking.tracking_uri" in message


@pytest.mark.parametrize("uri", ["file:///tmp/mlruns", "./mlruns", "sqlite:///mlflow.db"])
def test_any_pod_local_tracking_store_is_refused(uri: str) -> None:
    with pytest.raises(ConfigError, match="inside this pipeline pod"):
        check_pipeline_pod(_config(SHARED, f"tracking.tracking_uri={uri}"), "tune", IN_POD)


def test_mlflow_tracking_uri_in_the_pod_satisfies_the_check() -> None:
    env = {**IN_POD, "MLFLOW_TRACKING_URI": "http://graft-mlflow.kubeflow.svc:5000"}
    check_pipeline_pod(_config(SHARED), "pretrain", environ=env)


def test_a_retried_training_stage_needs_checkpoints_that_outlive_the_pod() -> None:
    with pytest.raises(ConfigError) as error:
        check_pipeline_pod(_config(SERVER), "pretrain", environ=IN_POD)
    message = str(error.value)
    assert "cluster.stages.pretrain.retries" in message and "ray.storage_uri=s3://" in message
    # the fixes the message names each satisfy the check
    check_pipeline_pod(_config(SERVER, SHARED), "pretrain", environ=IN_POD)
    check_pipeline_pod(
        _config(SERVER, "ray.staging_uri=s3://graft/staging"), "pretrain", environ=IN_POD
    )
    check_pipeline_pod(
        _config(SERVER, "cluster.stages.pretrain.retries=0"), "pretrain", environ=IN_POD
    )


@pytest.mark.parametrize("stage", ["data-prep", "evaluate", "export"])
def test_stages_without_checkpoints_need_no_shared_storage(stage: str) -> None:
    check_pipeline_pod(_config(SERVER, "cluster.stages.evaluate.retries=3"), stage, IN_POD)


def test_the_component_ends_with_one_error_line_and_no_traceback(tmp_path: Path) -> None:
    """What the task's log shows: the adapter the component calls, run as the pod runs it."""
    script = (
        "from graft.config import load_config\n"
        "from graft.kfp import adapters\n"
        "config = load_config(preset='tiny')\n"
        f"adapters.pretrain(config.to_json(), 'digest', '{tmp_path}/d', '{tmp_path}/m', None)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        env={"KFP_POD_NAME": "p", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 1
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: the MLflow tracking URI is 'sqlite")
    assert not (tmp_path / "m").exists()  # refused before any work
