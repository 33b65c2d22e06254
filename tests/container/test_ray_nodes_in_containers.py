"""Multi-node Ray Train, tested: a Ray head and two worker nodes as containers, each with its
own filesystem and processes, on the host's network. A 2-worker DDP pretrain spans both worker
nodes with its checkpoints on S3; one node's container is killed mid-fit and a new node joins,
as KubeRay would replace the pod; the fit resumes and finishes."""

import secrets
import subprocess
import threading
import time
import uuid
from pathlib import Path

import pytest
from docker_services import (
    BUCKET,
    ContainerCluster,
    Images,
    logged,
    remove_container,
    stage_runs,
)
from kfp import local
from pretrain_only import pretrain_pipeline
from ray._private import services

from graft.config import load_config
from graft.kfp.components import make_components
from graft.kfp.container_run import SHARED_MEMORY, container_run_args, prepare_pipeline_root
from servers import free_port

pytestmark = [pytest.mark.container, pytest.mark.timeout(1800)]

PREFIX = "ray-nodes"
# This machine's own address as Ray finds it: a driver in a container on the host network
# connects as a node of that address, so the nodes register under it too (all of it stays on
# this machine's interfaces).
NODE_IP = services.get_node_ip_address()


def _start_node(name: str, image: str, env: dict[str, str], *ray_args: str) -> None:
    flags = [f"--env={key}={value}" for key, value in env.items()]
    subprocess.run(
        [
            "docker",
            "run",
            "-d",
            f"--name={name}",
            "--network=host",
            f"--shm-size={SHARED_MEMORY}",
            "--entrypoint=ray",
            *flags,
            image,
            "start",
            f"--node-ip-address={NODE_IP}",
            "--block",
            *ray_args,
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )


def _worker_nodes(head: str, gcs: str) -> int:
    """Alive nodes with CPUs, as the head's `ray status` reports them."""
    script = (
        "import ray; ray.init(address='auto', logging_level='ERROR'); "
        "print(sum(1 for n in ray.nodes() if n['Alive'] and n['Resources'].get('CPU', 0) > 0))"
    )
    result = subprocess.run(
        ["docker", "exec", "-e", f"RAY_ADDRESS={gcs}", head, "python", "-c", script],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    return int(result.stdout.strip().splitlines()[-1]) if result.returncode == 0 else 0


def _wait_for(condition, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(1)
    raise AssertionError(f"{what} within {timeout} s")


def test_ddp_across_ray_node_containers_finishes_after_a_node_is_killed(
    images: Images, container_cluster: ContainerCluster, tmp_path: Path
) -> None:
    run = uuid.uuid4().hex[:6]
    head, first, second, replacement = (
        f"graft-ray-{role}-{run}" for role in ("head", "node1", "node2", "node3")
    )
    gcs = f"{NODE_IP}:{free_port()}"
    # the cluster runs with token auth, and the pipeline's pod holds the token, as KubeRay
    # and the chart give both from one Secret
    env = {
        **container_cluster.pod_environment(),
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN": secrets.token_urlsafe(32),
    }
    # a job's driver runs on the head and its workers on the nodes: like the pods, they get
    # the tracking server, S3 and the token from their environment
    node_env = {key: env[key] for key in env if key.startswith(("AWS_", "MLFLOW_", "RAY_AUTH_"))}
    dashboard = f"http://{NODE_IP}:{free_port()}"
    try:
        # the head schedules no training worker: each of the two workers needs a node's CPU
        _start_node(
            head, images.graft, node_env, "--head", f"--port={gcs.split(':')[1]}",
            "--num-cpus=0", "--include-dashboard=true", f"--dashboard-host={NODE_IP}",
            f"--dashboard-port={dashboard.rsplit(':', 1)[1]}",
        )  # fmt: skip
        for name in (first, second):
            _start_node(name, images.graft, node_env, f"--address={gcs}", "--num-cpus=1")
        _wait_for(lambda: _worker_nodes(head, gcs) == 2, 120, "two worker nodes did not join")

        config = load_config(
            preset="tiny",
            overrides=[
                "tracking.experiment_name=ray-nodes",
                # the stage runs as a Ray job on the cluster, its folders staged through S3: a
                # pod is no Ray node, so it submits rather than joins
                "ray.mode=address",
                f"ray.address={gcs}",
                f"ray.dashboard_address={dashboard}",
                "ray.submit=job",
                f"ray.staging_uri=s3://{BUCKET}/staging",
                f"ray.storage_uri=s3://{BUCKET}/{PREFIX}",
                "pretrain.num_workers=2",
                "pretrain.epochs=40",  # long enough for the kill to land mid-fit
                "pretrain.early_stopping.enabled=false",
            ],
        )
        local.init(
            runner=local.DockerRunner(**container_run_args(env)),
            pipeline_root=str(prepare_pipeline_root(tmp_path / "kfp")),
            raise_on_error=True,
        )
        components = make_components(images.graft)
        opened = components["open-run"](config_json=config.to_json(), kfp_run_id=f"nodes-{run}")
        parent, digest = opened.outputs["Output"], opened.outputs["data_digest"]
        prep = components["data-prep"](config_json=config.to_json(), data_digest=digest)

        def kill_a_node_mid_fit() -> None:
            def some_epochs_logged() -> bool:
                runs = stage_runs(container_cluster, parent, "pretrain")
                epochs = logged(container_cluster, runs[0].info.run_id, "epoch") if runs else []
                return len(epochs) >= 3

            _wait_for(some_epochs_logged, 600, "the fit logged no 3 epochs")
            subprocess.run(["docker", "kill", second], check=True, timeout=60)
            _start_node(replacement, images.graft, node_env, f"--address={gcs}", "--num-cpus=1")

        killer = threading.Thread(target=kill_a_node_mid_fit, daemon=True)
        killer.start()
        pre = pretrain_pipeline(components)(
            config_json=config.to_json(),
            data_digest=digest,
            dataset_uri=prep.outputs["dataset"].uri,
        )
        killer.join(timeout=120)
        assert not killer.is_alive()
        assert Path(pre.output.path, "model.pt").exists()

        (pretrain,) = stage_runs(container_cluster, parent, "pretrain")
        assert pretrain.info.status == "FINISHED"
        epochs = logged(container_cluster, pretrain.info.run_id, "epoch")
        assert max(epochs) == config.pretrain.epochs
        # the worker group restarted once, from a checkpoint after epoch 1, not from scratch
        (resumed_from,) = logged(container_cluster, pretrain.info.run_id, "resumed_from_epoch")
        assert 1 <= resumed_from < config.pretrain.epochs
        assert epochs.count(1) == 1
        dead = subprocess.run(
            ["docker", "inspect", "-f", "{{.State.Running}}", second],
            capture_output=True, text=True, check=False, timeout=60,
        )  # fmt: skip
        assert dead.stdout.strip() == "false"
    finally:
        for name in (replacement, second, first, head):
            remove_container(name)
