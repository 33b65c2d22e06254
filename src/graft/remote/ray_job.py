"""Run a training stage on an existing Ray cluster as a Ray job, through the Jobs API.

``ray.mode: address`` with ``ray.submit: job``: the stage's process (a KFP task, or
``graft stage`` on a laptop) submits ``python -m graft.cli stage ...`` to the cluster's
dashboard, relays the job's log line by line to its own stderr, waits for a terminal status
and returns the stage's output, which the job prints as its last result line.

Each stage of a pipeline run has a fixed submission id, ``graft-<stage>-<parent run id>``. A
retried task therefore finds its job: one still running (or already succeeded) with the same
entrypoint is re-attached to instead of submitted twice; after a FAILED or STOPPED job the
retry submits a new attempt, ``<id>-retry2``, ``-retry3``... A job that ends FAILED or
STOPPED, or that outlives ``ray.job_timeout_s`` (it is stopped then), raises
:class:`~graft.errors.RayJobError` with its id, status, Ray's message and the tail of its
log. An interrupt (Ctrl-C) stops the job; a killed caller leaves it running for the retry.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from graft.config import GraftConfig, RayConfig
from graft.errors import RayJobError
from graft.io import ray_auth
from graft.io.ray_runtime import train_env_defaults
from graft.io.termination import INTERRUPTS
from graft.remote.command import (
    JobOutcome,
    StageInputs,
    log_tail,
    parse_result,
    relay_to_stderr,
    stage_command,
)

if TYPE_CHECKING:
    from ray.job_submission import JobSubmissionClient

log = logging.getLogger(__name__)

RETRY_SUFFIX = "-retry"
_ENDED_BADLY = ("FAILED", "STOPPED")


def stage_submission_id(stage: str, parent_run_id: str) -> str:
    """The same for every attempt of one stage of one pipeline run."""
    return f"graft-{stage}-{re.sub(r'[^a-z0-9-]', '-', parent_run_id.lower())}"


def job_client(config: RayConfig) -> JobSubmissionClient:
    """A Jobs API client for ``ray.dashboard_address`` (else one derived from ``ray.address``)."""
    from ray.exceptions import AuthenticationError
    from ray.job_submission import JobSubmissionClient

    address = config.dashboard_address or config.address
    ray_auth.require_cluster_token(address or "RAY_ADDRESS", "ray.dashboard_address")
    try:
        return JobSubmissionClient(address)
    except AuthenticationError:
        raise RayJobError(
            f"the Ray Jobs API at {address} refused this process's token: RAY_AUTH_TOKEN "
            "(or the file RAY_AUTH_TOKEN_PATH names) must hold the cluster's own token"
        ) from None
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise RayJobError(
            f"cannot reach the Ray Jobs API at {address or 'RAY_ADDRESS / a local cluster'}: "
            f"{_first_line(str(exc))}; set ray.dashboard_address to the head's dashboard, "
            "e.g. http://ray-head:8265, and check that the port is reachable from here"
        ) from None


def run_stage_as_job(config: GraftConfig, stage: str, inputs: StageInputs) -> dict[str, Any]:
    """Run ``stage`` on the cluster as a Ray job; its output dataclass as a dict."""
    submission_id = stage_submission_id(stage, inputs.parent_run_id)
    outcome = run_job(
        job_client(config.ray),
        submission_id,
        stage_command(config, stage, inputs),
        # Ray Train's settings for the driver, controller and workers the job starts
        runtime_env={"env_vars": train_env_defaults()},
        metadata={"graft.stage": stage, "graft.parent_run_id": inputs.parent_run_id},
        timeout_s=config.ray.job_timeout_s,
        log_tail_lines=config.ray.job_log_tail_lines,
    )
    return outcome.stage_result(stage, config.ray.job_log_tail_lines)


def run_job(
    client: JobSubmissionClient,
    submission_id: str,
    entrypoint: str,
    *,
    runtime_env: dict[str, Any] | None = None,
    metadata: dict[str, str] | None = None,
    on_log: Callable[[str], None] | None = None,
    poll_s: float = 1.0,
    timeout_s: float | None = None,
    log_tail_lines: int = 40,
) -> JobOutcome:
    """Submit ``entrypoint`` as job ``submission_id`` (or re-attach to it), follow its log
    into ``on_log`` (default: this process's stderr) and wait for it to end.

    Raises RayJobError unless it SUCCEEDED."""
    job_id, attached = _submit_or_attach(client, submission_id, entrypoint, runtime_env, metadata)
    try:
        logs = _follow(client, job_id, on_log or relay_to_stderr, poll_s, timeout_s, log_tail_lines)
    except INTERRUPTS:
        log.warning("interrupted: stopping Ray job %s", job_id)
        client.stop_job(job_id)
        raise
    info = client.get_job_info(job_id)
    status = str(info.status)
    if status != "SUCCEEDED":
        # Ray's message goes on to quote the log, whose tail follows anyway
        message = _first_line(info.message or "").split(", last available logs")[0]
        tail = log_tail(logs, log_tail_lines)
        raise RayJobError(
            f"Ray job {job_id} {status}: {message or 'no message'}\n"
            f"last {log_tail_lines} lines of its log:\n{tail}\n"
            "fix the cause above; a retry of this task submits a new attempt of the job",
            submission_id=job_id,
            status=status,
            job_message=info.message or "",
            log_tail=tail,
        )
    return JobOutcome(job_id, "Ray job", attached, logs, parse_result(logs))


def _submit_or_attach(
    client: JobSubmissionClient,
    base_id: str,
    entrypoint: str,
    runtime_env: dict[str, Any] | None,
    metadata: dict[str, str] | None,
) -> tuple[str, bool]:
    attempts = _attempts(client, base_id)
    job_id = base_id
    if attempts:
        last = attempts[-1]
        last_id = str(last.submission_id)
        if str(last.status) not in _ENDED_BADLY:
            if last.entrypoint == entrypoint:
                log.info("re-attaching to Ray job %s (%s)", last_id, last.status)
                return last_id, True
            if not last.status.is_terminal():
                raise RayJobError(
                    f"Ray job {last_id} of this pipeline run and stage is {last.status} with "
                    "another command (a different config or inputs); stop it "
                    f"(`ray job stop {last_id}`) or start a new pipeline run",
                    submission_id=last_id,
                    status=str(last.status),
                )
        job_id = f"{base_id}{RETRY_SUFFIX}{len(attempts) + 1}"
        log.info("Ray job %s ended %s: submitting attempt %s", last_id, last.status, job_id)
    try:
        client.submit_job(
            entrypoint=entrypoint,
            submission_id=job_id,
            runtime_env=runtime_env,
            metadata=metadata,
        )
    except RuntimeError as exc:
        if "already exists" in str(exc):
            # another attempt submitted the same id between our listing and our submission
            log.info("Ray job %s was just submitted by another attempt: re-attaching", job_id)
            return job_id, True
        raise RayJobError(
            f"the Ray Jobs API refused job {job_id}: {_first_line(str(exc))}",
            submission_id=job_id,
        ) from None
    log.info("submitted Ray job %s", job_id)
    return job_id, False


def _attempts(client: JobSubmissionClient, base_id: str) -> list[Any]:
    """Jobs ``base_id``, ``base_id-retry2``, ... in attempt order."""
    pattern = re.compile(rf"{re.escape(base_id)}(?:{RETRY_SUFFIX}(\d+))?")
    numbered = []
    for job in client.list_jobs():
        match = pattern.fullmatch(job.submission_id or "")
        if match:
            numbered.append((int(match.group(1) or 1), job))
    return [job for _, job in sorted(numbered, key=lambda pair: pair[0])]


def _follow(
    client: JobSubmissionClient,
    job_id: str,
    on_log: Callable[[str], None],
    poll_s: float,
    timeout_s: float | None,
    log_tail_lines: int,
) -> str:
    """Relay the job's new log lines until it ends; its whole log."""
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    relayed = 0
    while True:
        # status first: logs fetched after a terminal status are complete
        ended = client.get_job_status(job_id).is_terminal()
        logs = client.get_job_logs(job_id)
        new = logs[relayed:] if ended else logs[relayed : logs.rfind("\n") + 1]
        for line in new.splitlines():
            on_log(line)
        relayed += len(new)
        if ended:
            return logs
        if deadline is not None and time.monotonic() > deadline:
            client.stop_job(job_id)
            raise RayJobError(
                f"Ray job {job_id} still running after ray.job_timeout_s={timeout_s}: "
                f"stopped it\nlast {log_tail_lines} lines of its log:\n"
                f"{log_tail(logs, log_tail_lines)}",
                submission_id=job_id,
                status="STOPPED",
                job_message="timed out",
                log_tail=log_tail(logs, log_tail_lines),
            )
        time.sleep(poll_s)


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else ""
