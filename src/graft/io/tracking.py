"""Every MLflow call of Graft goes through this module or graft.io.registry (the model
registry): runs, params, metrics, artifacts and dataset inputs.

Graft uses ``MlflowClient`` with explicit run ids rather than MLflow's fluent "active run":
stages run in separate processes (KFP tasks, Ray workers, Tune trials), and an explicit id is
the only way they can all write into one parent run without collisions.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import tempfile
import time
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from graft import __version__
from graft.config import GraftConfig
from graft.config.runtime import GIT_COMMIT_ENV, IMAGE_ENV, IMAGE_OUTSIDE_AN_IMAGE

log = logging.getLogger(__name__)

PARENT_TAG = "mlflow.parentRunId"
RUN_NAME_TAG = "mlflow.runName"
KFP_RUN_ID_TAG = "graft.kfp_run_id"  # on the parent run: the KFP run it belongs to
# on the parent run: what the cacheable stages' results depend on (graft.stages.open_run)
DATA_DIGEST_TAG = "graft.data_digest"
CONFIG_DIGEST_TAG = "graft.config_digest"
FAILURE_TAG = "graft.failure"  # on a run the pipeline's exit task ended FAILED: why


def _client(tracking_uri: str) -> Any:
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)


def client_for(config: GraftConfig) -> Any:
    return _client(config.resolved_tracking_uri())


def experiment_id(config: GraftConfig) -> str:
    client = client_for(config)
    wanted = config.tracking.artifact_location
    experiment = client.get_experiment_by_name(config.tracking.experiment_name)
    if experiment is not None:
        if wanted and experiment.artifact_location.rstrip("/") != wanted.rstrip("/"):
            # MLflow fixes an experiment's artifact root at creation
            log.warning(
                "experiment '%s' keeps its artifacts at %s, not tracking.artifact_location=%s; "
                "use a new tracking.experiment_name to move them",
                config.tracking.experiment_name,
                experiment.artifact_location,
                wanted,
            )
        return str(experiment.experiment_id)
    try:
        return str(
            client.create_experiment(config.tracking.experiment_name, artifact_location=wanted)
        )
    except Exception:
        # another process created it between our lookup and create
        experiment = client.get_experiment_by_name(config.tracking.experiment_name)
        if experiment is None:
            raise
        return str(experiment.experiment_id)


def git_commit() -> str:
    if os.environ.get(GIT_COMMIT_ENV):
        return os.environ[GIT_COMMIT_ENV]
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            cwd=Path(__file__).parent,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip() or "unknown"


def flatten(data: dict[str, Any], prefix: str = "") -> dict[str, str]:
    flat: dict[str, str] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = json.dumps(value) if not isinstance(value, str) else value
    return flat


def start_pipeline_run(
    config: GraftConfig, kfp_run_id: str, tags: dict[str, str] | None = None
) -> str:
    """The parent run of one pipeline run: resolved config as params and as an artifact."""
    from mlflow.entities import Param

    client = client_for(config)
    run = client.create_run(
        experiment_id(config),
        run_name=f"{config.name}-pipeline",
        tags={
            "graft.kind": "pipeline",
            KFP_RUN_ID_TAG: kfp_run_id,
            "graft.git_commit": git_commit(),
            "graft.version": __version__,
            "graft.image": os.environ.get(IMAGE_ENV, IMAGE_OUTSIDE_AN_IMAGE),
            **(tags or {}),
        },
    )
    params = [Param(k, v[:6000]) for k, v in flatten(config.model_dump(mode="json")).items()]
    for start in range(0, len(params), 100):
        client.log_batch(run.info.run_id, params=params[start : start + 100])
    client.log_dict(run.info.run_id, config.model_dump(mode="json"), "config/resolved.json")
    return str(run.info.run_id)


ENDED_BADLY = ("FAILED", "KILLED")


def finish_pipeline_run(config: GraftConfig, run_id: str, status: str = "FINISHED") -> None:
    client_for(config).set_terminated(run_id, status)


@contextmanager
def stage_run(config: GraftConfig, parent_run_id: str, stage: str) -> Iterator[str]:
    """A nested run for one stage. If the stage raises (SIGTERM included: graft.io.termination)
    it ends FAILED, and so does the pipeline's parent run, which would otherwise stay RUNNING
    for ever; a retried stage puts the parent back to RUNNING."""
    client = client_for(config)
    parent_status = _run_status(client, parent_run_id)
    if parent_status in ENDED_BADLY:
        client.update_run(parent_run_id, status="RUNNING")
    run = client.create_run(
        experiment_id(config),
        run_name=stage,
        tags={PARENT_TAG: parent_run_id, "graft.stage": stage, "graft.kind": "stage"},
    )
    try:
        with terminated_when_done(client, str(run.info.run_id)) as run_id:
            yield run_id
    except BaseException:
        if parent_status is not None:
            client.set_terminated(parent_run_id, "FAILED")
        raise


def _run_status(client: Any, run_id: str) -> str | None:
    """The run's status; None if the store has no such run (a stage run on its own, with a
    made-up parent id)."""
    from mlflow.exceptions import MlflowException

    try:
        return str(client.get_run(run_id).info.status)
    except MlflowException:
        return None


@contextmanager
def terminated_when_done(client: Any, run_id: str) -> Iterator[str]:
    """Yield ``run_id``; end the run FINISHED, or FAILED if the body raises."""
    try:
        yield run_id
    except BaseException:
        client.set_terminated(run_id, "FAILED")
        raise
    client.set_terminated(run_id, "FINISHED")


def create_child_run(
    tracking_uri: str, experiment: str, parent_run_id: str, name: str, tags: dict[str, str]
) -> str:
    client = _client(tracking_uri)
    run = client.create_run(experiment, run_name=name, tags={PARENT_TAG: parent_run_id, **tags})
    return str(run.info.run_id)


class RunLogger:
    """Logs into one existing run by id; safe to use from Ray workers and Tune trials."""

    def __init__(self, tracking_uri: str, run_id: str) -> None:
        self.tracking_uri = tracking_uri
        self.run_id = run_id
        self._client = _client(tracking_uri)

    def metrics(self, values: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        batch = [Metric(k, float(v), now, step) for k, v in values.items()]
        self._client.log_batch(self.run_id, metrics=batch)

    def params(self, values: dict[str, Any]) -> None:
        from mlflow.entities import Param

        batch = [Param(k, str(v)[:6000]) for k, v in values.items()]
        self._client.log_batch(self.run_id, params=batch)

    def tags(self, values: dict[str, str]) -> None:
        for key, value in values.items():
            self._client.set_tag(self.run_id, key, value)

    def artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        path = Path(path)
        if path.is_dir():
            self._client.log_artifacts(self.run_id, str(path), artifact_path)
        else:
            self._client.log_artifact(self.run_id, str(path), artifact_path)

    def dict(self, data: dict[str, Any], artifact_file: str) -> None:
        self._client.log_dict(self.run_id, data, artifact_file)

    def terminate(self, status: str) -> None:
        self._client.set_terminated(self.run_id, status)


def logger_for(config: GraftConfig, run_id: str) -> RunLogger:
    return RunLogger(config.resolved_tracking_uri(), run_id)


def runs_tagged(config: GraftConfig, tags: dict[str, str]) -> list[str]:
    """Ids of the runs of the experiment carrying every one of ``tags`` (any status; deleted
    runs excluded), oldest first."""
    from mlflow.entities import ViewType

    conditions = " AND ".join(f"tags.`{key}` = '{value}'" for key, value in sorted(tags.items()))
    runs = client_for(config).search_runs(
        [experiment_id(config)],
        filter_string=conditions,
        run_view_type=ViewType.ACTIVE_ONLY,
        order_by=["attributes.start_time ASC"],
    )
    return [str(run.info.run_id) for run in runs]


@dataclass(frozen=True)
class RunRecord:
    """What a run holds, read back: its status, tags, params (as logged: strings) and each
    metric's latest value (the one at its highest step)."""

    run_id: str
    status: str
    start_time: int  # ms since the epoch
    tags: dict[str, str]
    params: dict[str, str]
    metrics: dict[str, float]


def _record(run: Any) -> RunRecord:
    return RunRecord(
        run_id=str(run.info.run_id),
        status=str(run.info.status),
        start_time=int(run.info.start_time or 0),
        tags=dict(run.data.tags),
        params=dict(run.data.params),
        metrics={k: float(v) for k, v in run.data.metrics.items()},
    )


def run_record(config: GraftConfig, run_id: str) -> RunRecord | None:
    """Run ``run_id`` read back; None when the store has no such run."""
    from mlflow.exceptions import MlflowException

    try:
        return _record(client_for(config).get_run(run_id))
    except MlflowException:
        return None


def child_runs(config: GraftConfig, parent_run_id: str) -> list[RunRecord]:
    """The runs directly under ``parent_run_id`` (deleted runs excluded), oldest first; [] when
    the store has no such parent."""
    from mlflow.entities import ViewType
    from mlflow.exceptions import MlflowException

    client = client_for(config)
    try:
        experiment = client.get_run(parent_run_id).info.experiment_id
    except MlflowException:
        return []
    found: list[RunRecord] = []
    token = None
    while True:
        page = client.search_runs(
            [experiment],
            filter_string=f"tags.`{PARENT_TAG}` = '{parent_run_id}'",
            run_view_type=ViewType.ACTIVE_ONLY,
            order_by=["attributes.start_time ASC"],
            page_token=token,
        )
        found += [_record(run) for run in page]
        token = page.token
        if not token:
            return found


def run_dict(config: GraftConfig, run_id: str, artifact_file: str) -> dict[str, Any] | None:
    """The JSON artifact ``artifact_file`` of run ``run_id`` (as :meth:`RunLogger.dict` logs
    it); None when the run has no such file."""
    client = client_for(config)
    folder = artifact_file.rpartition("/")[0] or None
    if not any(f.path == artifact_file for f in client.list_artifacts(run_id, folder)):
        return None
    with tempfile.TemporaryDirectory() as into:
        path = client.download_artifacts(run_id, artifact_file, into)
        data = json.loads(Path(path).read_text())
    return data if isinstance(data, dict) else None


def delete_run_tags(config: GraftConfig, run_id: str, keys: list[str]) -> None:
    client = client_for(config)
    for key in keys:
        client.delete_tag(run_id, key)


def pipeline_run_ids(config: GraftConfig, kfp_run_id: str) -> list[str]:
    """The parent runs data-prep opened for KFP run ``kfp_run_id`` (one per data-prep attempt
    that got that far), oldest first. Creates nothing: no store or no experiment, no runs."""
    uri = config.resolved_tracking_uri()
    if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).exists():
        return []
    client = _client(uri)
    experiment = client.get_experiment_by_name(config.tracking.experiment_name)
    if experiment is None:
        return []
    runs = client.search_runs(
        [experiment.experiment_id],
        filter_string=f"tags.`{KFP_RUN_ID_TAG}` = '{kfp_run_id}'",
        order_by=["attributes.start_time ASC"],
    )
    return [str(run.info.run_id) for run in runs]


def fail_unfinished_runs(
    config: GraftConfig, parent_run_id: str, reason: str, parent_too: bool = True
) -> list[str]:
    """End FAILED every run under ``parent_run_id`` (stage runs, trials) that is still RUNNING,
    and with ``parent_too`` the parent if it is; tag each, and a parent that did not finish,
    with ``reason`` (``graft.failure``). A FINISHED parent stays as export left it. Returns
    the ids ended."""
    client = client_for(config)
    parent = client.get_run(parent_run_id)
    ended = []
    runs = _runs_under(client, parent.info.experiment_id, parent_run_id)
    for run in [*runs, parent] if parent_too else runs:
        if run.info.status in ("RUNNING", "SCHEDULED"):
            client.set_tag(run.info.run_id, FAILURE_TAG, reason[:5000])
            client.set_terminated(run.info.run_id, "FAILED")
            ended.append(str(run.info.run_id))
        elif run is parent and run.info.status != "FINISHED":
            client.set_tag(run.info.run_id, FAILURE_TAG, reason[:5000])
    return ended


def _runs_under(client: Any, experiment: str, run_id: str) -> list[Any]:
    """Every run nested under ``run_id``, at any depth (MLflow filters one parent at a time)."""
    found: list[Any] = []
    parents = [run_id]
    while parents:
        condition = f"tags.`{PARENT_TAG}` = '{parents.pop()}'"
        token = None
        while True:
            page = client.search_runs([experiment], condition, page_token=token)
            found += page
            parents += [str(child.info.run_id) for child in page]
            token = page.token
            if not token:
                break
    return found


# ----------------------------------------------------------------------------- datasets

# MLflow's conventional dataset contexts for Graft's split names
SPLIT_CONTEXTS = {"train": "train", "val": "validation", "test": "test"}


class SplitRows(Protocol):
    """One task's rows of one split (``graft.data.splits.TaskSplit``): io sits below data."""

    task: str
    split: str
    row_ids: list[int]
    row_hashes: list[str]
    digest: str


def _dataset_source(uri: str) -> Any:
    """The rows' origin as MLflow models it: the file or S3 URI when MLflow knows the scheme,
    else (``builtin:*``) a code source naming it."""
    from mlflow.data.code_dataset_source import CodeDatasetSource
    from mlflow.data.dataset_source_registry import resolve_dataset_source
    from mlflow.exceptions import MlflowException

    with warnings.catch_warnings():
        # a plain path matches both the "" and "file" local sources: either is right
        warnings.simplefilter("ignore", UserWarning)
        try:
            return resolve_dataset_source(uri)
        except MlflowException:
            return CodeDatasetSource(tags={"graft.data_source": uri})


def log_split_inputs(
    config: GraftConfig, run_id: str, splits: Sequence[SplitRows], dataset_hash: str
) -> None:
    """Each task's split manifest (row ids and row hashes) as an MLflow dataset input of the
    run: named ``<task>-<split>-<dataset hash>``, context train/validation/test, digest the
    manifest's, so two runs over the same rows show the same digest in the UI."""
    import pandas as pd
    from mlflow.data.pandas_dataset import from_pandas
    from mlflow.entities import DatasetInput, InputTag
    from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

    source = _dataset_source(config.data.source)
    inputs = []
    for split in splits:
        frame = pd.DataFrame({"row_id": split.row_ids, "row_hash": split.row_hashes})
        with warnings.catch_warnings():
            # the schema hint about integer columns and missing values: row ids have none
            warnings.filterwarnings("ignore", message="Hint: Inferred schema contains integer")
            dataset = from_pandas(
                frame,
                source=source,
                name=f"{split.task}-{split.split}-{dataset_hash}",
                digest=split.digest,
            )
        tags = [
            InputTag(key=MLFLOW_DATASET_CONTEXT, value=SPLIT_CONTEXTS[split.split]),
            InputTag(key="graft.task", value=split.task),
            InputTag(key="graft.split", value=split.split),
        ]
        inputs.append(DatasetInput(dataset=dataset._to_mlflow_entity(), tags=tags))
    client_for(config).log_inputs(run_id, datasets=inputs)
