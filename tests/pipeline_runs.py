"""The MLflow runs one pipeline run leaves: its parent, one child per stage, the trials."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


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
