"""MLflow's basic-auth app as the chart runs it, on a real `mlflow server`.

The server runs the app the chart runs, with the chart's own auth settings (its ConfigMap,
rendered by Helm) and the database swapped for SQLite; its admin user and Flask key come
through the same variables the chart fills from the Secret. Graft's tracking code reaches it
with MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD only, and the password shows up
nowhere Graft writes.
"""

from __future__ import annotations

import base64
import configparser
import json
import logging
import os
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient

from graft.config import GraftConfig, load_config
from graft.io import registry, tracking
from onnx_models import served_onnx
from servers import answers_http, mlflow_server_args, serve_on_free_ports

pytest.importorskip("flask_wtf", reason="mlflow[auth] (the server extra) is not installed")
helm = pytest.importorskip("helm_python", reason="helm-python-sdk is not installed")

CHART = Path(__file__).resolve().parents[2] / "charts" / "graft"
ADMIN = "graft-admin"
PASSWORD = "Adm1n-sentinel-7f3e9c2b"
USER_ENV = ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")


def chart_server(database_uri: str) -> tuple[str, str]:
    """The app the chart's MLflow runs (``--app-name``) and its basic_auth.ini, with the
    database replaced."""
    with helm.Chart.load(CHART) as chart:
        manifests = chart.render({}, name="graft", namespace="graft", is_install=True)
    deploy = yaml.safe_load(manifests["graft/templates/mlflow-deployment.yaml"])
    args = deploy["spec"]["template"]["spec"]["containers"][0]["args"]
    app = args[args.index("--app-name") + 1] if "--app-name" in args else ""
    config_map = yaml.safe_load(manifests["graft/templates/mlflow-auth-config.yaml"])
    parser = configparser.ConfigParser()
    parser.read_string(config_map["data"]["basic_auth.ini"])
    parser["mlflow"]["database_uri"] = database_uri
    lines = [f"{key} = {value}" for key, value in parser["mlflow"].items()]
    return app, "\n".join(["[mlflow]", *lines, ""])


@pytest.fixture(scope="module")
def auth_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    root = tmp_path_factory.mktemp("mlflow-auth")
    ini = root / "basic_auth.ini"
    app, text = chart_server(f"sqlite:///{root / 'auth.db'}")
    ini.write_text(text)
    env = {k: v for k, v in os.environ.items() if k not in USER_ENV}
    # the chart's variables, which it fills from the Secret
    env |= {
        "MLFLOW_AUTH_CONFIG_PATH": str(ini),
        "MLFLOW_AUTH_ADMIN_USERNAME": ADMIN,
        "MLFLOW_AUTH_ADMIN_PASSWORD": PASSWORD,
        "MLFLOW_FLASK_SERVER_SECRET_KEY": "flask-key-for-this-test-only",
        # no job runner: seven ~240 MiB worker processes the test has no use for
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
    }
    process, (port,) = serve_on_free_ports(
        lambda ports: [
            sys.executable,
            "-m",
            "mlflow",
            *mlflow_server_args(
                f"sqlite:///{root / 'mlflow.db'}", str(root / "artifacts"), ports[0], app or None
            ),
        ],
        # /health answers without a user: the chart's probes depend on it
        lambda ports: answers_http(f"http://127.0.0.1:{ports[0]}/health"),
        ports=1,
        # start-up is 10-20 s alone; a machine busy with Ray tests has taken over 90 s
        timeout=240,
        env=env,
    )
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=30)


def _request(url: str, body: dict | None = None, user: str | None = None) -> int:
    request = urllib.request.Request(
        url,
        data=None if body is None else json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    if user:
        request.add_header("Authorization", "Basic " + base64.b64encode(user.encode()).decode())
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return int(error.code)


def _config(url: str, name: str) -> GraftConfig:
    return load_config(
        preset="tiny",
        overrides=[f"tracking.tracking_uri={url}", f"tracking.experiment_name={name}"],
    )


def test_a_request_without_the_right_user_is_refused(auth_server: str) -> None:
    create = f"{auth_server}/api/2.0/mlflow/experiments/create"
    assert _request(create, {"name": "anonymous"}) == 401
    assert _request(create, {"name": "guessed"}, f"{ADMIN}:password1234") == 401
    assert _request(create, {"name": "admin"}, f"{ADMIN}:{PASSWORD}") == 200


def test_graft_without_a_user_in_its_environment_is_refused(
    auth_server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in USER_ENV:
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(Exception, match="401"):
        tracking.start_pipeline_run(_config(auth_server, "no-user"), "kfp-run-0")


def test_graft_logs_as_the_user_in_its_environment_and_never_shows_the_password(
    auth_server: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", ADMIN)
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", PASSWORD)
    caplog.set_level(logging.DEBUG)
    config = _config(auth_server, "with-user")
    parent = tracking.start_pipeline_run(config, "kfp-run-1")
    with tracking.stage_run(config, parent, "pretrain") as run_id:
        logger = tracking.logger_for(config, run_id)
        logger.params({"lr": 0.01})
        logger.metrics({"val_loss": 0.5}, step=1)
        (tmp_path / "report.txt").write_text("fine\n")
        logger.artifact(tmp_path / "report.txt")
    version = registry.register_model(config, parent, *served_onnx(tmp_path / "onnx"))
    assert version == "1"

    client = MlflowClient(auth_server, auth_server)
    stage = client.get_run(run_id).data
    assert stage.params == {"lr": "0.01"} and stage.metrics == {"val_loss": 0.5}
    assert [a.path for a in client.list_artifacts(run_id)] == ["report.txt"]
    pipeline = client.get_run(parent).data
    resolved = client.download_artifacts(parent, "config/resolved.json", str(tmp_path))
    written = [
        json.dumps(pipeline.params),
        json.dumps(pipeline.tags),
        json.dumps(stage.tags),
        Path(resolved).read_text(),
        caplog.text,
        *capfd.readouterr(),
    ]
    assert not [text for text in written if PASSWORD in text]


def test_a_user_sees_only_what_it_created_or_was_granted(
    auth_server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The chart's default_permission: another user gets nothing of the admin's runs."""
    admin = f"{ADMIN}:{PASSWORD}"
    analyst = "analyst:Analyst-pass-31c8e0"
    users = f"{auth_server}/api/2.0/mlflow/users/create"
    assert _request(users, {"username": "analyst", "password": analyst.split(":")[1]}, admin) == 200
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", ADMIN)
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", PASSWORD)
    experiment = tracking.experiment_id(_config(auth_server, "admins-only"))
    get = f"{auth_server}/api/2.0/mlflow/experiments/get?experiment_id={experiment}"
    assert _request(get, user=admin) == 200
    assert _request(get, user=analyst) == 403
    # a user still works in what it creates
    create = f"{auth_server}/api/2.0/mlflow/experiments/create"
    assert _request(create, {"name": "analysts-own"}, analyst) == 200
