"""The test-split ledger, against a real SQLite MLflow: a model is scored on the sealed test
split once; a repeat is refused unless evaluate.allow_repeat_test, and then tagged."""

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient

from graft import stages
from graft.config import GraftConfig, load_config
from graft.data.holdout import default_holdout_dir
from graft.errors import HoldoutReuseError
from graft.evaluate.ledger import (
    CONTINUES_TAG,
    MODEL_TAG,
    PREVIOUS_TAG,
    REPEAT_TAG,
    SPLIT_TAG,
    model_fingerprint,
)
from graft.io import tracking
from graft.train.model_dir import MODEL_FILE, SPEC_FILE


def _config(tmp_path: Path, *overrides: str) -> GraftConfig:
    return load_config(
        preset="tiny",
        overrides=[
            f"work_dir={tmp_path / 'work'}",
            f"tracking.tracking_uri=sqlite:///{tmp_path / 'mlflow.db'}",
            "tracking.experiment_name=ledger",
            "evaluate.linear_baseline_max_iter=20",
            # these tests run the evaluate stage without a pretrained model to retrain from
            "evaluate.label_shuffle_control.enabled=false",
            "evaluate.transfer_report.enabled=false",
            *overrides,
        ],
    )


def _fingerprint(model_dir: str | Path) -> str:
    return model_fingerprint(Path(model_dir) / SPEC_FILE, Path(model_dir) / MODEL_FILE)


def _tags(config: GraftConfig, run_id: str) -> dict[str, str]:
    uri = config.resolved_tracking_uri()
    return dict(MlflowClient(tracking_uri=uri).get_run(run_id).data.tags)


def test_fingerprint_names_the_weights_not_the_directory(
    tmp_path: Path, untrained_model_dir: Callable[..., Path]
) -> None:
    config = _config(tmp_path)
    data = stages.data_prep.run(config, str(tmp_path / "data"))
    model = untrained_model_dir(config, data.dataset_dir, tmp_path / "m1", "target", seed=1)
    copy = Path(shutil.copytree(model, tmp_path / "elsewhere" / "m1"))
    assert _fingerprint(copy) == _fingerprint(model)
    other = untrained_model_dir(config, data.dataset_dir, tmp_path / "m2", "target", seed=2)
    assert _fingerprint(other) != _fingerprint(model)
    # one weight nudged by one ulp is another model
    state = torch.load(copy / MODEL_FILE, weights_only=True)
    first = next(iter(state))
    state[first].view(-1)[0] = torch.nextafter(state[first].view(-1)[0], torch.tensor(1e9))
    torch.save(state, copy / MODEL_FILE)
    assert _fingerprint(copy) != _fingerprint(model)


def test_second_look_is_refused_and_a_forced_one_is_tagged(
    tmp_path: Path, untrained_model_dir: Callable[..., Path]
) -> None:
    config = _config(tmp_path)
    data = stages.data_prep.run(config, str(tmp_path / "data"))
    model = str(untrained_model_dir(config, data.dataset_dir, tmp_path / "model", "target", seed=1))

    def evaluate(cfg: GraftConfig, name: str, parent: str) -> stages.EvaluateOutput:
        return stages.evaluate.run(
            cfg, data.dataset_dir, data.test_split_dir, model, str(tmp_path / name), parent
        )

    first = evaluate(config, "eval1", data.parent_run_id)
    tags = _tags(config, first.run_id)
    assert tags[MODEL_TAG] == _fingerprint(model)
    assert tags[SPLIT_TAG]
    assert tags[REPEAT_TAG] == "false"

    # another pipeline run (another parent run), same model, same test rows: refused, and
    # before anything is scored
    parent = stages.data_prep.run(config, str(tmp_path / "data2")).parent_run_id
    with pytest.raises(HoldoutReuseError, match=r"evaluate\.allow_repeat_test=true") as refused:
        evaluate(config, "eval2", parent)
    assert first.run_id in str(refused.value)
    assert "\n" not in str(refused.value)
    assert not (tmp_path / "eval2" / "metrics.json").exists()

    forced = evaluate(_config(tmp_path, "evaluate.allow_repeat_test=true"), "eval3", parent)
    assert forced.accuracy == first.accuracy
    tags = _tags(config, forced.run_id)
    assert tags[REPEAT_TAG] == "true"
    assert tags[PREVIOUS_TAG] == first.run_id
    assert tags[MODEL_TAG] == _fingerprint(model)

    # a different model is a first look
    other = str(untrained_model_dir(config, data.dataset_dir, tmp_path / "other", "target", seed=2))
    fresh = stages.evaluate.run(
        config, data.dataset_dir, data.test_split_dir, other, str(tmp_path / "eval4"), parent
    )
    assert _tags(config, fresh.run_id)[REPEAT_TAG] == "false"


def test_a_failed_upload_leaves_a_claim_that_only_the_same_pipeline_run_may_continue(
    tmp_path: Path,
    tiny_dataset_and_source: tuple[str, str],
    untrained_model_dir: Callable[..., Path],
) -> None:
    """The claim goes in before the test rows are read, so an evaluation whose artifact
    upload fails still holds it. A retry of that pipeline run (the same parent run, as KFP's
    retry has) continues the look; another pipeline run is refused."""
    dataset, _ = tiny_dataset_and_source
    artifacts = tmp_path / "artifacts"
    config = _config(tmp_path, f"tracking.artifact_location={artifacts}")
    model = str(untrained_model_dir(config, dataset, tmp_path / "model", "target", seed=3))
    pipeline_run, other_pipeline_run = (
        tracking.start_pipeline_run(config, kfp_run) for kfp_run in ("kfp-1", "kfp-2")
    )

    def evaluate(parent: str, name: str) -> stages.EvaluateOutput:
        holdout = str(default_holdout_dir(dataset))
        return stages.evaluate.run(config, dataset, holdout, model, str(tmp_path / name), parent)

    # the artifact store refuses the upload: its folder is a file for now
    artifacts.rename(tmp_path / "artifacts-away")
    artifacts.write_text("not a folder")
    with pytest.raises(OSError):
        evaluate(pipeline_run, "eval-failed")
    (failed,) = tracking.runs_tagged(config, {MODEL_TAG: _fingerprint(model)})
    client = MlflowClient(tracking_uri=config.resolved_tracking_uri())
    assert client.get_run(failed).info.status == "FAILED"
    artifacts.unlink()
    (tmp_path / "artifacts-away").rename(artifacts)

    retried = evaluate(pipeline_run, "eval-retried")
    tags = _tags(config, retried.run_id)
    assert tags[REPEAT_TAG] == "false"
    assert tags[CONTINUES_TAG] == failed
    assert (tmp_path / "eval-retried" / "gate.json").exists()

    with pytest.raises(HoldoutReuseError, match="of another pipeline run") as refused:
        evaluate(other_pipeline_run, "eval-other")
    assert f"evaluate run {failed} and 1 more" in str(refused.value)
