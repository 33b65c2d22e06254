"""The monitor stage and `graft monitor` against a real registry (SQLite MLflow): export
registers the reference statistics next to the champion's weights, the stage finds them
through models:/NAME@champion, decides, writes the report and logs to MLflow."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from cli_helpers import assert_one_clear_error, run_graft
from local_tracking import tiny_config_tracked_in
from mlflow.tracking import MlflowClient
from typer.testing import CliRunner

from graft import stages
from graft.cli.app import app
from graft.config import GraftConfig
from graft.data.manifest import DataManifest
from graft.data.reference import REFERENCE_FOLDER
from graft.data.sources import load_digits
from graft.errors import DatasetError
from graft.monitor.champion_reference import champion_reference
from graft.stages import monitor

MODEL_NAME = "graft-monitored"


def _config(tmp_path: Path, *overrides: str) -> GraftConfig:
    # no int8/fp16 variants: the monitor needs a registered champion, not its variants
    return tiny_config_tracked_in(
        tmp_path,
        f"export.model_name={MODEL_NAME}",
        "export.latency_runs=1",
        "export.latency_batch_sizes=[1]",
        "export.int8=false",
        "export.fp16=false",
        *overrides,
    )


def _export(
    config: GraftConfig,
    tmp_path: Path,
    model_dir: Callable[..., Path],
    statistics: bool = True,
    passed: bool = True,
) -> Any:
    """Data-prep, then an untrained model exported (and promoted, if it ``passed`` the gate)
    as the champion; without ``statistics`` as an older Graft did, with no reference folder to
    register."""
    data = stages.data_prep.run(config, str(tmp_path / "data"))
    if not statistics:
        shutil.rmtree(Path(data.dataset_dir) / REFERENCE_FOLDER)
    model = model_dir(config, data.dataset_dir, tmp_path / "model", "target")
    evaluation = tmp_path / "eval"
    evaluation.mkdir()
    (evaluation / "gate.json").write_text(json.dumps({"passed": passed, "reasons": []}))
    (evaluation / "metrics.json").write_text('{"test_accuracy": 0.9, "baseline_accuracy": 0.5}')
    return stages.export.run(
        config,
        data.dataset_dir,
        str(model),
        str(evaluation),
        str(tmp_path / "export"),
        data.parent_run_id,
    )


@pytest.fixture(scope="module")
def champion(
    tmp_path_factory: pytest.TempPathFactory, untrained_model_dir: Callable[..., Path]
) -> dict[str, Any]:
    """Digits prepared and an untrained model exported as the champion."""
    tmp_path = tmp_path_factory.mktemp("monitored")
    config = _config(tmp_path)
    exported = _export(config, tmp_path, untrained_model_dir)
    return {"tmp_path": tmp_path, "config": config, "export": exported}


def _brighter_digits(path: Path) -> Path:
    digits = load_digits()
    np.savez(path, x=np.clip(digits.x + 3.0, 0, 16), y=digits.y)
    return path


def test_export_registers_the_train_rows_statistics_with_the_champion(
    champion: dict[str, Any],
) -> None:
    config = champion["config"]
    found = champion_reference(config)
    assert found is not None and found.reference is not None
    assert found.version == champion["export"].model_version
    manifest = DataManifest.read(champion["tmp_path"] / "data")
    assert found.reference.dataset_hash == manifest.dataset_hash
    reference = found.reference
    assert len(reference.label_counts) == 10  # every class of the train split
    assert reference.train_rows == sum(reference.label_counts.values())
    assert reference.train_rows <= manifest.num_rows * (1 - 0.1 - 0.15) + 1  # train only
    # the registry named too: an earlier test's export set MLflow's global registry URI
    uri = config.resolved_tracking_uri()
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    run_id = client.get_model_version(MODEL_NAME, found.version).run_id
    logged = {a.path for a in client.list_artifacts(run_id)}
    assert {"weights", REFERENCE_FOLDER} <= logged


def test_the_training_snapshot_itself_is_no_drift(champion: dict[str, Any], tmp_path: Path) -> None:
    config = champion["config"].model_copy(deep=True)
    config.monitor.retrain_when = "drift"
    output = monitor.run(config, str(tmp_path / "monitor"))
    assert not output.retrain, output.reason
    assert output.reason.startswith("keep the champion: no drift")
    assert output.figures["new_rows"] == 0
    assert output.figures["domain_auc"] < config.monitor.auc_threshold
    client = MlflowClient(config.resolved_tracking_uri())
    run = client.get_run(output.run_id)
    assert run.data.metrics["retrain"] == 0.0
    assert run.data.tags["graft.stage"] == "monitor"
    # no retrain: the parent run the stage opened is not left RUNNING
    assert client.get_run(output.parent_run_id).info.status == "FINISHED"
    logged = {a.path for a in client.list_artifacts(output.run_id, "monitor")}
    assert "monitor/drift_report.html" in logged


def test_brighter_images_are_drift_with_a_report_that_shows_it(
    champion: dict[str, Any], tmp_path: Path
) -> None:
    source = _brighter_digits(tmp_path / "brighter.npz")
    config = champion["config"].model_copy(deep=True)
    config.data.source = str(source)
    config.monitor.retrain_when = "drift"
    output = monitor.run(config, str(tmp_path / "monitor"))
    assert output.retrain
    assert "feature 'brightness' PSI" in output.reason
    assert "brightness" in output.drifted_features
    assert output.figures["new_rows"] > 0
    page = Path(output.report_path).read_text()
    assert page.count("<img alt=") == 4  # PSI bars, histograms, class shares, ROC curve
    for section in ("id='decision' class='refused'", "id='feature-drift'", "id='label-shift'"):
        assert section in page
    assert "id='domain-auc'" in page
    figures = json.loads((tmp_path / "monitor" / monitor.FIGURES_FILE).read_text())
    assert figures["decision"]["retrain"] is True
    assert [c["name"] for c in figures["figures"]["columns"]][:3] == [
        "brightness",
        "contrast",
        "edge_energy",
    ]


def test_a_snapshot_of_other_features_is_one_clear_error(
    champion: dict[str, Any], tmp_path: Path
) -> None:
    np.savez(tmp_path / "table.npz", x=np.ones((50, 3), np.float32), y=np.tile([0, 1], 25))
    config = champion["config"].model_copy(deep=True)
    config.data.source = str(tmp_path / "table.npz")
    with pytest.raises(DatasetError, match=r"tabular of shape \[3\].*image rows of shape"):
        monitor.run(config, str(tmp_path / "monitor"))


def test_without_a_champion_the_answer_is_retrain(tmp_path: Path) -> None:
    config = _config(tmp_path, "monitor.retrain_when=drift")
    output = monitor.run(config, str(tmp_path / "monitor"))
    assert output.retrain
    assert output.reason == "retrain: no champion yet, so there is nothing to compare with"
    assert output.figures == {}
    assert Path(output.report_path).is_file()


def test_a_champion_without_statistics_is_retrained(
    tmp_path: Path, untrained_model_dir: Callable[..., Path]
) -> None:
    """A version registered before the monitor existed: the monitor cannot judge it."""
    config = _config(tmp_path, "monitor.retrain_when=drift")
    exported = _export(config, tmp_path, untrained_model_dir, statistics=False)
    output = monitor.run(config, str(tmp_path / "monitor"))
    assert output.retrain
    assert f"version {exported.model_version}" in output.reason
    assert "without reference statistics" in output.reason


def test_the_cli_prints_the_figures_and_the_decision(
    champion: dict[str, Any], tmp_path: Path
) -> None:
    config = champion["config"]
    result = CliRunner().invoke(
        app,
        [
            "monitor",
            "--preset",
            "tiny",
            "--output-dir",
            str(tmp_path / "out"),
            "--set",
            f"work_dir={config.work_dir}",
            "--set",
            f"tracking.tracking_uri={config.tracking.tracking_uri}",
            "--set",
            "tracking.experiment_name=unit",
            "--set",
            f"export.model_name={MODEL_NAME}",
            "--set",
            f"data.source={_brighter_digits(tmp_path / 'brighter.npz')}",
            "--set",
            "monitor.retrain_when=drift",
        ],
    )
    assert result.exit_code == 0, result.output
    shown = result.stderr
    for figure in ("max_feature_psi", "label_psi", "domain_auc", "new_rows", "0.2", "0.6"):
        assert figure in shown
    assert "retrain: drift: feature 'brightness' PSI" in shown
    assert f"report: {tmp_path / 'out' / 'drift_report.html'}" in shown
    decision = json.loads(result.stdout.strip().splitlines()[-1])
    assert decision["retrain"] is True
    run = MlflowClient(config.tracking.tracking_uri).get_run(decision["parent_run_id"])
    assert run.info.status == "FINISHED"  # the command's own run is ended


def test_the_cli_names_a_missing_snapshot_in_one_line(tmp_path: Path) -> None:
    result = run_graft(
        "monitor",
        "-p",
        "tiny",
        "--set",
        f"work_dir={tmp_path / 'work'}",
        "--set",
        f"data.source={tmp_path}/absent.npz",
    )
    line = assert_one_clear_error(result, f"{tmp_path}/absent.npz")
    assert "does not exist" in line


def test_help_explains_the_policies() -> None:
    result = CliRunner().invoke(app, ["monitor", "--help"])
    assert result.exit_code == 0
    for word in ("retrain_when", "always", "drift", "new_rows", "PSI", "AUC", "exit code is 0"):
        assert word in result.output


def test_the_challenger_as_reference_does_not_flag_a_shift_its_retrain_already_saw(
    champion: dict[str, Any], tmp_path: Path, untrained_model_dir: Callable[..., Path]
) -> None:
    """A retrain on brighter digits whose challenger the gate refused: compared with the
    champion the shift is still drift; compared with the challenger nothing has arrived."""
    brighter = _brighter_digits(tmp_path / "brighter.npz")
    retrained = champion["config"].model_copy(deep=True)
    retrained.data.source = str(brighter)
    refused = _export(retrained, tmp_path / "retrain", untrained_model_dir, passed=False)
    assert refused.aliases == ["challenger"]
    retrained.monitor.retrain_when = "drift"
    against_champion = monitor.run(retrained, str(tmp_path / "champion"))
    assert against_champion.retrain, against_champion.reason
    assert against_champion.champion_version == champion["export"].model_version
    retrained.monitor.reference = "challenger"
    against_challenger = monitor.run(retrained, str(tmp_path / "challenger"))
    assert not against_challenger.retrain, against_challenger.reason
    assert against_challenger.champion_version == refused.model_version


@pytest.fixture
def _local_runner_reset() -> Any:
    from kfp import local

    yield
    local.config.LocalExecutionConfig.instance = None


@pytest.mark.usefixtures("_local_runner_reset")
def test_the_pipeline_ends_after_the_monitor_when_nothing_drifted(
    champion: dict[str, Any],
) -> None:
    """The real pipeline under KFP's local runner: with retrain_when=drift and the champion's
    own data, the training stages never start and the parent run ends FINISHED."""
    from test_pipeline_exit_handler import Outcomes

    from graft.config import FINALIZE_TASK
    from graft.kfp.local_run import run_local

    config = champion["config"].model_copy(deep=True)
    config.monitor.retrain_when = "drift"
    outcomes = Outcomes()
    summary = run_local(config, listener=outcomes)
    assert summary["retrained"] is False
    assert summary["reason"].startswith("keep the champion: no drift")
    assert outcomes.seen == [("open-run", "done"), ("monitor", "done"), (FINALIZE_TASK, "done")]
    client = MlflowClient(config.resolved_tracking_uri())
    parent = client.get_run(summary["parent_run_id"])
    assert parent.info.status == "FINISHED"
    assert parent.data.tags[monitor.RETRAINED_TAG] == "false"
