"""A registered champion whose pipeline run logged a search, written straight into MLflow as
the pipeline writes it (the tune stage's run, a nested run per trial with its parameters and
its metric per epoch, the version's ``pipeline_run_id`` tag) without running one."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

from mlflow.tracking import MlflowClient

from graft.config import GraftConfig
from graft.io import tracking
from graft.tune.runs import trial_run, tune_stage_run


class LoggedTrial(NamedTuple):
    params: dict[str, Any]
    scores: Sequence[float]  # the metric at epochs 1, 2, ...


def log_champion_search(
    config: GraftConfig, trials: Sequence[LoggedTrial], metric: str = "val_accuracy"
) -> tuple[str, str]:
    """A pipeline run with a tune stage run of ``trials`` (ids ``past_00000``, ...), and
    a model version it registered as ``export.model_name``'s champion; (pipeline run id, tune
    stage run id)."""
    pipeline = tracking.start_pipeline_run(config, "champion")
    experiment = "tune-champion"
    with tune_stage_run(config, pipeline, experiment) as stage:
        for index, trial in enumerate(trials):
            run = trial_run(config, stage, experiment, f"past_{index:05d}")
            logger = tracking.logger_for(config, run)
            logger.params(trial.params)
            for epoch, score in enumerate(trial.scores, start=1):
                logger.metrics({metric: score, "epoch": epoch}, step=epoch)
            logger.terminate("FINISHED")
        finals = [t.scores[-1] for t in trials]
        best = max(finals) if metric == "val_accuracy" else min(finals)
        tracking.logger_for(config, stage).metrics({f"best_{metric}": best}, step=0)
    register_champion(config, pipeline)
    return pipeline, stage


def register_champion(config: GraftConfig, pipeline_run_id: str | None) -> str:
    """A new version of ``export.model_name``, logged in an export run under
    ``pipeline_run_id`` and tagged with it (None: an untagged version of an unknown run), made
    the champion; its number."""
    uri = config.resolved_tracking_uri()
    client = MlflowClient(uri, uri)
    name = config.export.model_name
    if not client.search_registered_models(f"name = '{name}'"):
        client.create_registered_model(name)
    export = client.create_run(tracking.experiment_id(config), run_name="export")
    tags = {"pipeline_run_id": pipeline_run_id} if pipeline_run_id else {}
    version = client.create_model_version(
        name, f"runs:/{export.info.run_id}/model", export.info.run_id, tags=tags
    )
    client.set_registered_model_alias(name, "champion", str(version.version))
    return str(version.version)
