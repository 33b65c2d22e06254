"""`graft upload / submit / schedule / runs` against a local server speaking KFP's
/apis/v2beta1 routes.

The fake server implements only the routes ``kfp.Client`` 2.17 calls for these operations
(healthz, experiments list/create, runs create/list, recurringruns create, pipelines list,
upload and upload_version) and records every request, so the tests assert what a real KFP
server would receive.
"""

from __future__ import annotations

import contextlib
import json
import socket
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import yaml
from cli_helpers import assert_one_clear_error, run_graft

from graft.config import load_config
from graft.errors import ConfigError, PipelineServerError, StorageError
from graft.kfp.client import list_runs, schedule_run, submit_run, validate_cron
from graft.kfp.compile import PIPELINE_FILE, compile_all
from servers import serving_in_thread

API = "/apis/v2beta1"
CREATED_AT = "2025-01-02T03:04:05Z"


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    body: Any
    authorization: str | None


@dataclass
class FakeKfp:
    url: str
    token: str | None = None
    requests: list[Request] = field(default_factory=list)
    unknown: list[str] = field(default_factory=list)
    experiments: list[dict[str, Any]] = field(default_factory=list)
    runs: list[dict[str, Any]] = field(default_factory=list)
    recurring_runs: list[dict[str, Any]] = field(default_factory=list)
    pipelines: list[dict[str, Any]] = field(default_factory=list)
    versions: list[dict[str, Any]] = field(default_factory=list)
    healthz_redirect: str | None = None  # healthz answers 302 to this URL
    healthz_html: bool = False  # healthz answers 200 with a login page, as an auth proxy does
    runs_html: bool = False  # creating a run answers 200 with a page, not KFP's JSON

    def bodies(self, method: str, path: str) -> list[Any]:
        return [r.body for r in self.requests if r.method == method and r.path == API + path]


def _handler(state: FakeKfp) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _reply(self, status: int, payload: dict[str, Any]) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _handle(self, method: str) -> None:
            parts = urlsplit(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            if self.headers.get("Content-Type", "").startswith("multipart/"):
                body: Any = raw  # a pipeline package upload: the file travels as is
            else:
                body = json.loads(raw) if raw else None
            auth = self.headers.get("Authorization")
            state.requests.append(Request(method, parts.path, parse_qs(parts.query), body, auth))
            if state.token and auth != f"Bearer {state.token}":
                self._reply(401, {"error": "unauthorized", "code": 16, "message": "no"})
                return
            route = (method, parts.path.removeprefix(API))
            query = parse_qs(parts.query)
            if route == ("GET", "/healthz") and state.healthz_redirect:
                self.send_response(302)
                self.send_header("Location", state.healthz_redirect)
                self.send_header("Content-Length", "0")
                self.end_headers()
            elif route == ("GET", "/healthz") and state.healthz_html:
                page = b"<html><body><form>Sign in</form></body></html>"
                self.send_response(200)
                self.send_header("Content-Type", "text/html")
                self.send_header("Content-Length", str(len(page)))
                self.end_headers()
                self.wfile.write(page)
            elif route == ("GET", "/healthz"):
                self._reply(200, {"commit_sha": "test", "tag_name": "2.4.0", "multi_user": False})
            elif route == ("GET", "/experiments"):
                wanted = None
                if "filter" in query:
                    predicates = json.loads(query["filter"][0])["predicates"]
                    wanted = next(
                        p["stringValue"] for p in predicates if p["key"] == "display_name"
                    )
                found = [e for e in state.experiments if wanted in (None, e["display_name"])]
                self._reply(200, {"experiments": found, "total_size": len(found)})
            elif route == ("POST", "/experiments"):
                experiment = {**body, "experiment_id": str(uuid.uuid4()), "created_at": CREATED_AT}
                state.experiments.append(experiment)
                self._reply(200, experiment)
            elif route == ("POST", "/runs") and state.runs_html:
                page = b"<html><body>Sign in</body></html>"
                self.send_response(200)
                self.send_header("Content-Type", "text/html")
                self.send_header("Content-Length", str(len(page)))
                self.end_headers()
                self.wfile.write(page)
            elif route == ("POST", "/runs"):
                run = {**body, "run_id": str(uuid.uuid4()), "state": "PENDING"}
                run["created_at"] = CREATED_AT
                state.runs.append(run)
                self._reply(200, run)
            elif route == ("GET", "/runs"):
                wanted_id = query.get("experiment_id", [None])[0]
                found = [r for r in state.runs if wanted_id in (None, r["experiment_id"])]
                size = int(query.get("page_size", ["10"])[0])
                self._reply(200, {"runs": found[:size], "total_size": len(found)})
            elif route == ("GET", "/pipelines"):
                predicates = json.loads(query.get("filter", ['{"predicates": []}'])[0])
                names = [p["stringValue"] for p in predicates["predicates"]]
                found = [p for p in state.pipelines if not names or p["display_name"] in names]
                self._reply(200, {"pipelines": found, "total_size": len(found)})
            elif route == ("POST", "/pipelines/upload"):
                pipeline = {
                    "pipeline_id": str(uuid.uuid4()),
                    "display_name": query["name"][0],
                    "created_at": CREATED_AT,
                }
                state.pipelines.append(pipeline)
                self._reply(200, pipeline)
            elif route == ("POST", "/pipelines/upload_version"):
                version = {
                    "pipeline_id": query["pipelineid"][0],
                    "pipeline_version_id": str(uuid.uuid4()),
                    "display_name": query["name"][0],
                    "created_at": CREATED_AT,
                }
                state.versions.append(version)
                self._reply(200, version)
            elif route == ("POST", "/recurringruns"):
                recurring = {**body, "recurring_run_id": str(uuid.uuid4()), "status": "ENABLED"}
                state.recurring_runs.append(recurring)
                self._reply(200, recurring)
            else:
                state.unknown.append(f"{method} {self.path}")
                self._reply(404, {"error": "not found", "code": 5, "message": "not found"})

        def do_GET(self) -> None:
            self._handle("GET")

        def do_POST(self) -> None:
            self._handle("POST")

        def do_DELETE(self) -> None:
            self._handle("DELETE")

    return Handler


@contextlib.contextmanager
def _serving() -> Iterator[FakeKfp]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
    state = FakeKfp(url=f"http://127.0.0.1:{server.server_address[1]}")
    server.RequestHandlerClass = _handler(state)
    with serving_in_thread(server):
        yield state
    assert not state.unknown, f"kfp.Client called routes the fake does not serve: {state.unknown}"


@pytest.fixture
def kfp_server() -> Iterator[FakeKfp]:
    with _serving() as state:
        yield state


@pytest.fixture(scope="module")
def package(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("compiled")
    compile_all(out / "pipelines", out / "components")
    return out / "pipelines" / PIPELINE_FILE


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # kfp.Client reads ~/.config/kfp/context.json; keep the user's out of the tests.
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    for name in ("KFP_HOST", "KFP_TOKEN", "KF_PIPELINES_ENDPOINT", "KF_PIPELINES_UI_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _compiled_spec(package: Path) -> dict[str, Any]:
    pipeline_spec, platform_spec = yaml.safe_load_all(package.read_text())
    return {"pipeline_spec": pipeline_spec, "platform_spec": platform_spec}


# ----------------------------------------------------------------------------- CLI


def test_submit_sends_compiled_spec_and_resolved_config(kfp_server: FakeKfp, package: Path) -> None:
    result = run_graft(
        "submit",
        "--host",
        kfp_server.url,
        "--package",
        str(package),
        "--preset",
        "tiny",
        "--set",
        "finetune.epochs=3",
        "--set",
        "cluster.service_account=graft-ci",
        "--experiment",
        "nightly",
        "--run-name",
        "first-run",
    )
    assert result.returncode == 0, result.stderr

    (run,) = kfp_server.bodies("POST", "/runs")
    assert run["pipeline_spec"] == _compiled_spec(package)
    expected = load_config(
        preset="tiny", overrides=["finetune.epochs=3", "cluster.service_account=graft-ci"]
    ).to_json()
    assert run["runtime_config"]["parameters"] == {"config_json": expected}
    # the pods that create RayJobs run as the account the config names
    assert run["service_account"] == "graft-ci"
    assert json.loads(run["runtime_config"]["parameters"]["config_json"])["finetune"]["epochs"] == 3
    assert run["display_name"] == "first-run"
    (experiment,) = kfp_server.bodies("POST", "/experiments")
    assert experiment["display_name"] == "nightly"
    assert run["experiment_id"] == kfp_server.experiments[0]["experiment_id"]

    run_id = kfp_server.runs[0]["run_id"]
    assert result.stdout.strip() == f"{kfp_server.url}/#/runs/details/{run_id}"


def test_schedule_sends_six_field_cron_and_concurrency(kfp_server: FakeKfp, package: Path) -> None:
    result = run_graft(
        "schedule",
        "--cron",
        "0 0 3 * * 1",
        "--max-concurrency",
        "2",
        "--host",
        kfp_server.url,
        "--package",
        str(package),
        "--preset",
        "tiny",
        "--name",
        "weekly",
    )
    assert result.returncode == 0, result.stderr

    (job,) = kfp_server.bodies("POST", "/recurringruns")
    assert job["trigger"]["cron_schedule"]["cron"] == "0 0 3 * * 1"
    assert int(job["max_concurrency"]) == 2
    assert job["no_catchup"] is True
    assert job["mode"] == "ENABLE"
    assert job["display_name"] == "weekly"
    assert job["pipeline_spec"] == _compiled_spec(package)
    expected = load_config(preset="tiny").to_json()
    assert job["runtime_config"]["parameters"] == {"config_json": expected}
    # by default runs use the chart's own account, the one its Role is bound to
    assert job["service_account"] == "graft-pipeline"
    # no experiment named after the config's tracking.experiment_name existed: it was created
    (experiment,) = kfp_server.bodies("POST", "/experiments")
    assert experiment["display_name"] == load_config(preset="tiny").tracking.experiment_name

    job_id = kfp_server.recurring_runs[0]["recurring_run_id"]
    assert result.stdout.strip() == f"{kfp_server.url}/#/recurringrun/details/{job_id}"


def test_runs_lists_the_experiment_runs_with_urls(kfp_server: FakeKfp, package: Path) -> None:
    config = load_config(preset="tiny")
    submitted = submit_run(kfp_server.url, package, config, "nightly", run_name="a")
    submit_run(kfp_server.url, package, config, "other", run_name="b")

    result = run_graft("runs", "--experiment", "nightly", env={"KFP_HOST": kfp_server.url})
    assert result.returncode == 0, result.stderr
    assert submitted.url in result.stdout
    assert "PENDING" in result.stdout
    assert kfp_server.runs[1]["run_id"] not in result.stdout
    (listing,) = [r for r in kfp_server.requests if r.method == "GET" and r.path == API + "/runs"]
    assert listing.query["experiment_id"] == [kfp_server.runs[0]["experiment_id"]]


def test_upload_creates_the_pipeline_then_adds_versions(kfp_server: FakeKfp, package: Path) -> None:
    first = run_graft("upload", "--host", kfp_server.url, "--package", str(package))
    assert first.returncode == 0, first.stderr
    (upload,) = [r for r in kfp_server.requests if r.path == API + "/pipelines/upload"]
    assert upload.query["name"] == ["graft-training"]
    assert package.read_bytes() in upload.body  # the compiled YAML, unchanged
    (pipeline,) = kfp_server.pipelines
    assert first.stdout.strip() == f"{kfp_server.url}/#/pipelines/details/{pipeline['pipeline_id']}"
    assert "created pipeline graft-training" in first.stderr

    # a second upload (bootstrap.sh run again) is a new version of the same pipeline
    second = run_graft(
        "upload", "--host", kfp_server.url, "--package", str(package), "--version", "v2"
    )
    assert second.returncode == 0, second.stderr
    (version,) = kfp_server.versions
    assert (version["pipeline_id"], version["display_name"]) == (pipeline["pipeline_id"], "v2")
    assert len(kfp_server.pipelines) == 1
    assert "added version 'v2' to graft-training" in second.stderr


def test_upload_refuses_a_package_that_is_not_graft_s(tmp_path: Path) -> None:
    other = tmp_path / "other.yaml"
    other.write_text(yaml.safe_dump({"root": {"inputDefinitions": {"parameters": {}}}}))
    result = run_graft("upload", "--host", "http://127.0.0.1:9", "--package", str(other))
    assert_one_clear_error(result, "not Graft's pipeline")


def test_five_field_cron_is_refused_with_the_six_field_equivalent(package: Path) -> None:
    result = run_graft(
        "schedule", "--cron", "0 3 * * 1", "--host", "http://127.0.0.1:9", "--package", str(package)
    )
    line = assert_one_clear_error(result, "5 fields")
    assert "'0 0 3 * * 1'" in line


def test_unreachable_host_is_one_error_line(package: Path) -> None:
    host = f"http://127.0.0.1:{_free_port()}"
    result = run_graft("submit", "--host", host, "--package", str(package))
    assert_one_clear_error(result, f"cannot reach the KFP API server at {host}")


def test_missing_package_tells_to_compile(tmp_path: Path) -> None:
    result = run_graft(
        "submit", "--host", "http://127.0.0.1:9", "--package", str(tmp_path / "training.yaml")
    )
    assert_one_clear_error(result, "run `graft compile`")


def test_missing_host_is_one_error_line(package: Path) -> None:
    result = run_graft("submit", "--package", str(package))
    assert_one_clear_error(result, "KFP_HOST")


def test_token_is_sent_and_never_printed(kfp_server: FakeKfp, package: Path) -> None:
    kfp_server.token = "s3cr3t-token"
    refused = run_graft("submit", "--host", kfp_server.url, "--package", str(package))
    assert_one_clear_error(refused, "set KFP_TOKEN")

    result = run_graft(
        "submit",
        "--host",
        kfp_server.url,
        "--package",
        str(package),
        env={"KFP_TOKEN": "s3cr3t-token", "GRAFT_LOG_LEVEL": "DEBUG"},
    )
    assert result.returncode == 0, result.stderr
    assert "s3cr3t-token" not in result.stdout + result.stderr
    created = [r for r in kfp_server.requests if r.method == "POST" and r.path == API + "/runs"]
    assert [r.authorization for r in created] == ["Bearer s3cr3t-token"]


def test_a_token_is_not_sent_over_http_beyond_this_machine_unless_insecure(
    package: Path,
) -> None:
    config = load_config(preset="tiny")
    remote = "http://kfp.invalid:8080"  # .invalid never resolves: nothing leaves here
    with pytest.raises(ConfigError, match=r"refusing to send the KFP token to .* plain http"):
        submit_run(remote, package, config, "x", token="s3cr3t-token")
    # without a token, or with --insecure, the transport check passes and the host is tried
    for kwargs in ({}, {"token": "s3cr3t-token", "insecure": True}):
        with pytest.raises(PipelineServerError, match="cannot reach the KFP API server"):
            submit_run(remote, package, config, "x", **kwargs)  # type: ignore[arg-type]
    refused = run_graft("runs", "--host", remote, env={"KFP_TOKEN": "s3cr3t-token"})
    assert_one_clear_error(refused, "--insecure")
    assert "s3cr3t-token" not in refused.stdout + refused.stderr


def test_the_token_does_not_follow_a_redirect_to_another_host(
    kfp_server: FakeKfp, package: Path
) -> None:
    """healthz redirects to another server (another port is another host to a client); the
    run is still submitted, and the other server never sees the token."""
    with _serving() as elsewhere:
        kfp_server.token = "s3cr3t-token"
        kfp_server.healthz_redirect = f"{elsewhere.url}{API}/healthz"
        config = load_config(preset="tiny")
        submitted = submit_run(kfp_server.url, package, config, "x", token="s3cr3t-token")
        assert submitted.run_id
        assert elsewhere.requests, "the redirect was not followed"
        assert [r.authorization for r in elsewhere.requests] == [None] * len(elsewhere.requests)
    created = [r for r in kfp_server.requests if r.method == "POST" and r.path == API + "/runs"]
    assert [r.authorization for r in created] == ["Bearer s3cr3t-token"]


def test_a_login_page_in_place_of_kfp_is_an_error_not_a_run(
    kfp_server: FakeKfp, package: Path
) -> None:
    kfp_server.healthz_html = True
    result = run_graft("submit", "--host", kfp_server.url, "--package", str(package))
    assert_one_clear_error(result, "something other than KFP's JSON")
    assert not kfp_server.bodies("POST", "/runs")


def test_a_created_run_without_an_id_is_an_error_not_run_none(
    kfp_server: FakeKfp, package: Path
) -> None:
    kfp_server.runs_html = True
    with pytest.raises(PipelineServerError, match="answered without a run_id"):
        submit_run(kfp_server.url, package, load_config(preset="tiny"), "x")


# ----------------------------------------------------------------------------- library


def test_existing_experiment_is_reused(kfp_server: FakeKfp, package: Path) -> None:
    config = load_config(preset="tiny")
    first = submit_run(kfp_server.url, package, config, "nightly")
    second = submit_run(kfp_server.url + "/", package, config, "nightly")
    assert len(kfp_server.bodies("POST", "/experiments")) == 1
    assert first.run_id != second.run_id
    assert second.url == f"{kfp_server.url}/#/runs/details/{second.run_id}"
    statuses = list_runs(kfp_server.url, "nightly", page_size=1)
    assert [s.run_id for s in statuses] == [first.run_id]
    assert statuses[0].created_at is not None and statuses[0].created_at.year == 2025


@pytest.mark.parametrize(
    ("cron", "fragment"),
    [
        ("0 3 * * 1", "use '0 0 3 * * 1'"),
        ("* * *", "has 3 fields"),
        ("0 0 3 * * 1 2025", "has 7 fields"),
        ("0 0 3 * * $", "day of week field"),
    ],
)
def test_bad_cron_is_a_config_error(cron: str, fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment.replace("*", r"\*")):
        validate_cron(cron)


def test_valid_crons_pass() -> None:
    assert validate_cron("0  0 3 * * 1") == "0 0 3 * * 1"
    assert validate_cron("0 */15 9-17 ? * MON-FRI") == "0 */15 9-17 ? * MON-FRI"


def test_schedule_refuses_bad_input_before_any_request(
    kfp_server: FakeKfp, package: Path, tmp_path: Path
) -> None:
    config = load_config(preset="tiny")
    with pytest.raises(ConfigError):
        schedule_run(kfp_server.url, package, config, "x", "0 3 * * *", "job")
    with pytest.raises(ConfigError, match="no scheme"):
        schedule_run("127.0.0.1:8080", package, config, "x", "0 0 3 * * *", "job")
    with pytest.raises(StorageError, match="not Graft's pipeline"):
        other = tmp_path / "other.yaml"
        other.write_text(yaml.safe_dump({"root": {"inputDefinitions": {"parameters": {}}}}))
        schedule_run(kfp_server.url, other, config, "x", "0 0 3 * * *", "job")
    assert kfp_server.requests == []


def test_not_a_kfp_server_is_a_pipeline_server_error(kfp_server: FakeKfp, package: Path) -> None:
    with pytest.raises(PipelineServerError, match="not a KFP v2 API server"):
        submit_run(kfp_server.url + "/prefix", package, load_config(preset="tiny"), "x")
    kfp_server.unknown.clear()
