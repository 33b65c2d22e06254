"""The whole pipeline through the KFP local runner on the tiny preset, with real Ray and a
real MLflow tracking server, started as a user does: `graft run` in a subprocess."""

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import mlflow.artifacts
import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from graft.config import load_config
from graft.remote.command import RAY_STAGES, StageInputs
from graft.remote.kuberay_manifest import build_rayjob
from graft.tune.runs import OUTCOME_TAG
from model_runtime import clean_env, runtime_python
from pipeline_runs import (
    PipelineRuns,
    graft_run,
    graft_run_process,
    pipeline_runs,
    prepared_manifest,
)
from secret_scan import fake_credentials, hits_in_files, hits_in_text

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

SERVE_WITHOUT_GRAFT = Path(__file__).parents[1] / "serve_without_graft.py"
STAGES = {"monitor", "data-prep", "pretrain", "transfer-finetune", "tune", "evaluate", "export"}


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
    # fake credentials in the run's environment, for the secret scan at the end (the local
    # Ray instance uses the token; the others go unused by a local run but must leak nowhere)
    credentials = fake_credentials()
    # a narrow terminal: the table's paths fold
    # Ray's own folder for this run alone (short: Ray's socket paths must stay under 108 bytes)
    ray_tmp = Path(tempfile.mkdtemp(prefix="graft-e2e-ray-", dir="/tmp"))
    output = graft_run(
        overrides, env={**os.environ, **credentials, "COLUMNS": "80", "RAY_TMPDIR": str(ray_tmp)}
    )
    # one Ray instance for the whole run, which pretrain, finetune and tune joined (issue 21)
    sessions = [p for p in (ray_tmp / "ray").glob("session_2*") if p.is_dir()]
    assert len(sessions) == 1, sessions
    shutil.rmtree(ray_tmp, ignore_errors=True)

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
    _champion_serves_without_graft(mlflow_server, summary, work, tmp_path)

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
    _scan_for_credentials(client, runs, work, output, credentials, tmp_path)
    _rerun_reuses_data_prep_and_pretrain(overrides, work, client)


def _rerun_reuses_data_prep_and_pretrain(
    overrides: list[str], work: Path, client: MlflowClient
) -> None:
    """`graft run` again on the same data and config: KFP's local cache serves data-prep and
    pretrain (the run's own Ray has another address, which no task's inputs hold), and the
    new parent run names the runs it reused. finetune and tune train again, the same model
    bit for bit, and evaluate refuses to score it on the test split a second time."""
    ray_tmp = Path(tempfile.mkdtemp(prefix="graft-e2e-ray-", dir="/tmp"))
    rerun = graft_run_process(
        overrides, env={**os.environ, "COLUMNS": "100", "RAY_TMPDIR": str(ray_tmp)}
    )
    shutil.rmtree(ray_tmp, ignore_errors=True)
    output = rerun.stdout + rerun.stderr
    lines = output.splitlines()
    for stage in ("data-prep", "pretrain"):
        (line,) = [line for line in lines if line.startswith(f"✓ {stage} ")]
        assert line.endswith("cached (an earlier run's outputs)"), output
    for stage in ("transfer-finetune", "tune"):
        (line,) = [line for line in lines if line.startswith(f"✓ {stage} ")]
        assert "cached" not in line, output
    assert rerun.returncode != 0 and "already scored on this test split" in output, output
    runs = client.search_runs(
        [client.get_experiment_by_name("e2e").experiment_id],
        filter_string="tags.`graft.kind` = 'pipeline'",
        order_by=["attributes.start_time ASC"],
    )
    assert len(runs) == 2
    first, second = runs
    reused = {second.data.tags[f"graft.reused.{stage}"] for stage in ("data-prep", "pretrain")}
    parents = {client.get_run(run_id).data.tags["mlflow.parentRunId"] for run_id in reused}
    assert len(reused) == 2 and parents == {first.info.run_id}
    data_preps = client.search_runs(
        [first.info.experiment_id], filter_string="tags.`graft.stage` = 'data-prep'"
    )
    assert len(data_preps) == 1


def _champion_serves_without_graft(
    mlflow_server: str, summary: dict, work: Path, tmp_path: Path
) -> None:
    """``models:/graft-e2e@champion`` loads in a venv holding only its requirements.txt (no
    torch, no Graft) and answers the class names of the exported ONNX file's arg-max."""
    import onnxruntime

    uri = "models:/graft-e2e@champion"
    # a models:/ URI resolves through the registry URI, which has no argument here
    mlflow.set_registry_uri(mlflow_server)
    requirements = Path(
        mlflow.artifacts.download_artifacts(
            artifact_uri=f"{uri}/requirements.txt",
            dst_path=str(tmp_path / "model-env"),
            tracking_uri=mlflow_server,
        )
    )
    wanted = {line.split("==")[0] for line in requirements.read_text().split()}
    assert wanted == {"mlflow", "numpy", "onnx", "onnxruntime"}, wanted
    out = tmp_path / "served"
    out.mkdir()
    served = subprocess.run(
        [str(runtime_python(requirements)), "-I", str(SERVE_WITHOUT_GRAFT), uri, str(out)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
        env=clean_env(MLFLOW_TRACKING_URI=mlflow_server),
    )
    assert served.returncode == 0, served.stderr[-3000:]
    answer = json.loads((out / "answer.json").read_text())
    rows = np.load(out / "rows.npy")
    session = onnxruntime.InferenceSession(summary["onnx"], providers=["CPUExecutionProvider"])
    (logits,) = session.run(["logits"], {"input": rows})
    class_names = prepared_manifest(work).tasks["target"].class_names
    assert answer["label"] == [class_names[i] for i in logits.argmax(axis=1)]
    softmax = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    assert np.abs(np.array(answer["probabilities"]) - softmax).max() < 1e-5


def _scan_for_credentials(
    client: MlflowClient,
    runs: PipelineRuns,
    work: Path,
    output: str,
    credentials: dict[str, str],
    tmp_path: Path,
) -> None:
    """None of the credentials in any param, tag, artifact or registered model file, in the
    work folder (logs, HTML reports, checkpoints, Tune's pickled state), in the console
    output, in the compiled pipeline or in the RayJob manifests built in that environment."""
    values = list(credentials.values())
    hits = hits_in_text("console", output, values)
    everything = [runs.parent, *runs.stages.values(), *runs.trials]
    for run in everything:
        recorded = f"{run.data.params} {run.data.tags}"
        hits += hits_in_text(f"run {run.info.run_id} params/tags", recorded, values)
        into = tmp_path / "artifacts" / run.info.run_id
        into.mkdir(parents=True)
        artifacts = Path(client.download_artifacts(run.info.run_id, "", str(into)))
        hits += hits_in_files([artifacts], values)
    version = client.get_model_version_by_alias("graft-e2e", "champion")
    hits += hits_in_text("model version tags", str(version.tags), values)
    with pytest.MonkeyPatch.context() as patch:  # models:/ URIs resolve through the registry
        patch.setenv("MLFLOW_REGISTRY_URI", client.tracking_uri)
        registered = mlflow.artifacts.download_artifacts(
            "models:/graft-e2e@champion",
            dst_path=str(tmp_path / "registered"),
            tracking_uri=client.tracking_uri,
        )
    hits += hits_in_files([work, Path(registered)], values)
    hits += _generated_hits(credentials, tmp_path, values)
    assert not hits, hits


def _generated_hits(credentials: dict[str, str], tmp_path: Path, values: list[str]) -> list[str]:
    """What Graft generates from a config while the credentials are in its environment."""
    compiled = subprocess.run(
        [
            sys.executable,
            "-m",
            "graft.cli",
            "compile",
            "--pipelines-dir",
            str(tmp_path / "compiled"),
            "--components-dir",
            str(tmp_path / "compiled" / "components"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **credentials},
    )
    assert compiled.returncode == 0, compiled.stderr[-3000:]
    hits = hits_in_files([tmp_path / "compiled"], values)
    config = load_config(preset="tiny", overrides=["ray.staging_uri=s3://graft/stage"])
    stage = "s3://graft/stage"
    inputs = StageInputs(f"{stage}/in", f"{stage}/out", "0" * 32, f"{stage}/pre", f"{stage}/fine")
    with pytest.MonkeyPatch.context() as patch:
        for name, value in credentials.items():
            patch.setenv(name, value)
        for stage in RAY_STAGES:
            manifest = build_rayjob(config, stage, inputs, "registry.example/graft:test")
            hits += hits_in_text(f"RayJob for {stage}", json.dumps(manifest), values)
    return hits
