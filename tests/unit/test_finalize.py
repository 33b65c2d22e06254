"""The pipeline's exit task ends FAILED the MLflow runs that a failed or killed pipeline run
left RUNNING, against a real SQLite store: a SIGKILLed stage cannot end its own run, and
without the exit task its run and the parent showed RUNNING for ever."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import mlflow
import pytest
from local_tracking import tiny_config_tracked_in

from graft.config import GraftConfig
from graft.io import tracking
from graft.kfp import adapters
from graft.stages import finalize


@pytest.fixture(scope="module")
def config(tmp_path_factory: pytest.TempPathFactory) -> GraftConfig:
    """One store for the module (creating a SQLite store takes seconds); each test its own
    KFP run id."""
    return tiny_config_tracked_in(tmp_path_factory.mktemp("finalize"))


@pytest.fixture
def kfp_run(request: pytest.FixtureRequest) -> str:
    return f"kfp-{request.node.name}"


def _killed_stage(config: GraftConfig, parent: str) -> tuple[str, str]:
    """A pretrain task SIGKILLed (the OOM killer, a lost node) inside its stage run, with one
    trial run open under it; returns the two run ids it left behind."""
    script = f"""import os, signal
from graft.config import GraftConfig
from graft.io import tracking
config = GraftConfig.model_validate_json({config.to_json()!r})
with tracking.stage_run(config, {parent!r}, "pretrain") as run_id:
    trial = tracking.create_child_run(
        config.resolved_tracking_uri(), tracking.experiment_id(config), run_id, "trial", {{}}
    )
    print(run_id, trial, flush=True)
    os.kill(os.getpid(), signal.SIGKILL)
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == -9, done.stderr[-2000:]
    stage, trial = done.stdout.split()
    return stage, trial


def _status(config: GraftConfig, run_id: str) -> tuple[str, str | None]:
    run = mlflow.MlflowClient(config.resolved_tracking_uri()).get_run(run_id)
    return run.info.status, run.data.tags.get(tracking.FAILURE_TAG)


def test_a_killed_stage_and_the_parent_end_failed_with_the_reason(
    config: GraftConfig, kfp_run: str
) -> None:
    parent = tracking.start_pipeline_run(config, kfp_run)
    with tracking.stage_run(config, parent, "data-prep") as prepared:
        pass
    stage, trial = _killed_stage(config, parent)
    assert _status(config, parent) == ("RUNNING", None)  # what a killed stage leaves
    assert _status(config, stage) == ("RUNNING", None)

    out = finalize.run(config, kfp_run, "FAILED", "Task pretrain failed.")

    reason = f"KFP run {kfp_run} ended FAILED: Task pretrain failed."
    assert out.parent_run_ids == [parent]
    assert set(out.ended_run_ids) == {parent, stage, trial}
    for run_id in (parent, stage, trial):
        assert _status(config, run_id) == ("FAILED", reason)
    assert _status(config, prepared) == ("FINISHED", None)  # what had ended stays as it was


def test_a_cancelled_run_whose_stage_failed_it_already_gets_the_reason(
    config: GraftConfig, kfp_run: str
) -> None:
    """A stage that raised (SIGTERM included) ended its run and the parent FAILED itself."""
    parent = tracking.start_pipeline_run(config, kfp_run)
    with pytest.raises(RuntimeError), tracking.stage_run(config, parent, "tune"):
        raise RuntimeError("stopped by signal SIGTERM")

    out = finalize.run(config, kfp_run, "CANCELED")

    assert out.ended_run_ids == []
    assert _status(config, parent) == ("FAILED", f"KFP run {kfp_run} ended CANCELED")


@pytest.mark.parametrize("state", ["SUCCEEDED", "COMPLETE"])  # local runner, KFP 2.14
def test_a_run_that_succeeded_keeps_its_runs_and_loses_a_killed_attempt(
    config: GraftConfig, kfp_run: str, state: str
) -> None:
    """A stage attempt killed and retried by KFP left its run RUNNING; the retry succeeded."""
    parent = tracking.start_pipeline_run(config, kfp_run)
    killed_attempt, _ = _killed_stage(config, parent)
    with tracking.stage_run(config, parent, "export") as exported:
        tracking.finish_pipeline_run(config, parent)

    out = finalize.run(config, kfp_run, state)

    assert out.succeeded and killed_attempt in out.ended_run_ids
    assert _status(config, parent) == ("FINISHED", None)
    assert _status(config, exported) == ("FINISHED", None)
    status, reason = _status(config, killed_attempt)
    assert status == "FAILED" and reason is not None and "a killed attempt" in reason


def test_after_a_success_an_unreachable_mlflow_is_only_a_warning(tmp_path: Path) -> None:
    config = tiny_config_tracked_in(tmp_path, "tracking.tracking_uri=http://127.0.0.1:9")
    with pytest.MonkeyPatch.context() as env:
        env.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
        env.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
        out = finalize.run(config, "kfp-ok", "SUCCEEDED")
    assert out.succeeded and out.ended_run_ids == []


def test_a_finished_parent_stays_finished_but_a_leftover_stage_run_ends(
    config: GraftConfig, kfp_run: str
) -> None:
    """Export ended the parent, then the run failed (or a killed first attempt of a retried
    stage left its run): the parent keeps export's FINISHED, the dead run ends FAILED."""
    parent = tracking.start_pipeline_run(config, kfp_run)
    stage, _ = _killed_stage(config, parent)
    tracking.finish_pipeline_run(config, parent)

    out = finalize.run(config, kfp_run, "FAILED")

    assert _status(config, parent) == ("FINISHED", None)
    assert _status(config, stage)[0] == "FAILED"
    assert stage in out.ended_run_ids and parent not in out.ended_run_ids


def test_no_parent_run_is_no_error_and_creates_nothing(
    config: GraftConfig, kfp_run: str, tmp_path: Path
) -> None:
    """data-prep died before it opened the parent run."""
    other = tracking.start_pipeline_run(config, "another-kfp-run")

    out = finalize.run(config, kfp_run, "FAILED", "Task data-prep failed.")

    assert out.parent_run_ids == [] and out.ended_run_ids == []
    assert _status(config, other) == ("RUNNING", None)  # another run's parent is not touched
    # neither an experiment nor a store is made up to look in
    tracked = config.tracking.model_copy(update={"experiment_name": "never-used"})
    elsewhere = config.model_copy(update={"tracking": tracked})
    assert finalize.run(elsewhere, kfp_run, "FAILED").parent_run_ids == []
    client = mlflow.MlflowClient(config.resolved_tracking_uri())
    assert client.get_experiment_by_name("never-used") is None
    fresh = tiny_config_tracked_in(tmp_path)
    assert finalize.run(fresh, kfp_run, "FAILED").parent_run_ids == []
    assert not (tmp_path / "mlflow.db").exists()


def test_mlflow_out_of_reach_ends_the_task_with_one_line_naming_the_failure_first(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    config = tiny_config_tracked_in(tmp_path, "tracking.tracking_uri=http://127.0.0.1:9")
    with pytest.raises(SystemExit) as ended:
        adapters.finalize_run(config.to_json(), "kfp-1", "FAILED", "Task tune failed.")
    message = str(ended.value.code)
    assert message.startswith("error: KFP run kfp-1 ended FAILED: Task tune failed.; its ")
    assert "http://127.0.0.1:9 could not be ended FAILED" in message
    assert "\n" not in message
