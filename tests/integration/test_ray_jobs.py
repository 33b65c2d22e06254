"""Address mode through the Ray Jobs API, against a real Ray cluster started by `ray start`.

The head runs in its own temp dir with free ports (the dashboard agent's default port may be
held by someone else's Ray on a shared machine) and is stopped by signalling the
`ray start --block` process this module started; `ray stop` would kill every Ray of the user.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import psutil
import pytest
from ray.job_submission import JobSubmissionClient

from graft import stages
from graft.config import GraftConfig, RayConfig, load_config
from graft.errors import ConfigError, RayJobError
from graft.io import ray_compat
from graft.io.ray_runtime import ensure_ray, shutdown_ray, train_env_defaults
from graft.remote import dispatch
from graft.remote.command import RESULT_PREFIX, JobOutcome
from graft.remote.ray_job import RETRY_SUFFIX, job_client, run_job, stage_submission_id
from servers import S3_ACCESS_KEY, S3_SECRET_KEY
from sigterm_helpers import terminate_after

pytestmark = [pytest.mark.ray, pytest.mark.timeout(300)]

VENV_BIN = str(Path(sys.executable).parent)


class RayHead(NamedTuple):
    dashboard: str  # the Jobs API, http://127.0.0.1:<port>
    address: str  # the GCS, what ray.init(address=...) joins
    token: str  # its authentication token, which this process holds while the head is up


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_for_jobs_api(dashboard: str, head: subprocess.Popen[bytes], log: Path) -> None:
    """Until a job can be submitted: the dashboard answers before its job agent is up."""
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if head.poll() is not None:
            raise RuntimeError(f"ray start exited {head.returncode}:\n{log.read_text()[-3000:]}")
        try:
            client = JobSubmissionClient(dashboard)
            client.submit_job(entrypoint="true", submission_id="graft-test-probe")
            return
        except (ConnectionError, RuntimeError):
            time.sleep(1)
    raise TimeoutError(f"the Jobs API at {dashboard} did not accept a job within 180 s")


@contextlib.contextmanager
def _holding_token(token: str) -> Iterator[None]:
    """This process uses ``token`` for Ray (as a pipeline pod does, from its Secret)."""
    saved = {key: os.environ.get(key) for key in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN")}
    os.environ.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=token)
    ray_compat.reload_auth_settings()  # Ray caches both per process
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        ray_compat.reload_auth_settings()


@pytest.fixture(scope="module")
def ray_head(s3_server: str) -> Iterator[RayHead]:
    """A one-node Ray cluster (2 CPUs) with token authentication, for this module's tests
    only: an idle head left up would take CPU from every later test on a 2-core machine. Its
    processes hold the test S3 server's credentials, as a cluster's pods get them from a
    secret: Ray Train's storage on S3 is reached with the node's own, never pickled ones."""
    token = secrets.token_urlsafe(32)
    temp_dir = Path(f"/tmp/rj-{os.getpid()}")  # short: socket paths are limited to 107 bytes
    dashboard_port = free_port()
    ports = {
        "port": free_port(),
        "dashboard-port": dashboard_port,
        "dashboard-agent-listen-port": free_port(),
        "dashboard-agent-grpc-port": free_port(),
        "ray-client-server-port": free_port(),
        "runtime-env-agent-port": free_port(),
        "metrics-export-port": free_port(),
    }
    env = {
        **os.environ,
        # a job's entrypoint finds this venv's python (with graft) first
        "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN": token,
        "RAY_USAGE_STATS_ENABLED": "0",
        # SIGTERM tears the node down at once instead of draining it first
        "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "0",
        "AWS_ENDPOINT_URL": s3_server,
        "AWS_ACCESS_KEY_ID": S3_ACCESS_KEY,
        "AWS_SECRET_ACCESS_KEY": S3_SECRET_KEY,
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    # a cluster of its own: not this process's MLflow server or Ray address
    for name in ("RAY_ADDRESS", "MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI"):
        env.pop(name, None)
    for key in train_env_defaults():  # a job gets them from its runtime env alone
        env.pop(key, None)
    log = Path(f"{temp_dir}.log")
    command = [
        f"{VENV_BIN}/ray",
        "start",
        "--head",
        "--block",
        "--num-cpus=2",
        "--node-ip-address=127.0.0.1",
        "--dashboard-host=127.0.0.1",
        "--include-dashboard=true",
        "--disable-usage-stats",
        f"--temp-dir={temp_dir}",
        *(f"--{name}={port}" for name, port in ports.items()),
    ]
    with log.open("wb") as out:
        head = subprocess.Popen(
            command, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    dashboard = f"http://127.0.0.1:{dashboard_port}"
    try:
        with _holding_token(token):
            _wait_for_jobs_api(dashboard, head, log)
            yield RayHead(dashboard, f"127.0.0.1:{ports['port']}", token)
    finally:
        _stop_head(head)
        shutil.rmtree(temp_dir, ignore_errors=True)
        log.unlink(missing_ok=True)


def _stop_head(head: subprocess.Popen[bytes]) -> None:
    """SIGTERM to `ray start --block` stops the processes it started; then any straggler of
    its own process tree is killed by pid."""
    try:
        tree = psutil.Process(head.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        tree = []
    head.send_signal(signal.SIGTERM)
    try:
        head.wait(timeout=60)
    except subprocess.TimeoutExpired:
        head.kill()
        head.wait(timeout=10)
    _, alive = psutil.wait_procs(tree, timeout=10)
    for process in alive:
        process.kill()


@pytest.fixture(autouse=True)
def _no_ambient_ray_address(monkeypatch: pytest.MonkeyPatch) -> None:
    # Ray lets these override any address it is given
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.delenv("RAY_API_SERVER_ADDRESS", raising=False)


@pytest.fixture
def client(ray_head: RayHead) -> JobSubmissionClient:
    return job_client(RayConfig(mode="address", dashboard_address=ray_head.dashboard))


def _jobs_named(client: JobSubmissionClient, prefix: str) -> list[str]:
    ids = (job.submission_id or "" for job in client.list_jobs())
    return sorted(i for i in ids if i.startswith(prefix))


def _job_mode_config(ray_head: RayHead, tmp_path: Path, *overrides: str) -> GraftConfig:
    """The tiny preset with its stages submitted as Ray jobs to the test's head."""
    return load_config(
        preset="tiny",
        overrides=[
            "ray.mode=address",
            f"ray.dashboard_address={ray_head.dashboard}",
            f"work_dir={tmp_path / 'work'}",
            *overrides,
        ],
    )


def test_succeeding_job_streams_its_log_and_returns_its_result(
    client: JobSubmissionClient, tmp_path: Path
) -> None:
    """The job waits for a file that only the caller's log sink creates, on seeing the job's
    first line: the job can finish only if its log reaches the caller while it runs."""
    go = tmp_path / "go"
    script = tmp_path / "job.py"
    script.write_text(
        f"""import json, os, pathlib, time
print("epoch 1 loss 0.9", flush=True)
go, end = pathlib.Path({str(go)!r}), time.time() + 60
while not go.exists() and time.time() < end:
    time.sleep(0.2)
assert go.exists(), "the log never reached the caller"
print("epoch 2 loss 0.5", flush=True)
env = {{k: os.environ[k] for k in ("RAY_TRAIN_V2_ENABLED", "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S")}}
print({RESULT_PREFIX!r} + json.dumps({{"val_accuracy": 0.5, "env": env}}))
"""
    )
    lines: list[str] = []

    def sink(line: str) -> None:
        lines.append(line)
        if "epoch 1" in line:
            go.touch()

    outcome = run_job(
        client,
        "graft-test-success",
        f"python {script}",
        runtime_env={"env_vars": train_env_defaults()},
        on_log=sink,
        poll_s=0.5,
    )

    assert outcome.attached is False
    assert outcome.result == {
        "val_accuracy": 0.5,
        "env": {
            key: train_env_defaults()[key]
            for key in ("RAY_TRAIN_V2_ENABLED", "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S")
        },
    }
    relayed = [line for line in lines if line.startswith("epoch")]
    assert relayed == ["epoch 1 loss 0.9", "epoch 2 loss 0.5"]
    assert client.get_job_status("graft-test-success") == "SUCCEEDED"


def test_failing_stage_job_fails_the_caller_with_status_message_and_log_tail(
    ray_head: RayHead, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """dispatch.pretrain in job mode: the real `graft stage pretrain` entrypoint runs on the
    cluster and fails on a dataset folder that does not exist."""
    config = _job_mode_config(ray_head, tmp_path, "ray.job_log_tail_lines=15")
    missing = tmp_path / "no-such-dataset"
    parent_run_id = "a1b2c3d4e5f60718293a4b5c6d7e8f90"

    with pytest.raises(RayJobError) as caught:
        dispatch.pretrain(config, str(missing), str(tmp_path / "out"), parent_run_id)

    error = caught.value
    assert error.submission_id == stage_submission_id("pretrain", parent_run_id)
    assert error.status == "FAILED"
    assert "exit code" in error.job_message
    assert str(missing) in error.log_tail  # the cause, from the job's own log
    assert len(error.log_tail.splitlines()) <= 15
    message = str(error)
    assert f"Ray job {error.submission_id} FAILED" in message
    assert error.log_tail in message
    # the default sink relayed the job's log to this process's stderr as it ran
    assert "Running entrypoint for job" in capfd.readouterr().err


def test_resubmitting_the_same_id_reattaches_instead_of_running_twice(
    client: JobSubmissionClient, tmp_path: Path
) -> None:
    """A retried KFP task (same pipeline run, same stage) finds the job its first attempt
    submitted: while it runs, and after it succeeded."""
    runs = tmp_path / "runs"
    script = tmp_path / "job.py"
    script.write_text(
        f"""import pathlib, time
with pathlib.Path({str(runs)!r}).open("a") as runs:
    runs.write("started\\n")
time.sleep(4)
print({RESULT_PREFIX!r} + '{{"n": 1}}')
"""
    )
    entrypoint = f"python {script}"
    job_id = "graft-test-reattach"
    first: list[JobOutcome] = []
    thread = threading.Thread(
        target=lambda: first.append(run_job(client, job_id, entrypoint, on_log=lambda _: None))
    )
    thread.start()
    deadline = time.monotonic() + 60
    while not (runs.exists() and client.get_job_status(job_id) == "RUNNING"):
        assert time.monotonic() < deadline, "the first attempt's job never started"
        time.sleep(0.2)

    second = run_job(client, job_id, entrypoint, on_log=lambda _: None)
    thread.join(timeout=120)
    third = run_job(client, job_id, entrypoint, on_log=lambda _: None)

    assert first[0].attached is False
    assert second.attached is True and third.attached is True
    assert first[0].result == second.result == third.result == {"n": 1}
    assert runs.read_text().splitlines() == ["started"]  # the entrypoint ran once
    assert _jobs_named(client, job_id) == [job_id]


def test_a_changed_command_is_not_served_by_the_finished_job(
    client: JobSubmissionClient, tmp_path: Path
) -> None:
    """Same run and stage but other config or inputs: a new attempt runs."""
    job_id = "graft-test-changed"

    def entrypoint(n: int) -> str:
        script = tmp_path / f"job{n}.py"
        script.write_text(f"print({RESULT_PREFIX!r} + '{{\"n\": {n}}}')\n")
        return f"python {script}"

    first = run_job(client, job_id, entrypoint(1), on_log=lambda _: None)
    second = run_job(client, job_id, entrypoint(2), on_log=lambda _: None)
    assert (first.job_id, first.result) == (job_id, {"n": 1})
    assert (second.job_id, second.attached) == (f"{job_id}{RETRY_SUFFIX}2", False)
    assert second.result == {"n": 2}


def test_failed_job_is_retried_as_a_new_attempt(client: JobSubmissionClient) -> None:
    job_id = "graft-test-retry"
    entrypoint = "echo 'loading [data]'; echo 'boom: no rows' >&2; exit 3"
    for attempt in (1, 2):
        with pytest.raises(RayJobError) as caught:
            run_job(client, job_id, entrypoint, on_log=lambda _: None)
        expected_id = job_id if attempt == 1 else f"{job_id}{RETRY_SUFFIX}2"
        assert caught.value.submission_id == expected_id
        assert caught.value.status == "FAILED"
        assert "exit code 3" in caught.value.job_message
        assert "boom: no rows" in caught.value.log_tail
    assert _jobs_named(client, job_id) == [job_id, f"{job_id}{RETRY_SUFFIX}2"]


def test_job_past_its_timeout_is_stopped_and_fails_the_caller(
    client: JobSubmissionClient,
) -> None:
    job_id = "graft-test-timeout"
    with pytest.raises(RayJobError) as caught:
        run_job(client, job_id, "echo waiting; sleep 120", on_log=lambda _: None, timeout_s=3)
    assert caught.value.status == "STOPPED"
    deadline = time.monotonic() + 30
    while client.get_job_status(job_id) != "STOPPED":
        assert time.monotonic() < deadline, client.get_job_status(job_id)
        time.sleep(0.5)


def test_sigterm_stops_the_ray_job_before_the_caller_exits(
    client: JobSubmissionClient, ray_head: RayHead, tmp_path: Path
) -> None:
    """KFP cancels a run (or evicts its pod) with SIGTERM: the Ray job stops at once instead
    of living on after its caller."""
    job_id = "graft-test-sigterm"
    caller = tmp_path / "caller.py"
    caller.write_text(
        f"""from graft.config import RayConfig
from graft.io.termination import sigterm_interrupts
from graft.remote.ray_job import job_client, run_job
sigterm_interrupts()
client = job_client(RayConfig(mode="address", dashboard_address={ray_head.dashboard!r}))
def show(line): print(line, flush=True)
run_job(client, {job_id!r}, "echo started; sleep 120", on_log=show, poll_s=0.5)
"""
    )
    code, printed = terminate_after(caller, "started")  # the token comes from this process

    assert code != 0 and f"interrupted: stopping Ray job {job_id}" in printed
    deadline = time.monotonic() + 60
    while client.get_job_status(job_id) != "STOPPED":
        assert time.monotonic() < deadline, client.get_job_status(job_id)
        time.sleep(0.5)


def test_driver_mode_joins_the_cluster_and_gives_its_workers_ray_trains_settings(
    ray_head: RayHead, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ray.submit=driver: this process joins the cluster; the head's processes lack the
    settings, so a task sees them only through the runtime env the driver sets."""
    import ray

    for key, value in train_env_defaults().items():  # restored after: ensure_ray sets them
        monkeypatch.setenv(key, value)
    assert not ray.is_initialized()
    ensure_ray(RayConfig(mode="address", submit="driver", address=ray_head.address))
    try:

        @ray.remote(num_cpus=0)
        def settings() -> dict[str, str | None]:
            return {key: os.environ.get(key) for key in train_env_defaults()}

        assert ray.get(settings.remote(), timeout=120) == train_env_defaults()
        assert ray.cluster_resources()["CPU"] == 2  # the head's CPUs, not this machine's
    finally:
        shutdown_ray()


def _jobs_api_status(dashboard: str, token: str | None) -> int:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    request = urllib.request.Request(f"{dashboard}/api/jobs/", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as reply:
            return int(reply.status)
    except urllib.error.HTTPError as refused:
        return refused.code


def test_the_cluster_refuses_a_client_without_its_token(
    ray_head: RayHead, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The head runs with token auth: its Jobs API and its GCS refuse anyone without the
    token, and Graft refuses to reach a cluster without holding one."""
    assert _jobs_api_status(ray_head.dashboard, None) == 401
    assert _jobs_api_status(ray_head.dashboard, "not-the-token") in (401, 403)
    assert _jobs_api_status(ray_head.dashboard, ray_head.token) == 200

    # a driver with a wrong token is refused by the GCS (in a process of its own: a failed
    # join leaves Ray's per-process state behind)
    join = f"import ray; ray.init(address={ray_head.address!r}, logging_level='ERROR')"
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": "not-the-token"}
    joined = subprocess.run(
        [sys.executable, "-c", join], env=env, capture_output=True, text=True, timeout=180
    )
    assert joined.returncode != 0
    assert "InvalidAuthToken" in joined.stderr or "Failed to connect" in joined.stderr

    config = RayConfig(mode="address", dashboard_address=ray_head.dashboard)
    monkeypatch.setenv("RAY_AUTH_TOKEN", "not-the-token")
    with pytest.raises(RayJobError, match="refused this process's token"):
        job_client(config)

    monkeypatch.delenv("RAY_AUTH_TOKEN")
    monkeypatch.setenv("HOME", str(Path(f"/tmp/no-ray-token-{os.getpid()}")))
    with pytest.raises(ConfigError, match=r"needs its authentication token.*RAY_AUTH_TOKEN"):
        job_client(config)
    with pytest.raises(ConfigError, match=r"ray\.address.*needs its authentication token"):
        ensure_ray(RayConfig(mode="address", submit="driver", address=ray_head.address))
    monkeypatch.setenv("RAY_AUTH_TOKEN", ray_head.token)
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    with pytest.raises(ConfigError, match="RAY_AUTH_MODE=disabled turns off"):
        job_client(config)


def test_unreachable_dashboard_is_a_clear_error() -> None:
    port = free_port()  # nothing listens there
    with pytest.raises(RayJobError, match=r"cannot reach the Ray Jobs API .*dashboard_address"):
        job_client(RayConfig(mode="address", dashboard_address=f"http://127.0.0.1:{port}"))


@pytest.mark.slow
def test_pretrain_stage_runs_on_the_cluster_as_a_job(
    ray_head: RayHead, dataset: str, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """The whole stage on the cluster: its TrainOutput comes back and its model is written."""
    config = _job_mode_config(ray_head, tmp_path)
    out = tmp_path / "pretrained"
    result = dispatch.pretrain(config, dataset, str(out), "b1c2d3e4f5a60718293a4b5c6d7e8f90")

    assert isinstance(result, stages.TrainOutput)
    assert result.epochs_run == config.pretrain.epochs
    assert result.val_accuracy > 0.5  # 8 digit classes: chance is 0.125
    assert (out / "model.pt").is_file()
    relayed = capfd.readouterr().err
    assert RESULT_PREFIX.strip() in relayed  # the job's own log reached this process


@pytest.mark.slow
def test_pretrain_stage_runs_as_a_rayjob_with_its_folders_staged_through_s3(
    ray_head: RayHead,
    dataset: str,
    tmp_path: Path,
    s3_env: str,
    mlflow_server: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """ray.mode=rayjob end to end, with a stand-in Kubernetes API whose operator runs the
    RayJob's real entrypoint (`graft stage pretrain` with s3:// folders) as a driver of the
    test's Ray head: the dataset goes up, the model comes back, nothing shared but S3."""
    import boto3
    from fake_kube import FakeKube, FakeKubeServer

    boto3.session.Session().client("s3", endpoint_url=s3_env).create_bucket(Bucket="graft-rj")
    config = load_config(
        preset="tiny",
        overrides=[
            "ray.mode=rayjob",
            "ray.staging_uri=s3://graft-rj/stages",
            "ray.rayjob.poll_s=0.5",
            f"tracking.tracking_uri={mlflow_server}",
            f"work_dir={tmp_path / 'work'}",
        ],
    )
    operator = FakeKube(
        extra_env={
            "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
            "RAY_ADDRESS": ray_head.address,  # the RayJob's own cluster
        }
    )
    with FakeKubeServer(operator, tmp_path) as kube:
        monkeypatch.setenv("KUBECONFIG", str(kube.kubeconfig))
        monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
        out = tmp_path / "pretrained"
        result = dispatch.pretrain(config, dataset, str(out), "c0ffee00c0ffee00c0ffee00c0ffee00")

    assert result.epochs_run == config.pretrain.epochs
    assert result.val_accuracy > 0.5  # 8 digit classes: chance is 0.125
    assert Path(result.model_dir).is_relative_to(out)  # a path on this machine
    assert (out / "model.pt").is_file()
    assert operator.rayjobs == {}  # deleted after success
    assert operator.count("POST", r"/rayjobs$") == 1
