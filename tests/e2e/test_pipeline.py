"""The whole pipeline through the KFP local runner on the tiny preset, with real Ray and a
real MLflow tracking server, started as a user does: `graft run` in a subprocess."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from graft.config import load_config
from graft.tune.runs import OUTCOME_TAG
from pipeline_runs import pipeline_runs

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

STAGES = {"data-prep", "pretrain", "transfer-finetune", "tune", "evaluate", "export"}


def test_tiny_pipeline_trains_tunes_evaluates_exports_registers(
    tmp_path: Path, mlflow_server: str
) -> None:
    work = tmp_path / "work"
    overrides = [
        f"work_dir={work}",
        f"tracking.tracking_uri={mlflow_server}",
        "tracking.experiment_name=e2e",
        "export.model_name=graft-e2e",
    ]
    tiny = load_config(preset="tiny", overrides=overrides)
    run = subprocess.run(
        [sys.executable, "-m", "graft.cli", "run", "--preset", "tiny"]
        + [arg for override in overrides for arg in ("--set", override)],
        capture_output=True,
        text=True,
        timeout=870,
        env={**os.environ, "COLUMNS": "80"},  # a narrow terminal: the table's paths fold
    )
    output = run.stdout + run.stderr
    assert run.returncode == 0, output[-6000:]

    # a quiet run: a line per stage and the summary; each stage's whole output in its log
    lines = output.splitlines()
    assert len(lines) < 60, output
    assert "Got executor_input" not in output
    for stage in STAGES:
        assert sum(line.startswith(f"✓ {stage} ") for line in lines) == 1, output
        log = (work / "logs" / f"{stage}.log").read_text()
        assert "Executing task" in log  # the KFP local runner's lines
        assert "Got executor_input" in log  # the executor's dump of its inputs
        assert "finished with status" in log
    assert "Running pipeline" in (work / "logs" / "pipeline.log").read_text()
    assert f"{work / 'logs'}" in output

    # the export stage's output, as `graft run` printed it in its table
    (summary_file,) = (work / "kfp").glob("*/export/**/summary.json")
    summary = json.loads(summary_file.read_text())
    assert summary["gate_passed"] is True
    assert summary["accuracy"] > summary["baseline_accuracy"]
    assert set(summary["aliases"]) == {"challenger", "champion"}
    assert Path(summary["torchscript"]).stat().st_size > 0
    assert Path(summary["onnx"]).stat().st_size > 0

    client = MlflowClient(tracking_uri=mlflow_server, registry_uri=mlflow_server)
    runs = pipeline_runs(client, "e2e")
    parent, children, trials = runs.parent, runs.stages, runs.trials
    assert parent.info.status == "FINISHED"
    assert parent.data.tags["graft.dataset_hash"]
    assert set(children) == STAGES
    assert all(r.info.status == "FINISHED" for r in children.values())
    assert len(trials) == tiny.tune.num_samples
    assert all("val_accuracy" in r.data.metrics for r in trials)
    # the search ended every trial's run with how the trial ended, ASHA's cuts included
    assert {r.info.status for r in trials} == {"FINISHED"}
    assert {r.data.tags[OUTCOME_TAG] for r in trials} <= {"completed", "early_stopped", "cut"}
    pretrain_history = client.get_metric_history(children["pretrain"].info.run_id, "val_loss")
    assert len(pretrain_history) >= 2

    version = client.get_model_version_by_alias("graft-e2e", "champion")
    assert version.version == summary["model_version"]
    assert version.run_id == children["export"].info.run_id

    # tiny's LR-finder pre-step narrowed the searched range before the trials
    tune_metrics = children["tune"].data.metrics
    assert tune_metrics["lr_search_low"] < tune_metrics["lr_search_high"]
    assert all(
        tune_metrics["lr_search_low"]
        <= float(r.data.params["finetune.optimizer.lr"])
        <= tune_metrics["lr_search_high"]
        for r in trials
    )
    # the evaluate stage ran the label-shuffle control and the A/B report on the test rows
    evaluation = children["evaluate"].data.metrics
    assert evaluation["test_accuracy"] > evaluation["label_shuffle_control_accuracy"]
    assert evaluation["ab_seeds"] == tiny.evaluate.transfer_report.seeds
    assert 0.0 <= evaluation["ab_transfer_mean_accuracy"] <= 1.0
