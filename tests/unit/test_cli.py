"""Bad input ends with one clear error line, a non-zero exit code and no traceback."""

from pathlib import Path
from typing import get_args

import numpy as np
import pytest
import typer
from cli_helpers import assert_one_clear_error, run_graft
from click.testing import Result
from typer.testing import CliRunner

from graft.cli.app import app
from graft.cli.progress import StageProgress
from graft.config import GraftConfig, StageName
from graft.kfp.local_run import stage_log_dir
from graft.kfp.stage_logs import StageListener


def test_missing_data_file(tmp_path: Path) -> None:
    result = run_graft("run", "-p", "tiny", "--set", f"data.source={tmp_path}/absent.npz")
    assert_one_clear_error(result, "does not exist")


def test_nan_values(tmp_path: Path) -> None:
    x = np.ones((40, 3), dtype=np.float32)
    x[5, 0] = np.nan
    np.savez(tmp_path / "nan.npz", x=x, y=np.repeat([0, 1], 20))
    result = run_graft(
        "run",
        "-p",
        "tiny",
        "--set",
        f"data.source={tmp_path}/nan.npz",
        "--set",
        "data.transfer.target_classes=[]",
    )
    assert_one_clear_error(result, "NaN/inf values")


def test_unknown_label(tmp_path: Path) -> None:
    result = run_graft("run", "-p", "tiny", "--set", "data.transfer.target_classes=[3, 42]")
    assert_one_clear_error(result, "[42] are not labels")


def test_bad_override_key() -> None:
    result = run_graft("run", "-p", "tiny", "--set", "pretrain.epochz=2")
    assert_one_clear_error(result, "pretrain.epochz")


def test_unreachable_s3() -> None:
    result = run_graft(
        "run",
        "-p",
        "tiny",
        "--set",
        "data.source=s3://bucket/data.npz",
        env={
            "AWS_ENDPOINT_URL": "http://127.0.0.1:9",
            "AWS_ACCESS_KEY_ID": "k",
            "AWS_SECRET_ACCESS_KEY": "s",
            "AWS_DEFAULT_REGION": "us-east-1",
        },
    )
    assert_one_clear_error(result, "cannot reach S3")


COMMANDS = [
    "run",
    "compile",
    "config",
    "ui",
    "serve",
    "upload",
    "submit",
    "schedule",
    "runs",
    "tune",
    "stage",
    "rayjob",
    "lr-find",
    "monitor",
]


def test_the_app_lists_every_command_in_order() -> None:
    """The commands live in one module per group (graft.cli.*); `graft --help` lists them all."""
    group = typer.main.get_command(app)
    assert isinstance(group, typer.core.TyperGroup)
    assert list(group.commands) == COMMANDS  # typer lists them as registered


@pytest.mark.parametrize("command", COMMANDS)
def test_help_explains_each_command(command: str) -> None:
    result = run_graft(command, "--help")
    assert result.returncode == 0
    assert "Usage" in result.stdout


def test_tune_help_says_what_ends_a_search() -> None:
    result = run_graft("tune", "--help")
    for budget in ("tune.num_samples", "tune.time_budget_s", "tune.epoch_budget"):
        assert budget in result.stdout
    # and what a user sees of it: the progress display and each trial's outcome
    assert "progress bar" in result.stdout
    assert "graft.trial_outcome" in result.stdout


def test_run_help_explains_verbose_and_where_the_logs_go() -> None:
    result = run_graft("run", "--help")
    assert result.returncode == 0
    assert "--verbose" in result.stdout
    assert "<work_dir>/logs/<stage>.log" in result.stdout


SUMMARY = {
    "retrained": True,
    "accuracy": 0.94,
    "baseline_accuracy": 0.52,
    "gate_passed": True,
    "model_name": "graft",
    "model_version": "1",
    "aliases": ["challenger", "champion"],
    "torchscript": "/w/model.pt",
    "onnx": "/w/model.onnx",
}


def _invoke_run(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, *flags: str, summary: dict = SUMMARY
) -> tuple[Result, list[StageListener | None]]:
    """`graft run` in this process with the pipeline replaced by six stages that report
    as the log router would; returns the CLI's result and the listener it handed over."""
    import graft.data.prepare
    import graft.kfp.local_run

    handed: list[StageListener | None] = []

    def fake_run_local(
        config: GraftConfig, listener: StageListener | None = None, cache: bool = False
    ) -> dict:
        handed.append(listener)
        caching.append(cache)
        if listener is not None:
            for stage in get_args(StageName):
                log = stage_log_dir(config) / f"{stage}.log"
                listener.stage_started(stage, log)
                listener.stage_finished(stage, "done", 1.5, log)
        return summary

    monkeypatch.setattr(graft.kfp.local_run, "run_local", fake_run_local)
    monkeypatch.setattr(graft.data.prepare, "check_source", lambda data: None)
    result = CliRunner().invoke(
        app,
        ["run", "--preset", "tiny", "--set", f"work_dir={tmp_path}", *flags],
        env={"COLUMNS": "100"},
    )
    return result, handed


caching: list[bool] = []  # what each fake run_local was asked: KFP's cache on or off


def test_a_run_uses_kfps_cache_unless_told_not_to(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    caching.clear()
    for flags in ((), ("--no-cache",), ("--verbose", "--no-cache"), ("--cache",)):
        result, _ = _invoke_run(monkeypatch, tmp_path, *flags)
        assert result.exit_code == 0, result.output
    assert caching == [True, False, False, True]


def test_quiet_run_prints_a_line_per_stage_and_names_the_logs(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    result, handed = _invoke_run(monkeypatch, tmp_path)
    assert result.exit_code == 0, result.output
    assert isinstance(handed[0], StageProgress)
    lines = result.output.splitlines()
    for stage in get_args(StageName):
        assert sum(line.startswith(f"✓ {stage} ") for line in lines) == 1
    assert f"{tmp_path}/logs" in result.output
    assert len(lines) < 60


def test_a_run_the_monitor_ended_says_why_and_where_the_drift_report_is(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    ended = {
        "retrained": False,
        "reason": "no retraining: no drift (largest feature PSI 0.03 <= 0.2)",
        "report_path": "/w/monitor/drift_report.html",
    }
    result, _ = _invoke_run(monkeypatch, tmp_path, summary=ended)
    assert result.exit_code == 0, result.output
    assert "the monitor found no need" in result.output
    assert "largest feature PSI 0.03" in result.output
    assert "/w/monitor/drift_report.html" in result.output
    assert "test accuracy" not in result.output


def test_verbose_run_hands_no_listener(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    result, handed = _invoke_run(monkeypatch, tmp_path, "--verbose")
    assert result.exit_code == 0, result.output
    assert handed == [None]  # run_local then prints everything as KFP does
    assert "✓" not in result.output
