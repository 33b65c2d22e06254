"""A cluster on one machine, as containers: S3 (SeaweedFS), Postgres, and the MLflow server
from its own image, on the Docker engine that `images/engine.sh` starts.

Every container runs with the host's network (the engine has no bridge), on free ports of
127.0.0.1, so traffic reaches only the servers these fixtures start. The pipeline's tasks get
these services the way a cluster's pods do: from environment variables.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from servers import (
    S3_ACCESS_KEY,
    S3_SECRET_KEY,
    WEED_PORT_COUNT,
    answers_http,
    mlflow_server_args,
    s3_answers,
    s3_identities,
    serve_on_free_ports,
    weed_mini_args,
)

REPO = Path(__file__).resolve().parents[2]
SERVICES_IMAGE = "graft-test-services:1"
PG_PASSWORD = "graft-test-db-password"
BUCKET = "graft"


def _make(target: str, timeout: float) -> dict[str, str]:
    """Runs a Makefile target; returns the variables it prints with `make -s print-<var>`."""
    subprocess.run(["make", "-s", target], cwd=REPO, check=True, timeout=timeout)
    names = ("IMAGE", "MLFLOW_IMAGE", "PYTHON_BASE")
    values = subprocess.run(
        ["make", "-s", *(f"print-{name}" for name in names)],
        cwd=REPO,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()
    return dict(zip(names, values, strict=True))


@dataclass(frozen=True)
class Images:
    graft: str
    mlflow: str
    services: str


@pytest.fixture(scope="session")
def images(tmp_path_factory: pytest.TempPathFactory) -> Images:
    return build_images(tmp_path_factory.mktemp("services-image"))


def build_images(context: Path) -> Images:
    """`make image` (engine, stand-in base, both images), then the test services image (its
    build context made in ``context``)."""
    built = _make("image", timeout=1500)
    context.mkdir(parents=True, exist_ok=True)
    weed = shutil.which("weed") or str(Path(sys.executable).parent / "weed")
    shutil.copy(weed, context / "weed")
    shutil.copy(REPO / "tests/container/Dockerfile.services", context / "Dockerfile")
    subprocess.run(
        [
            "docker",
            "build",
            "--network",
            "host",
            "-q",
            "--build-arg",
            f"PYTHON_IMAGE={built['PYTHON_BASE']}",
            "-t",
            SERVICES_IMAGE,
            str(context),
        ],
        env={"DOCKER_BUILDKIT": "0", "PATH": "/usr/local/bin:/usr/bin:/bin"},
        check=True,
        timeout=600,
        capture_output=True,
    )
    return Images(built["IMAGE"], built["MLFLOW_IMAGE"], SERVICES_IMAGE)


def docker_run(name: str, image: str, *args: str, env: dict[str, str] | None = None) -> list[str]:
    """`docker run` in the foreground (the fixture's process is the container's lifetime)."""
    flags = [f"--env={key}={value}" for key, value in (env or {}).items()]
    return ["docker", "run", "--rm", f"--name={name}", "--network=host", *flags, image, *args]


def remove_container(name: str) -> None:
    subprocess.run(["docker", "rm", "-f", name], capture_output=True, check=False, timeout=60)


@dataclass(frozen=True)
class ContainerCluster:
    s3_endpoint: str
    tracking_uri: str
    containers: tuple[str, ...]

    def pod_environment(self) -> dict[str, str]:
        """What a pipeline pod's environment holds on a cluster: the services' addresses and
        the S3 keys (from the Secret), and the KFP backend's pod name."""
        return {
            "MLFLOW_TRACKING_URI": self.tracking_uri,
            "AWS_ENDPOINT_URL": self.s3_endpoint,
            "AWS_ACCESS_KEY_ID": S3_ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": S3_SECRET_KEY,
            "AWS_DEFAULT_REGION": "us-east-1",
            "KFP_POD_NAME": "graft-container-tier",
            "HOME": "/home/graft",
            "RAY_TMPDIR": "/tmp/ray",
        }


def _serve_container(
    name: str,
    command: Callable[[list[int]], list[str]],
    ready: Callable[[list[int]], bool],
    ports: int,
    timeout: float,
) -> tuple[subprocess.Popen[bytes], list[int]]:
    def fresh(picked: list[int]) -> list[str]:
        remove_container(name)  # a container of a lost port race
        return command(picked)

    return serve_on_free_ports(fresh, ready, ports=ports, timeout=timeout)


def _pg_ready(name: str, port: int) -> bool:
    result = subprocess.run(
        ["docker", "exec", name, "pg_isready", "-h", "127.0.0.1", "-p", str(port)],
        capture_output=True,
        check=False,
        timeout=30,
    )
    return result.returncode == 0


@pytest.fixture(scope="session")
def container_cluster(images: Images) -> Iterator[ContainerCluster]:
    with running_cluster(images) as cluster:
        yield cluster


@contextmanager
def running_cluster(images: Images) -> Iterator[ContainerCluster]:
    """S3, Postgres and the MLflow server as containers, removed when the block ends."""
    run_id = uuid.uuid4().hex[:8]
    s3_name, pg_name, mlflow_name = (f"graft-{part}-{run_id}" for part in ("s3", "pg", "mlflow"))
    processes: list[subprocess.Popen[bytes]] = []
    try:
        s3_config = s3_identities()

        def s3_command(ports: list[int]) -> list[str]:
            weed = " ".join(weed_mini_args(Path("/tmp/s3"), Path("/tmp/s3.json"), ports))
            script = (
                "mkdir -p /tmp/s3/data /tmp/s3/logs && "
                f'printf %s "$S3_CONFIG" > /tmp/s3.json && exec weed {weed}'
            )
            return docker_run(
                s3_name, images.services, "sh", "-c", script, env={"S3_CONFIG": s3_config}
            )

        s3, s3_ports = _serve_container(
            s3_name,
            s3_command,
            lambda ports: s3_answers(f"http://127.0.0.1:{ports[0]}"),
            ports=WEED_PORT_COUNT,
            timeout=90,
        )
        processes.append(s3)
        s3_endpoint = f"http://127.0.0.1:{s3_ports[0]}"

        def pg_command(ports: list[int]) -> list[str]:
            script = (
                'printf %s "$PG_PASSWORD" > /tmp/pw && initdb -D /tmp/pg -U mlflow '
                "--auth=scram-sha-256 --pwfile=/tmp/pw >/dev/null && rm /tmp/pw && "
                f"exec postgres -D /tmp/pg -h 127.0.0.1 -p {ports[0]} -k /tmp"
            )
            return docker_run(
                pg_name, images.services, "sh", "-c", script, env={"PG_PASSWORD": PG_PASSWORD}
            )

        pg, (pg_port,) = _serve_container(
            pg_name, pg_command, lambda ports: _pg_ready(pg_name, ports[0]), ports=1, timeout=90
        )
        processes.append(pg)

        import boto3

        boto3.client(
            "s3",
            endpoint_url=s3_endpoint,
            aws_access_key_id=S3_ACCESS_KEY,
            aws_secret_access_key=S3_SECRET_KEY,
            region_name="us-east-1",
        ).create_bucket(Bucket=BUCKET)

        def mlflow_command(ports: list[int]) -> list[str]:
            return docker_run(
                mlflow_name,
                images.mlflow,
                *mlflow_server_args(
                    f"postgresql+psycopg2://mlflow:{PG_PASSWORD}@127.0.0.1:{pg_port}/postgres",
                    f"s3://{BUCKET}/mlflow",
                    ports[0],
                ),
                env={
                    "MLFLOW_S3_ENDPOINT_URL": s3_endpoint,
                    "AWS_ACCESS_KEY_ID": S3_ACCESS_KEY,
                    "AWS_SECRET_ACCESS_KEY": S3_SECRET_KEY,
                    "AWS_DEFAULT_REGION": "us-east-1",
                },
            )

        mlflow, (mlflow_port,) = _serve_container(
            mlflow_name,
            mlflow_command,
            lambda ports: answers_http(f"http://127.0.0.1:{ports[0]}/health"),
            ports=1,
            timeout=120,
        )
        processes.append(mlflow)
        yield ContainerCluster(
            s3_endpoint, f"http://127.0.0.1:{mlflow_port}", (s3_name, pg_name, mlflow_name)
        )
    finally:
        for name in (mlflow_name, pg_name, s3_name):
            remove_container(name)
        for process in processes:
            process.wait(timeout=60)


def stage_runs(cluster: ContainerCluster, parent_run_id: str, stage: str) -> list[Any]:
    """The MLflow runs of ``stage`` under the pipeline run, oldest first (a retried task
    makes one per attempt)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(cluster.tracking_uri)
    parent = client.get_run(parent_run_id)
    return list(
        client.search_runs(
            [parent.info.experiment_id],
            filter_string=f"tags.mlflow.parentRunId = '{parent_run_id}' "
            f"and tags.`graft.stage` = '{stage}'",
            order_by=["attributes.start_time ASC"],
        )
    )


def logged(cluster: ContainerCluster, run_id: str, metric: str) -> list[float]:
    """A run's values of ``metric``, in step order."""
    from mlflow.tracking import MlflowClient

    history = MlflowClient(cluster.tracking_uri).get_metric_history(run_id, metric)
    return [m.value for m in sorted(history, key=lambda m: (m.step, m.timestamp))]
