"""What the Graft image carries and what it leaves out, read from the built image itself."""

import json
import subprocess

import pytest
from docker_services import Images

pytestmark = [pytest.mark.container, pytest.mark.timeout(1800)]

# What a pod runs the image with: its own user, a read-only root, a writable /tmp.
POD_FLAGS = ["--rm", "--network=host", "--read-only", "--tmpfs=/tmp", "--user=1000:1000"]

INVENTORY = """
import importlib.metadata as md, json, pathlib, sysconfig
def installed(name):
    try:
        md.version(name)
    except md.PackageNotFoundError:
        return False
    return True
site = pathlib.Path(sysconfig.get_paths()["purelib"])
print(json.dumps({
    "distributions": {name: installed(name) for name in (
        "mlflow", "mlflow-skinny", "flask", "gunicorn", "graphene", "huey", "skops",
        "uvicorn", "h11", "onnxruntime")},
    "paths": {path: (site / path).exists() for path in (
        "torch/test", "torch/include", "ray/jars", "torch/bin/test_api",
        "torch/bin/torch_shm_manager", "mlflow/server/js")},
    "fashion_mnist": pathlib.Path(
        "/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz").exists(),
}))
"""

# A laptop's install without the server extra still tracks to a local SQLite store.
SQLITE_RUN = """
import mlflow, torch
mlflow.set_tracking_uri("sqlite:////tmp/mlflow.db")
with mlflow.start_run() as run:
    mlflow.log_metric("loss", float(torch.nn.Linear(2, 1)(torch.ones(1, 2)).sum()))
print(mlflow.get_run(run.info.run_id).info.status)
"""


def in_image(image: str, *args: str, entrypoint: str = "python") -> subprocess.CompletedProcess:
    return subprocess.run(
        ["docker", "run", *POD_FLAGS, f"--entrypoint={entrypoint}", image, *args],
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_the_image_has_mlflow_s_client_and_not_its_server_and_is_cut(images: Images) -> None:
    result = in_image(images.graft, "-c", INVENTORY)
    assert result.returncode == 0, result.stderr
    found = json.loads(result.stdout)
    assert found["distributions"] == {
        "mlflow": False,
        "mlflow-skinny": True,
        "flask": False,
        "gunicorn": False,
        "graphene": False,
        "huey": False,
        "skops": False,
        # what `graft serve` (the chart's serving Deployment) runs on
        "uvicorn": True,
        "h11": True,
        "onnxruntime": True,
    }
    assert found["paths"] == {
        "torch/test": False,
        "torch/include": False,
        "ray/jars": False,
        "torch/bin/test_api": False,
        # DataLoader workers sharing tensors through files need it
        "torch/bin/torch_shm_manager": True,
        "mlflow/server/js": False,
    }
    assert found["fashion_mnist"], "builtin:fashion_mnist reads Debian's package in the image"


def test_the_image_tracks_to_sqlite_without_the_server(images: Images) -> None:
    result = in_image(images.graft, "-c", SQLITE_RUN)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "FINISHED"


def test_graft_ui_in_the_image_names_the_missing_server(images: Images) -> None:
    result = in_image(images.graft, "ui", "--work-dir", "/tmp", entrypoint="graft")
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    # one error, however wide the terminal: rich wraps it at 80 columns
    error = " ".join(result.stderr.split())
    assert error == (
        "error: the MLflow UI needs MLflow's server, which this install leaves out (the images "
        "carry only its client): pip install 'graft[server]'"
    ), result.stderr
