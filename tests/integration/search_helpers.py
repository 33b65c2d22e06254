"""A tune-stage search on a Ray of its own, shared by the Ray Tune tests."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

from graft.config import GraftConfig
from graft.data.prepare import prepare_dataset
from graft.io import tracking
from graft.io.ray_runtime import ensure_ray, shutdown_ray
from graft.tune.search import SearchResult, run_search


class OwnSearch(NamedTuple):
    result: SearchResult
    dataset: Path
    stage_run_id: str  # the tune stage's MLflow run, the trials' parent


def search_on_own_ray(
    config: GraftConfig,
    root: Path,
    untrained_model_dir: Callable[..., Path],
    experiment_name: str,
) -> OwnSearch:
    """The tune stage's search as the pipeline runs it: a fresh dataset, an untrained source
    model (a search's mechanics do not depend on what it learned), the tune stage's MLflow
    run under a pipeline run, and a local Ray of its own."""
    dataset = root / "dataset"
    prepare_dataset(config.data, config.seed, dataset)
    pretrained = untrained_model_dir(config, dataset, root / "pretrained")
    parent = tracking.start_pipeline_run(config, "test")
    stage = tracking.create_child_run(
        config.resolved_tracking_uri(), tracking.experiment_id(config), parent, "tune", {}
    )
    ensure_ray(config.ray)
    try:
        result = run_search(
            config, str(dataset), str(pretrained), root / "out", stage, experiment_name
        )
    finally:
        shutdown_ray()
    return OwnSearch(result, dataset, stage)
