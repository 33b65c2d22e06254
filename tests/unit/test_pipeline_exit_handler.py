"""A failed pipeline run on this machine (KFP's local runner, the real pipeline) ends its MLflow
parent run FAILED through the pipeline's exit task, and still reports the stage that failed.

Pretrain dies here before it opens its own MLflow run (it refuses a RayJob whose pods could not
reach a SQLite tracking store), which leaves MLflow as a killed stage leaves it: nothing of the
stage ends the parent run. No Ray, no server: three KFP tasks, about 20 s on 2 cores."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import mlflow
import pytest
from local_tracking import tiny_config_tracked_in

from graft.config import FINALIZE_TASK
from graft.errors import PipelineStageError
from graft.io import tracking
from graft.kfp import local_run
from graft.kfp.local_run import run_local, stage_log_dir
from graft.kfp.stage_logs import StageOutcome
from pipeline_runs import pipeline_runs


class Outcomes:
    """A StageListener that keeps each task's outcome, in order."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, StageOutcome]] = []

    def stage_started(self, stage: str, log: Path) -> None:
        pass

    def stage_finished(self, stage: str, outcome: StageOutcome, seconds: float, log: Path) -> None:
        self.seen.append((stage, outcome))


@pytest.fixture
def _local_runner_reset() -> Iterator[None]:
    from kfp import local

    yield
    # kfp.local keeps its settings process-wide: later tests start without them
    local.config.LocalExecutionConfig.instance = None


@pytest.mark.usefixtures("_local_runner_reset")
def test_a_failed_stage_leaves_the_parent_run_failed_not_running(tmp_path: Path) -> None:
    config = tiny_config_tracked_in(
        tmp_path,
        "ray.mode=rayjob",
        "ray.staging_uri=s3://b/stage",
        "cluster.stages.pretrain.retries=0",  # the local runner honours KFP's retry policy
    )
    outcomes = Outcomes()

    with pytest.raises(PipelineStageError) as failed:
        run_local(config, listener=outcomes)

    # the error names the stage that failed, not the exit task that ran after it
    assert str(failed.value).startswith("stage 'pretrain' failed: graft.errors.ConfigError: ")
    assert outcomes.seen == [
        ("open-run", "done"),
        ("monitor", "done"),
        ("data-prep", "done"),
        ("pretrain", "failed"),
        (FINALIZE_TASK, "done"),
    ]
    runs = pipeline_runs(mlflow.MlflowClient(config.resolved_tracking_uri()), "unit")
    assert runs.parent.info.status == "FAILED"  # RUNNING for ever before the exit task
    reason = runs.parent.data.tags[tracking.FAILURE_TAG]
    assert reason.startswith("KFP run ") and " ended FAILED" in reason
    assert runs.parent.data.tags[tracking.KFP_RUN_ID_TAG] in reason
    assert {name: run.info.status for name, run in runs.stages.items()} == {
        "monitor": "FINISHED",
        "data-prep": "FINISHED",
    }
    finalize_log = (stage_log_dir(config) / f"{FINALIZE_TASK}.log").read_text()
    assert "ending FAILED the MLflow runs it left RUNNING" in finalize_log


@pytest.mark.usefixtures("_local_runner_reset")
def test_a_rerun_on_the_same_data_and_config_takes_data_prep_from_kfps_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """KFP's own cache (the local runner's, as a server's) serves data-prep again: its inputs
    are the config and the data's digest, nothing of the run. open-run runs every time. Once
    Graft's code changed (another digest of the package), data-prep runs again."""
    config = tiny_config_tracked_in(
        tmp_path,
        "ray.mode=rayjob",
        "ray.staging_uri=s3://b/stage",
        "cluster.stages.pretrain.retries=0",
    )
    client = mlflow.MlflowClient(config.resolved_tracking_uri())
    seen = []
    for _ in range(2):
        outcomes = Outcomes()
        with pytest.raises(PipelineStageError, match="stage 'pretrain' failed"):
            run_local(config, listener=outcomes, cache=True)
        seen.append(outcomes.seen)
    # the listener hears the cached task as served from the cache, the others as before
    assert dict(seen[0])["data-prep"] == "done" and dict(seen[1])["data-prep"] == "cached"
    assert [(s, o) for s, o in seen[1] if s != "data-prep"] == [
        (s, o) for s, o in seen[0] if s != "data-prep"
    ]
    parents = client.search_runs(
        [client.get_experiment_by_name("unit").experiment_id],
        filter_string="tags.`graft.kind` = 'pipeline'",
        order_by=["attributes.start_time ASC"],
    )
    assert len(parents) == 2  # each run's open-run opened its own parent run
    assert {p.data.tags[tracking.DATA_DIGEST_TAG] for p in parents} == {
        parents[0].data.tags[tracking.DATA_DIGEST_TAG]
    }
    data_preps = client.search_runs(
        [parents[0].info.experiment_id], filter_string="tags.`graft.stage` = 'data-prep'"
    )
    # one data-prep ran, under the first run's parent; the second took its outputs
    assert [r.data.tags[tracking.PARENT_TAG] for r in data_preps] == [parents[0].info.run_id]

    monkeypatch.setattr(local_run, "graft_code_digest", lambda: "another-graft")
    outcomes = Outcomes()
    with pytest.raises(PipelineStageError, match="stage 'pretrain' failed"):
        run_local(config, listener=outcomes, cache=True)
    assert dict(outcomes.seen)["data-prep"] == "done"
    data_preps = client.search_runs(
        [parents[0].info.experiment_id], filter_string="tags.`graft.stage` = 'data-prep'"
    )
    assert len(data_preps) == 2
