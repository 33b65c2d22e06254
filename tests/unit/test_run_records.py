"""A stage output that KFP served from its cache is named under the pipeline run that reused
it: data-prep records its MLflow run next to the dataset, and transfer-finetune tags its own
parent run with the runs of another pipeline run it was handed."""

from __future__ import annotations

from pathlib import Path

from local_tracking import tiny_config_tracked_in
from mlflow.tracking import MlflowClient

from graft import stages
from graft.io import tracking
from graft.stages.run_records import REUSED_TAG_PREFIX, link_reused_runs


def test_a_dataset_computed_by_another_pipeline_run_is_tagged_on_this_one(
    tmp_path: Path,
) -> None:
    config = tiny_config_tracked_in(tmp_path)
    first = tracking.start_pipeline_run(config, "week-1")
    prepared = stages.data_prep.run(config, str(tmp_path / "data"), parent_run_id=first)
    client = MlflowClient(config.resolved_tracking_uri())
    (data_prep_run,) = client.search_runs(
        [client.get_run(first).info.experiment_id], "tags.`graft.stage` = 'data-prep'"
    )

    # the run that computed it names nothing: its own stage run is under its parent
    assert link_reused_runs(config, first, [prepared.dataset_dir]) == {}
    assert not any(k.startswith(REUSED_TAG_PREFIX) for k in client.get_run(first).data.tags)

    # a rerun that KFP served the same folder to
    second = tracking.start_pipeline_run(config, "week-1-again")
    unrecorded = tmp_path / "imported-backbone"  # no record: skipped
    unrecorded.mkdir()
    reused = link_reused_runs(config, second, [prepared.dataset_dir, unrecorded])
    assert reused == {"data-prep": data_prep_run.info.run_id}
    tags = client.get_run(second).data.tags
    assert tags[f"{REUSED_TAG_PREFIX}data-prep"] == data_prep_run.info.run_id
