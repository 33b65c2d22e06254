"""A tiny `graft run` in a subprocess, and what it leaves: the MLflow runs (its parent, one child
per stage, the trials) and data-prep's manifest."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from graft.data.manifest import DataManifest


@dataclass(frozen=True)
class PipelineRuns:
    parent: Any
    stages: dict[str, Any]  # graft.stage -> the stage's run
    trials: list[Any]  # the tune stage's child runs


def pipeline_runs(client: Any, experiment_name: str) -> PipelineRuns:
    """The experiment must hold exactly one pipeline run."""
    experiment = client.get_experiment_by_name(experiment_name)
    runs = client.search_runs([experiment.experiment_id], max_results=200)
    (parent,) = [r for r in runs if r.data.tags.get("graft.kind") == "pipeline"]

    def children_of(run_id: str) -> list[Any]:
        return [r for r in runs if r.data.tags.get("mlflow.parentRunId") == run_id]

    stages = {r.data.tags["graft.stage"]: r for r in children_of(parent.info.run_id)}
    tune = stages.get("tune")
    trials = children_of(tune.info.run_id) if tune is not None else []
    return PipelineRuns(parent, stages, trials)


def graft_run_process(
    overrides: list[str], env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``graft run --preset tiny --set ...`` as a user starts it, in a subprocess."""
    return subprocess.run(
        [sys.executable, "-m", "graft.cli", "run", "--preset", "tiny"]
        + [arg for override in overrides for arg in ("--set", override)],
        capture_output=True,
        text=True,
        timeout=870,
        env=env,
    )


def graft_run(overrides: list[str], env: dict[str, str] | None = None) -> str:
    """:func:`graft_run_process`'s output, once it exited 0."""
    run = graft_run_process(overrides, env)
    output = run.stdout + run.stderr
    assert run.returncode == 0, output[-6000:]
    return output


def prepared_manifest(work: Path) -> DataManifest:
    """The manifest data-prep wrote in a run's work folder."""
    (manifest_file,) = (work / "kfp").glob("*/data-prep/**/manifest.json")
    return DataManifest.read(manifest_file.parent)
