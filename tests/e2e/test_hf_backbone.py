"""The image folder of issue 20's end-to-end runs with a Hugging Face ResNet as the backbone:
`graft run --preset tiny` with model.family=hf and model.pretrained=DIR, DIR holding a
random-weight ResNet saved here with save_pretrained (never downloaded). Pretrain is skipped,
import-backbone takes its place, and the registered model answers with the folder names."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import numpy as np
import pytest

from graft.data.sources import load_source
from hf_models import saved_hf_model
from image_folders import digits_folder
from pipeline_runs import graft_run, pipeline_runs

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]


def test_an_hf_resnet_backbone_is_finetuned_end_to_end(tmp_path: Path) -> None:
    folder = digits_folder(tmp_path / "digits", per_class=60)
    _, resnet = saved_hf_model("resnet", tmp_path / "resnet")
    work = tmp_path / "work"
    graft_run(
        [
            f"data.source={folder}",
            "model.family=hf",
            f"model.pretrained={resnet}",
            f"work_dir={work}",
        ]
    )

    logs = {log.stem for log in (work / "logs").glob("*.log")}
    assert "import-backbone" in logs and "pretrain" not in logs  # the DAG's other branch
    mlflow.set_tracking_uri(f"sqlite:///{work / 'mlflow.db'}")
    runs = pipeline_runs(mlflow.MlflowClient(), "graft")
    assert "pretrain" not in runs.stages
    imported = runs.stages["import-backbone"]
    assert imported.data.params["model.pretrained"] == str(resnet)
    assert imported.data.metrics["backbone_blocks"] >= 3  # embedder, 2 stages, pooler

    # the registered model (challenger always; champion only if the gate passed)
    model = mlflow.pyfunc.load_model("models:/graft-tiny@challenger")
    raw = load_source(str(folder), "label")
    rows = np.arange(0, len(raw.y), 5)
    labels = list(model.predict(raw.x[rows])["label"])
    assert set(labels) <= {"one", "two", "zero"}
    truth = [raw.class_names[i] for i in raw.y[rows]]
    accuracy = float(np.mean([a == b for a, b in zip(labels, truth, strict=True)]))
    assert accuracy > 0.5, accuracy  # three classes: chance is a third
    card = json.loads(next((work / "kfp").glob("*/export/**/model_card.json")).read_text())
    assert "resnet" in json.dumps(card).lower()
