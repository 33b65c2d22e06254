"""An image folder of PNGs with named class folders through the whole tiny pipeline, started
as a user does (`graft run` in a subprocess): the registered champion answers with the
folder names (issue 20)."""

from __future__ import annotations

from pathlib import Path

import mlflow
import numpy as np
import pytest

from graft.data.sources import load_source
from image_folders import digits_folder
from pipeline_runs import graft_run, prepared_manifest

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]


def test_an_image_folder_runs_end_to_end_and_predicts_class_names(tmp_path: Path) -> None:
    folder = digits_folder(tmp_path / "digits", per_class=60)
    work = tmp_path / "work"
    overrides = [
        f"data.source={folder}",
        f"work_dir={work}",
        # no class-split flag: the tiny preset's split belongs to its own dataset (digits)
        "data.image.augment.crop_padding=1",  # train batches shifted by up to a pixel
    ]
    graft_run(overrides)

    for stage in ("pretrain", "transfer-finetune"):
        log = (work / "logs" / f"{stage}.log").read_text()
        assert "train batches augmented: crop_padding=1, horizontal_flip=False" in log

    manifest = prepared_manifest(work)
    assert manifest.tasks["target"].class_names == ["one", "two", "zero"]
    assert manifest.input_shape == [1, 8, 8]

    # the champion as anyone loads it, from the run's default tracking store
    mlflow.set_tracking_uri(f"sqlite:///{work / 'mlflow.db'}")
    model = mlflow.pyfunc.load_model("models:/graft-tiny@champion")
    raw = load_source(str(folder), "label")
    rows = np.arange(0, len(raw.y), 7)
    answer = model.predict(raw.x[rows])
    labels = list(answer["label"])
    assert set(labels) <= {"one", "two", "zero"}
    truth = [raw.class_names[i] for i in raw.y[rows]]
    assert np.mean([a == b for a, b in zip(labels, truth, strict=True)]) > 0.8
