"""The champion lookup during a registry outage, against a real `mlflow server`.

A small proxy in front of the server answers 503 on the registry's endpoints while it is
"down", as a gateway does while MLflow restarts. Evaluate then fails with a RegistryError and
leaves no claim on the test split; once the registry is back, the server's real 404 for the
never-registered model means "no champion" and the same evaluation goes through.
"""

from __future__ import annotations

import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from graft import stages
from graft.config import GraftConfig, load_config
from graft.data.holdout import default_holdout_dir
from graft.errors import RegistryError
from graft.evaluate.ledger import MODEL_TAG
from graft.io import registry, tracking
from servers import serving_in_thread

MODEL_NAME = "graft-outage"


class _Proxy(ThreadingHTTPServer):
    upstream: str
    registry_down = False


class _Forward(BaseHTTPRequestHandler):
    server: _Proxy

    def _forward(self) -> None:
        if self.server.registry_down and "/registered-models/" in self.path:
            self._answer(503, b"503 Service Unavailable", "text/plain")
            return
        length = int(self.headers.get("Content-Length") or 0)
        request = urllib.request.Request(
            self.server.upstream + self.path,
            data=self.rfile.read(length) if length else None,
            method=self.command,
            headers={k: v for k, v in self.headers.items() if k.lower() in ("content-type",)},
        )
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                status, body = response.status, response.read()
                kind = response.headers.get("Content-Type", "application/json")
        except urllib.error.HTTPError as error:
            status, body = error.code, error.read()
            kind = error.headers.get("Content-Type", "application/json")
        self._answer(status, body, kind)

    def _answer(self, status: int, body: bytes, kind: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _forward

    def log_message(self, format: str, *args: object) -> None:
        return None


@pytest.fixture
def proxy(mlflow_server: str) -> Iterator[_Proxy]:
    server = _Proxy(("127.0.0.1", 0), _Forward)
    server.upstream = mlflow_server
    with serving_in_thread(server):
        yield server


def _config(proxy: _Proxy, tmp_path: Path) -> GraftConfig:
    host, port = proxy.server_address[:2]
    return load_config(
        preset="tiny",
        overrides=[
            f"work_dir={tmp_path / 'work'}",
            f"tracking.tracking_uri=http://{host!s}:{port}",
            "tracking.experiment_name=registry-outage",
            f"export.model_name={MODEL_NAME}",
            "evaluate.linear_baseline_max_iter=20",
            "evaluate.label_shuffle_control.enabled=false",
            "evaluate.transfer_report.enabled=false",
        ],
    )


def test_a_503_on_the_champion_lookup_fails_evaluate_and_a_404_is_no_champion(
    proxy: _Proxy,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    tiny_dataset_and_source: tuple[str, str],
    untrained_model_dir: Callable[..., Path],
) -> None:
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # the outage outlasts them
    config = _config(proxy, tmp_path)
    dataset, _ = tiny_dataset_and_source
    model = str(untrained_model_dir(config, dataset, tmp_path / "model", "target", seed=5))
    parent = tracking.start_pipeline_run(config, "outage")

    def evaluate(name: str) -> stages.EvaluateOutput:
        holdout = str(default_holdout_dir(dataset))
        return stages.evaluate.run(config, dataset, holdout, model, str(tmp_path / name), parent)

    proxy.registry_down = True
    with pytest.raises(RegistryError) as caught:
        evaluate("eval-down")
    message = str(caught.value)
    server = config.tracking.tracking_uri
    assert f"cannot read model '{MODEL_NAME}' in the registry of {server}" in message
    assert "503" in message and "check that the tracking server is up" in message
    client = MlflowClient(tracking_uri=proxy.upstream)
    experiment = client.get_experiment_by_name("registry-outage").experiment_id
    (failed,) = client.search_runs([experiment], "tags.`graft.stage` = 'evaluate'")
    assert failed.info.status == "FAILED"
    assert MODEL_TAG not in failed.data.tags  # the look was not spent
    assert not (tmp_path / "eval-down" / "gate.json").exists()

    proxy.registry_down = False
    assert registry.champion_version(config) is None  # the server's own 404
    passed = evaluate("eval-up")
    assert passed.champion_accuracy is None
    gate = (tmp_path / "eval-up" / "gate.json").read_text()
    assert '"champion_version": null' in gate
