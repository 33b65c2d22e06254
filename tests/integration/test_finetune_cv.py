"""The transfer-finetune stage with evaluate.protocol=kfold: the Ray fit as usual, plus the
in-process K-fold estimate logged to the same MLflow stage run and written next to the model."""

import json
from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient

from graft import stages
from graft.config import load_config
from graft.io import tracking
from graft.nn.models import build_model
from graft.train.model_dir import MODEL_FILE, SPEC_FILE
from graft.train.stage_requests import source_model_spec

pytestmark = [pytest.mark.ray, pytest.mark.slow, pytest.mark.timeout(600)]


def test_finetune_stage_runs_the_configured_protocol(
    ray_local: None, dataset: str, tmp_path: Path
) -> None:
    config = load_config(
        preset="tiny",
        overrides=[
            f"work_dir={tmp_path}",
            f"tracking.tracking_uri=sqlite:///{tmp_path / 'mlflow.db'}",
            "finetune.num_workers=1",
            "finetune.phases=[{trainable: head, epochs: 1}, {trainable: all, epochs: 2}]",
            "evaluate.protocol.name=kfold",
            "evaluate.protocol.folds=3",
        ],
    )
    pretrained = tmp_path / "pretrained"
    pretrained.mkdir()
    spec = source_model_spec(config, dataset)
    torch.save(build_model(spec).state_dict(), pretrained / MODEL_FILE)
    spec.save(pretrained / SPEC_FILE)
    parent = tracking.start_pipeline_run(config, "integration")

    out = stages.finetune.run(config, dataset, str(pretrained), str(tmp_path / "model"), parent)

    run = MlflowClient(tracking_uri=config.resolved_tracking_uri()).get_run(out.run_id)
    assert run.data.tags["cv_protocol"] == "kfold"
    assert run.data.metrics["cv_folds"] == 3
    assert 0.0 <= run.data.metrics["cv_mean_val_accuracy"] <= 1.0
    report = json.loads((Path(out.model_dir) / "cv.json").read_text())
    assert report["fits"] == 3
    assert (Path(out.model_dir) / MODEL_FILE).exists()  # the Ray fit's model is still there
