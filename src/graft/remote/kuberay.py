"""Run a training stage as a KubeRay RayJob through the Kubernetes API (``ray.mode: rayjob``).

The caller (a KFP task's pod, or ``graft stage`` with a kubeconfig) creates the RayJob that
:func:`graft.remote.kuberay_manifest.build_rayjob` describes, relays its submitter pod's log
(KubeRay's ``ray job submit`` follows the Ray job's log there) to its own stderr, waits until
``status.jobDeploymentStatus`` is terminal and reads the stage's answer from the log's result
line. A RayJob whose Ray job did not SUCCEED, that KubeRay refused (ValidationFailed) or that
outlived ``activeDeadlineSeconds`` raises :class:`~graft.errors.RayJobError` with KubeRay's
reason and message and the log's tail.

One stage of one pipeline run always has the same RayJob name, so a retried task finds it: a
RayJob still running with the same entrypoint (or one that succeeded) is followed instead of
created twice; a failed one, or one with another entrypoint that has ended, is deleted and
created anew. An interrupt (Ctrl-C, a KFP run cancelled) deletes the RayJob, which stops its Ray
job. ``ray.rayjob.delete_when_done`` says whether the RayJob object is deleted after it ends.

Credentials: the pod's ServiceAccount in a cluster (the chart's Role allows exactly these
calls: create, get and delete rayjobs, list pods, get pods/log; ``tests/deploy/test_chart.py``
reads the calls from this module and fails when one has no grant), else the kubeconfig
(``KUBECONFIG``, ``~/.kube/config``).
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from graft.config import DEFAULT_IMAGE, GraftConfig, RayJobConfig
from graft.config.runtime import DEFAULT_KUBECONFIG, KUBECONFIG_ENV
from graft.errors import RayJobError
from graft.io.termination import INTERRUPTS
from graft.remote.command import (
    JobOutcome,
    RayStage,
    StageInputs,
    log_tail,
    parse_result,
    relay_to_stderr,
)
from graft.remote.kuberay_manifest import build_rayjob

log = logging.getLogger(__name__)

GROUP, VERSION, PLURAL = "ray.io", "v1", "rayjobs"
# KubeRay's IsJobDeploymentTerminal, plus ValidationFailed (KubeRay refused the spec)
TERMINAL_DEPLOYMENT = ("Complete", "Failed", "ValidationFailed")
SUBMITTER_CONTAINER = "ray-job-submitter"
_SERVICE_ACCOUNT_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


class KubeRayApi:
    """The few Kubernetes calls a RayJob needs, in one namespace."""

    def __init__(self, namespace: str | None = None) -> None:
        from kubernetes import client

        api = _api_client()
        self.namespace = namespace or _current_namespace()
        self.custom = client.CustomObjectsApi(api)
        self.core = client.CoreV1Api(api)

    def create(self, body: dict[str, Any]) -> None:
        self.custom.create_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, body)

    def get(self, name: str) -> dict[str, Any] | None:
        from kubernetes.client.rest import ApiException

        try:
            found: dict[str, Any] = self.custom.get_namespaced_custom_object(
                GROUP, VERSION, self.namespace, PLURAL, name
            )
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return found

    def delete(self, name: str, *, wait_for_dependents: bool = False) -> None:
        """Delete RayJob ``name``; with ``wait_for_dependents`` the object stays until its
        submitter Job and pods are gone (foreground deletion), so a RayJob created under the
        same name afterwards never sees the old submitter's log."""
        from kubernetes.client.rest import ApiException

        try:
            self.custom.delete_namespaced_custom_object(
                GROUP,
                VERSION,
                self.namespace,
                PLURAL,
                name,
                propagation_policy="Foreground" if wait_for_dependents else "Background",
            )
        except ApiException as exc:
            if exc.status != 404:
                raise

    def submitter_log(self, name: str) -> str:
        """The log of the newest submitter pod of RayJob ``name`` ("" before it runs).

        KubeRay's submitter is a Kubernetes Job named after the RayJob; its pods carry the
        Job controller's ``job-name`` label."""
        from kubernetes.client.rest import ApiException

        pods = self.core.list_namespaced_pod(self.namespace, label_selector=f"job-name={name}")
        if not pods.items:
            return ""
        newest = max(pods.items, key=lambda pod: pod.metadata.creation_timestamp or 0)
        try:
            text: str = self.core.read_namespaced_pod_log(
                newest.metadata.name, self.namespace, container=SUBMITTER_CONTAINER
            )
        except ApiException as exc:
            if exc.status in (400, 404):  # still pulling its image, or already gone
                return ""
            raise
        return text


def run_stage_as_rayjob(
    config: GraftConfig, stage: RayStage, inputs: StageInputs
) -> dict[str, Any]:
    """Run ``stage`` as a RayJob; its output dataclass as a dict (paths as the job wrote them)."""

    settings = config.ray.rayjob
    manifest = build_rayjob(config, stage, inputs, settings.image or DEFAULT_IMAGE)
    outcome = run_rayjob(
        KubeRayApi(settings.namespace),
        manifest,
        settings,
        log_tail_lines=config.ray.job_log_tail_lines,
    )
    return outcome.stage_result(stage, config.ray.job_log_tail_lines)


def run_rayjob(
    api: KubeRayApi,
    manifest: dict[str, Any],
    settings: RayJobConfig,
    *,
    on_log: Callable[[str], None] | None = None,
    log_tail_lines: int = 40,
) -> JobOutcome:
    """Create (or re-attach to) the RayJob ``manifest``, relay its log, wait for its end.

    Raises RayJobError unless its Ray job SUCCEEDED."""
    name = manifest["metadata"]["name"]
    attached = _create_or_attach(api, manifest, settings.poll_s)
    try:
        status, logs = _follow(api, name, on_log or relay_to_stderr, settings.poll_s)
    except INTERRUPTS:
        log.warning(
            "interrupted: deleting RayJob %s/%s (KubeRay stops its job)", api.namespace, name
        )
        api.delete(name)
        raise
    succeeded = status.get("jobStatus") == "SUCCEEDED"
    if settings.delete_when_done == "always" or (
        settings.delete_when_done == "on_success" and succeeded
    ):
        api.delete(name)
    if not succeeded:
        raise _failure(api.namespace, name, status, logs, log_tail_lines)
    return JobOutcome(name, "RayJob", attached, logs, parse_result(logs))


def _create_or_attach(api: KubeRayApi, manifest: dict[str, Any], poll_s: float) -> bool:
    name = manifest["metadata"]["name"]
    existing = api.get(name)
    if existing is not None:
        status = existing.get("status") or {}
        same_command = existing.get("spec", {}).get("entrypoint") == manifest["spec"]["entrypoint"]
        ended = status.get("jobDeploymentStatus") in TERMINAL_DEPLOYMENT
        if same_command and (not ended or status.get("jobStatus") == "SUCCEEDED"):
            log.info("re-attaching to RayJob %s/%s (%s)", api.namespace, name, _describe(status))
            return True
        if not ended:
            raise RayJobError(
                f"RayJob {api.namespace}/{name} of this pipeline run and stage is running "
                "another command (a different config or inputs); delete it "
                f"(`kubectl delete rayjob -n {api.namespace} {name}`) or start a new pipeline run",
                submission_id=name,
                status=_describe(status),
            )
        log.info("RayJob %s/%s ended %s: replacing it", api.namespace, name, _describe(status))
        api.delete(name, wait_for_dependents=True)
        _wait_until_gone(api, name, poll_s)
    try:
        api.create(manifest)
    except Exception as exc:
        raise RayJobError(
            f"the Kubernetes API refused RayJob {api.namespace}/{name}: {_api_reason(exc)}; "
            "check that the KubeRay operator is installed (CRD rayjobs.ray.io) and that this "
            "pod runs as the chart's ServiceAccount, the only one its Role binds (graft "
            "submit/schedule use cluster.service_account; a run started in the KFP UI "
            "names it in the run form)",
            submission_id=name,
        ) from None
    log.info("created RayJob %s/%s", api.namespace, name)
    return False


def _follow(
    api: KubeRayApi, name: str, on_log: Callable[[str], None], poll_s: float
) -> tuple[dict[str, Any], str]:
    """Relay new log lines until the RayJob's deployment status is terminal."""
    relayed, last_state = 0, None
    while True:
        found = api.get(name)
        if found is None:
            raise RayJobError(
                f"RayJob {api.namespace}/{name} was deleted while this stage waited on it",
                submission_id=name,
                status="Deleted",
            )
        status = found.get("status") or {}
        ended = status.get("jobDeploymentStatus") in TERMINAL_DEPLOYMENT
        logs = api.submitter_log(name)
        if len(logs) < relayed:  # a new submitter pod (backoffLimit retry) starts a new log
            relayed = 0
        new = logs[relayed:] if ended else logs[relayed : logs.rfind("\n") + 1]
        for line in new.splitlines():
            on_log(line)
        relayed += len(new)
        state = _describe(status)
        if state != last_state:
            log.info("RayJob %s/%s: %s", api.namespace, name, state)
            last_state = state
        if ended:
            return status, logs
        time.sleep(poll_s)


def _failure(
    namespace: str, name: str, status: dict[str, Any], logs: str, log_tail_lines: int
) -> RayJobError:
    reason = status.get("reason") or "no reason given"
    message = (status.get("message") or "").strip()
    tail = log_tail(logs, log_tail_lines)
    return RayJobError(
        f"RayJob {namespace}/{name} {_describe(status)}: {reason}"
        + (f": {message.splitlines()[0]}" if message else "")
        + f"\nlast {log_tail_lines} lines of its submitter's log:\n{tail or '(none)'}\n"
        f"more: kubectl describe rayjob -n {namespace} {name}; a retry of this task creates "
        "the RayJob anew",
        submission_id=name,
        status=str(status.get("jobStatus") or status.get("jobDeploymentStatus") or ""),
        job_message=message,
        log_tail=tail,
    )


def _wait_until_gone(api: KubeRayApi, name: str, poll_s: float, timeout_s: float = 300) -> None:
    """KubeRay's finalizer stops the Ray job before the object goes: wait for it."""
    deadline = time.monotonic() + timeout_s
    while api.get(name) is not None:
        if time.monotonic() > deadline:
            raise RayJobError(
                f"RayJob {api.namespace}/{name} was deleted but is still there after "
                f"{timeout_s:g} s (a finalizer waiting on the operator?)",
                submission_id=name,
            )
        time.sleep(poll_s)


def _describe(status: dict[str, Any]) -> str:
    deployment = status.get("jobDeploymentStatus") or "New"
    job = status.get("jobStatus")
    return f"{deployment}, Ray job {job}" if job else deployment


def _api_client() -> Any:
    from kubernetes import client, config
    from kubernetes.config.config_exception import ConfigException

    # a configuration of our own, not the client library's process-wide default
    configuration = client.Configuration()
    try:
        config.load_incluster_config(client_configuration=configuration)
    except ConfigException:
        try:
            # KUBECONFIG read now: the library reads it once, when it is first imported
            config.load_kube_config(
                config_file=_kubeconfig_path(), client_configuration=configuration
            )
        except (ConfigException, OSError) as exc:
            raise RayJobError(
                "ray.mode=rayjob needs Kubernetes credentials: none in this pod (no "
                f"ServiceAccount token) and no usable kubeconfig ({exc}); run inside the "
                "cluster or set KUBECONFIG"
            ) from None
    return client.ApiClient(configuration)


def _kubeconfig_path() -> str:
    return os.environ.get(KUBECONFIG_ENV) or str(Path(DEFAULT_KUBECONFIG).expanduser())


def _current_namespace() -> str:
    if _SERVICE_ACCOUNT_NAMESPACE.is_file():
        return _SERVICE_ACCOUNT_NAMESPACE.read_text().strip()
    from kubernetes import config

    try:
        _, active = config.list_kube_config_contexts(config_file=_kubeconfig_path())
    except Exception:
        return "default"  # no kubeconfig context: Kubernetes' own default
    return str((active or {}).get("context", {}).get("namespace") or "default")


def _api_reason(exc: Exception) -> str:
    """The API server's own message (an ApiException's JSON body) where there is one."""
    status = getattr(exc, "status", None)
    if status is None:
        return str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    try:
        message = json.loads(getattr(exc, "body", None) or "{}").get("message", "")
    except (ValueError, AttributeError):
        message = ""
    return f"{status} {getattr(exc, 'reason', '')}" + (f": {message}" if message else "")
