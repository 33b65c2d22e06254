"""``ray.mode=rayjob``: the RayJob client against a stand-in Kubernetes API and KubeRay.

No Kubernetes API server can run here; :mod:`fake_kube` answers the calls Graft makes the way
the API server does, and its operator really runs each RayJob's entrypoint as KubeRay's
submitter would, so these tests see real logs, exit codes and timing.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fake_kube import FakeKube, FakeKubeServer

from graft.config import RayJobConfig, load_config
from graft.errors import RayJobError
from graft.io.ray_runtime import train_env_defaults
from graft.remote.command import RESULT_PREFIX, StageInputs
from graft.remote.kuberay import KubeRayApi, run_rayjob
from graft.remote.kuberay_manifest import build_rayjob
from sigterm_helpers import terminate_after

pytestmark = pytest.mark.timeout(120)

RUN = "5e1f0a2b3c4d5e6f7a8b9c0d1e2f3a4b"
SETTINGS = RayJobConfig(poll_s=0.1)


@pytest.fixture
def kube(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeKubeServer]:
    with FakeKubeServer(FakeKube(), tmp_path) as server:
        monkeypatch.setenv("KUBECONFIG", str(server.kubeconfig))
        monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)  # not "in a pod"
        yield server


def _manifest(script: Path) -> dict[str, Any]:
    """The RayJob Graft builds for the tiny preset's pretrain, running ``script`` instead."""
    config = load_config(preset="tiny", overrides=["ray.staging_uri=s3://graft/stage"])
    inputs = StageInputs("s3://graft/stage/ds", "s3://graft/stage/out", RUN)
    manifest = build_rayjob(config, "pretrain", inputs, "registry.example/graft:test")
    manifest["spec"]["entrypoint"] = f"{sys.executable} {script}"
    return manifest


def _script(tmp_path: Path, body: str) -> Path:
    script = tmp_path / "job.py"
    script.write_text("import json, os, pathlib, sys, time\n" + body)
    return script


def test_rayjob_is_created_followed_and_deleted_after_success(
    kube: FakeKubeServer, tmp_path: Path
) -> None:
    """The job waits for a file the caller's log sink creates on its first line: it can only
    finish if its log reaches the caller while it runs."""
    go = tmp_path / "go"
    script = _script(
        tmp_path,
        f"""print("epoch 1 loss 0.9", flush=True)
go, end = pathlib.Path({str(go)!r}), time.time() + 60
while not go.exists() and time.time() < end:
    time.sleep(0.1)
assert go.exists(), "the log never reached the caller"
print("epoch 2 loss 0.5", flush=True)
env = os.environ["RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"]
print({RESULT_PREFIX!r} + json.dumps({{"val_accuracy": 0.75, "health_check": env}}))
""",
    )
    manifest = _manifest(script)
    lines: list[str] = []

    def sink(line: str) -> None:
        lines.append(line)
        if "epoch 1" in line:
            go.touch()

    outcome = run_rayjob(KubeRayApi(), manifest, SETTINGS, on_log=sink)

    assert outcome.attached is False
    assert outcome.job_id == manifest["metadata"]["name"]
    # the runtime env of the RayJob reached the job
    health_check = train_env_defaults()["RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"]
    assert outcome.result == {"val_accuracy": 0.75, "health_check": health_check}
    assert [line for line in lines if line.startswith("epoch")] == [
        "epoch 1 loss 0.9",
        "epoch 2 loss 0.5",
    ]
    state = kube.state
    assert state.count("POST", r"/rayjobs$") == 1
    assert state.count("GET", r"/namespaces/graft-ns/pods$") >= 1  # the kubeconfig's namespace
    assert manifest["metadata"]["name"] not in state.rayjobs  # delete_when_done=on_success


def test_failed_rayjob_fails_the_caller_with_reason_message_and_log_tail_and_is_kept(
    kube: FakeKubeServer, tmp_path: Path
) -> None:
    script = _script(
        tmp_path, 'print("loading data", flush=True)\nsys.exit("no such split: val")\n'
    )
    manifest = _manifest(script)
    with pytest.raises(RayJobError) as caught:
        run_rayjob(KubeRayApi(), manifest, SETTINGS, on_log=lambda line: None, log_tail_lines=5)

    error = caught.value
    name = manifest["metadata"]["name"]
    assert error.status == "FAILED"
    assert "Failed, Ray job FAILED: AppFailed: Job failed due to an application error" in str(error)
    assert "no such split: val" in error.log_tail
    assert "loading data" in error.log_tail
    assert f"kubectl describe rayjob -n graft-ns {name}" in str(error)
    assert name in kube.state.rayjobs  # kept for kubectl describe/logs


def test_rayjob_the_operator_refuses_is_an_error_with_its_message(
    kube: FakeKubeServer, tmp_path: Path
) -> None:
    kube.state.refuse_spec = "The RayJob name is too long"
    manifest = _manifest(_script(tmp_path, "print('never runs')\n"))
    with pytest.raises(RayJobError, match=r"ValidationFailed: ValidationFailed: The RayJob name"):
        run_rayjob(KubeRayApi(), manifest, SETTINGS, on_log=lambda line: None)


class CallerDied(Exception):
    """A KFP pod killed mid-wait: the RayJob it created keeps running."""


def test_a_retried_caller_follows_the_running_rayjob_instead_of_creating_another(
    kube: FakeKubeServer, tmp_path: Path
) -> None:
    go = tmp_path / "go"
    script = _script(
        tmp_path,
        f"""print("started", flush=True)
go, end = pathlib.Path({str(go)!r}), time.time() + 60
while not go.exists() and time.time() < end:
    time.sleep(0.1)
print({RESULT_PREFIX!r} + json.dumps({{"epochs_run": 3}}))
""",
    )
    manifest = _manifest(script)

    def dies(line: str) -> None:
        raise CallerDied(line)

    with pytest.raises(CallerDied):
        run_rayjob(KubeRayApi(), manifest, SETTINGS, on_log=dies)
    assert manifest["metadata"]["name"] in kube.state.rayjobs  # still running

    def releases(line: str) -> None:
        if line == "started":
            go.touch()

    outcome = run_rayjob(KubeRayApi(), manifest, SETTINGS, on_log=releases)

    assert outcome.attached is True
    assert outcome.result == {"epochs_run": 3}
    assert kube.state.count("POST", r"/rayjobs$") == 1  # created once


def test_a_failed_rayjob_is_replaced_when_the_task_is_retried(
    kube: FakeKubeServer, tmp_path: Path
) -> None:
    fixed = tmp_path / "fixed"
    script = _script(
        tmp_path,
        f"""if not pathlib.Path({str(fixed)!r}).exists():
    sys.exit("bucket missing")
print({RESULT_PREFIX!r} + json.dumps({{"ok": True}}))
""",
    )
    manifest = _manifest(script)
    with pytest.raises(RayJobError, match="FAILED"):
        run_rayjob(KubeRayApi(), manifest, SETTINGS, on_log=lambda line: None)
    fixed.touch()  # the user fixes the cause and retries the task

    outcome = run_rayjob(KubeRayApi(), manifest, SETTINGS, on_log=lambda line: None)

    assert outcome.attached is False
    assert outcome.result == {"ok": True}
    assert kube.state.count("DELETE", r"/rayjobs/") >= 2  # the failed one, then on success
    assert kube.state.count("POST", r"/rayjobs$") == 2


def test_a_running_rayjob_with_another_command_is_not_taken_over(
    kube: FakeKubeServer, tmp_path: Path
) -> None:
    go = tmp_path / "go"
    first = _manifest(
        _script(
            tmp_path,
            f"""print("started", flush=True)
end = time.time() + 60
while not pathlib.Path({str(go)!r}).exists() and time.time() < end:
    time.sleep(0.1)
""",
        )
    )

    def dies(line: str) -> None:
        raise CallerDied(line)

    with pytest.raises(CallerDied):
        run_rayjob(KubeRayApi(), first, SETTINGS, on_log=dies)
    changed = {**first, "spec": {**first["spec"], "entrypoint": "python -c 'print(2)'"}}
    try:
        with pytest.raises(RayJobError, match=r"running another command .*kubectl delete rayjob"):
            run_rayjob(KubeRayApi(), changed, SETTINGS, on_log=lambda line: None)
    finally:
        go.touch()


def test_an_interrupted_caller_deletes_its_rayjob(kube: FakeKubeServer, tmp_path: Path) -> None:
    script = _script(tmp_path, 'print("started", flush=True)\ntime.sleep(60)\n')
    manifest = _manifest(script)

    def ctrl_c(line: str) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_rayjob(KubeRayApi(), manifest, SETTINGS, on_log=ctrl_c)

    assert manifest["metadata"]["name"] not in kube.state.rayjobs
    process = kube.state.processes.get(manifest["metadata"]["name"])
    assert process is None  # the operator's job went with it


def test_sigterm_deletes_the_rayjob_before_the_caller_exits(
    kube: FakeKubeServer, tmp_path: Path
) -> None:
    """KFP cancels a run (or evicts its pod) with SIGTERM: the RayJob goes at once, instead of
    running on until its deadline."""
    manifest = _manifest(_script(tmp_path, 'print("started", flush=True)\ntime.sleep(60)\n'))
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    caller = tmp_path / "caller.py"
    caller.write_text(
        f"""import json, pathlib
from graft.config import RayJobConfig
from graft.io.termination import sigterm_interrupts
from graft.remote.kuberay import KubeRayApi, run_rayjob
sigterm_interrupts()
manifest = json.loads(pathlib.Path({str(tmp_path / "manifest.json")!r}).read_text())
def show(line): print(line, flush=True)
run_rayjob(KubeRayApi(), manifest, RayJobConfig(poll_s=0.1), on_log=show)
"""
    )
    code, printed = terminate_after(caller, "started")

    assert code != 0 and "interrupted: deleting RayJob" in printed
    assert manifest["metadata"]["name"] not in kube.state.rayjobs
    assert kube.state.processes.get(manifest["metadata"]["name"]) is None


def test_missing_kuberay_crd_is_a_clear_error(kube: FakeKubeServer, tmp_path: Path) -> None:
    kube.state.crd_installed = False
    manifest = _manifest(_script(tmp_path, "print('never runs')\n"))
    with pytest.raises(RayJobError, match=r"refused RayJob graft-ns/.*404.*KubeRay operator"):
        run_rayjob(KubeRayApi(), manifest, SETTINGS, on_log=lambda line: None)


def test_no_kubernetes_credentials_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "missing"))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    with pytest.raises(RayJobError, match=r"needs Kubernetes credentials.*KUBECONFIG"):
        KubeRayApi()
