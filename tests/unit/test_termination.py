"""SIGTERM (a cancelled KFP run, an evicted pod) unwinds like Ctrl-C: the stage's MLflow run
and the pipeline's parent run end FAILED instead of staying RUNNING, and the CLI says so in
one line. Any failed stage fails the parent run; a retried stage resumes it."""

from __future__ import annotations

import signal
from pathlib import Path

import mlflow
import pytest

from graft.config import load_config
from graft.io import tracking
from sigterm_helpers import terminate_after


def test_sigterm_ends_the_stage_run_failed(tmp_path: Path) -> None:
    config = load_config(preset="tiny", overrides=config_overrides(tmp_path))
    parent = tracking.start_pipeline_run(config, "sigterm-test")
    script = tmp_path / "stage.py"
    script.write_text(
        f"""import sys, time
from graft.config import load_config
from graft.io import tracking
from graft.io.termination import sigterm_interrupts
sigterm_interrupts()
config = load_config(preset="tiny", overrides={config_overrides(tmp_path)!r})
with tracking.stage_run(config, {parent!r}, "pretrain") as run_id:
    print("stage run", run_id, flush=True)
    time.sleep(120)
"""
    )
    code, printed = terminate_after(script, "stage run")

    assert code != 0 and "Terminated: stopped by signal SIGTERM" in printed
    run_id = next(line.split()[-1] for line in printed.splitlines() if "stage run" in line)
    client = mlflow.MlflowClient(config.tracking.tracking_uri)
    assert client.get_run(run_id).info.status == "FAILED"
    assert client.get_run(parent).info.status == "FAILED"  # the pipeline failed with it


def test_a_failed_stage_fails_the_pipeline_run_and_a_retry_resumes_it(tmp_path: Path) -> None:
    config = load_config(preset="tiny", overrides=config_overrides(tmp_path))
    parent = tracking.start_pipeline_run(config, "retry-test")
    client = mlflow.MlflowClient(config.tracking.tracking_uri)
    with pytest.raises(RuntimeError), tracking.stage_run(config, parent, "pretrain"):
        raise RuntimeError("out of data")
    assert client.get_run(parent).info.status == "FAILED"

    with tracking.stage_run(config, parent, "pretrain"):  # KFP retries the task
        assert client.get_run(parent).info.status == "RUNNING"
    assert client.get_run(parent).info.status == "RUNNING"  # export ends it, not a stage


def test_a_stage_with_a_parent_the_store_lacks_still_reports_its_own_error(
    tmp_path: Path,
) -> None:
    config = load_config(preset="tiny", overrides=config_overrides(tmp_path))
    made_up_parent = "f00dcafe" * 4
    with (
        pytest.raises(RuntimeError, match="the stage's own"),
        tracking.stage_run(config, made_up_parent, "pretrain"),
    ):
        raise RuntimeError("the stage's own error")


def config_overrides(tmp_path: Path) -> list[str]:
    return [
        f"work_dir={tmp_path / 'work'}",
        f"tracking.tracking_uri=sqlite:///{tmp_path / 'mlflow.db'}",
        "tracking.experiment_name=unit",
    ]


def test_the_cli_reports_sigterm_in_one_line_and_exits_143(tmp_path: Path) -> None:
    script = tmp_path / "cli.py"
    script.write_text(
        """import sys, time
import importlib
cli = importlib.import_module("graft.cli.app")
def wait() -> None:
    print("waiting", flush=True)
    time.sleep(120)
cli.app.command(name="wait")(wait)
sys.argv = ["graft", "wait"]
cli.main()
"""
    )
    code, printed = terminate_after(script, "waiting")

    assert code == 128 + signal.SIGTERM
    assert printed.splitlines()[-1] == "error: stopped by signal SIGTERM"
    assert "Traceback" not in printed
