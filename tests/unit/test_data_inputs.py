"""data-prep logs each task's split manifests as MLflow dataset inputs (real SQLite MLflow)."""

from pathlib import Path

from mlflow.tracking import MlflowClient

from graft import stages
from graft.config import GraftConfig, load_config
from graft.data.splits import SPLIT_MANIFEST_FILE, read_task_splits

CONTEXTS = {"train": "train", "val": "validation", "test": "test"}


def _config(tmp_path: Path) -> GraftConfig:
    return load_config(
        preset="tiny",
        overrides=[
            f"work_dir={tmp_path / 'work'}",
            f"tracking.tracking_uri=sqlite:///{tmp_path / 'mlflow.db'}",
            "tracking.experiment_name=inputs",
        ],
    )


def _inputs(config: GraftConfig, parent_run_id: str) -> dict[str, tuple[str, str]]:
    """name -> (context, digest) of the data-prep run's dataset inputs."""
    uri = config.resolved_tracking_uri()
    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("inputs")
    (run,) = client.search_runs(
        [experiment.experiment_id],
        filter_string=f"tags.`graft.stage` = 'data-prep' AND "
        f"tags.`mlflow.parentRunId` = '{parent_run_id}'",
    )
    found = {}
    for item in run.inputs.dataset_inputs:
        tags = {tag.key: tag.value for tag in item.tags}
        found[item.dataset.name] = (tags["mlflow.data.context"], item.dataset.digest)
    return found


def test_split_manifests_are_dataset_inputs_with_stable_digests(tmp_path: Path) -> None:
    config = _config(tmp_path)
    first = stages.data_prep.run(config, str(tmp_path / "a" / "dataset"))
    second = stages.data_prep.run(config, str(tmp_path / "b" / "dataset"))
    assert first.dataset_hash == second.dataset_hash
    logged = _inputs(config, first.parent_run_id)

    splits = read_task_splits(Path(first.dataset_dir) / SPLIT_MANIFEST_FILE)
    expected = {
        f"{s.task}-{s.split}-{first.dataset_hash}": (CONTEXTS[s.split], s.digest) for s in splits
    }
    assert len(expected) == 6  # source and target, each train/validation/test
    assert logged == expected
    # the same data and seed give the same rows, so the same digests in a later run
    assert _inputs(config, second.parent_run_id) == logged
    # and different rows give different digests
    digests = [digest for _, digest in logged.values()]
    assert len(set(digests)) == len(digests)
