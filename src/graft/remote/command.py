"""The command that runs one training stage inside a Ray cluster, and the line it answers with.

A stage submitted as a Ray job (:mod:`graft.remote.ray_job`) or as a KubeRay RayJob
(:mod:`graft.remote.kuberay_manifest`) runs ``python -m graft.cli stage <name> ...`` on the cluster.
That command runs the stage as a driver of the cluster it is in and prints the stage's output
as one JSON line after :data:`RESULT_PREFIX`; the submitter reads it back from the job's log,
since a Ray job has no other channel for a return value.
"""

from __future__ import annotations

import json
import shlex
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, get_args

from graft.config import GraftConfig, with_overrides
from graft.errors import ConfigError, RayJobError

RayStage = Literal["pretrain", "transfer-finetune", "tune"]
RAY_STAGES: tuple[str, ...] = get_args(RayStage)
RESULT_PREFIX = "GRAFT_STAGE_RESULT "


@dataclass(frozen=True)
class StageInputs:
    """The folders and MLflow parent run one training stage reads and writes.

    On a cluster they must be paths every node reads alike: a shared volume or ``s3://``.
    """

    dataset_dir: str
    output_dir: str
    parent_run_id: str
    pretrained_dir: str = ""
    finetuned_dir: str = ""

    def check(self, stage: str) -> None:
        if stage not in RAY_STAGES:
            raise ConfigError(f"stage '{stage}' does not run on Ray; choose one of {RAY_STAGES}")
        if not self.parent_run_id:
            raise ConfigError(
                f"stage '{stage}' needs the MLflow run id of its pipeline run (data-prep's "
                "parent_run_id output)"
            )
        if stage != "pretrain" and not self.pretrained_dir:
            raise ConfigError(f"stage '{stage}' needs the pretrained model folder")


def in_cluster_config(config: GraftConfig) -> GraftConfig:
    """The config a stage runs with on the cluster: a driver of the cluster it runs in (Ray
    sets RAY_ADDRESS for a job's entrypoint), so it never submits itself again."""
    return with_overrides(
        config, {"ray.mode": "address", "ray.submit": "driver", "ray.address": None}
    )


def stage_command(config: GraftConfig, stage: str, inputs: StageInputs) -> str:
    """The shell command (a Ray job's entrypoint) that runs ``stage`` on the cluster."""
    inputs.check(stage)
    parts = [
        "python",
        "-m",
        "graft.cli",
        "stage",
        stage,
        "--config-json",
        # only what differs from the schema's defaults: the command stays readable in logs
        in_cluster_config(config).model_dump_json(exclude_defaults=True),
        "--dataset-dir",
        inputs.dataset_dir,
        "--output-dir",
        inputs.output_dir,
        "--parent-run-id",
        inputs.parent_run_id,
    ]
    if inputs.pretrained_dir:
        parts += ["--pretrained-dir", inputs.pretrained_dir]
    if inputs.finetuned_dir:
        parts += ["--finetuned-dir", inputs.finetuned_dir]
    return shlex.join(parts)


def result_line(output: Mapping[str, Any]) -> str:
    return RESULT_PREFIX + json.dumps(dict(output), sort_keys=True)


def parse_result(logs: str) -> dict[str, Any] | None:
    """The stage output a job printed last, or None if it printed none."""
    for line in reversed(logs.splitlines()):
        if line.startswith(RESULT_PREFIX):
            result: dict[str, Any] = json.loads(line[len(RESULT_PREFIX) :])
            return result
    return None


@dataclass(frozen=True)
class JobOutcome:
    """A job whose Ray job SUCCEEDED: its id (a Ray submission id or a RayJob's name), what kind
    of job it was, whether an earlier attempt had started it, its log and the result line it
    printed (None if none)."""

    job_id: str
    kind: Literal["Ray job", "RayJob"]
    attached: bool
    logs: str
    result: dict[str, Any] | None

    def stage_result(self, stage: str, tail_lines: int) -> dict[str, Any]:
        """The stage's output; a job that printed none fails the stage: its command was not
        this Graft version's ``graft stage``."""
        if self.result is not None:
            return self.result
        raise RayJobError(
            f"{self.kind} {self.job_id} SUCCEEDED but its log has no "
            f"'{RESULT_PREFIX.strip()}' line; its entrypoint must be `graft stage {stage}` "
            "from the same Graft version",
            submission_id=self.job_id,
            status="SUCCEEDED",
            log_tail=log_tail(self.logs, tail_lines),
        )


def log_tail(logs: str, lines: int) -> str:
    return "\n".join(logs.splitlines()[-lines:])


def relay_to_stderr(line: str) -> None:
    """A job's own output, relayed as `ray job submit` does: the task's log shows it as is."""
    sys.stderr.write(line + "\n")
    sys.stderr.flush()
