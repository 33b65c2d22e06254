"""How a training stage chooses its Ray, and the command a submitted stage runs (no Ray here)."""

from __future__ import annotations

import shlex

import pytest
from typer.testing import CliRunner

from graft.cli.app import app
from graft.config import config_from_json, load_config
from graft.errors import ConfigError, RayJobError
from graft.remote.command import (
    RESULT_PREFIX,
    JobOutcome,
    StageInputs,
    in_cluster_config,
    parse_result,
    result_line,
    stage_command,
)
from graft.remote.ray_job import stage_submission_id


def test_only_address_mode_with_submit_job_sends_stages_to_the_jobs_api() -> None:
    assert not load_config(preset="tiny").ray.submits_jobs  # local: in-process Ray
    assert load_config(preset="tiny", overrides=["ray.mode=address"]).ray.submits_jobs
    driver = load_config(preset="tiny", overrides=["ray.mode=address", "ray.submit=driver"])
    assert not driver.ray.submits_jobs


def test_rayjob_mode_runs_stages_elsewhere_and_needs_an_s3_staging_uri() -> None:
    with pytest.raises(ConfigError, match=r"ray.mode=rayjob needs ray.staging_uri=s3://"):
        load_config(overrides=["ray.mode=rayjob"])
    with pytest.raises(ConfigError, match=r"ray.staging_uri '/shared/stages' must be an s3://"):
        load_config(overrides=["ray.staging_uri=/shared/stages"])
    rayjob = load_config(overrides=["ray.mode=rayjob", "ray.staging_uri=s3://b/stages"])
    assert rayjob.ray.runs_stages_elsewhere and not rayjob.ray.submits_jobs
    assert load_config(overrides=["ray.mode=address"]).ray.runs_stages_elsewhere
    assert not load_config(preset="tiny").ray.runs_stages_elsewhere
    # on the cluster the stage is a driver of the RayJob's own cluster, never a second RayJob
    inside = in_cluster_config(rayjob)
    assert inside.ray.mode == "address" and not inside.ray.runs_stages_elsewhere


def test_dashboard_address_must_be_the_http_endpoint() -> None:
    with pytest.raises(ConfigError, match=r"ray\.dashboard_address 'ray://head:10001'"):
        load_config(overrides=["ray.dashboard_address=ray://head:10001"])
    config = load_config(overrides=["ray.dashboard_address=http://ray-head:8265"])
    assert config.ray.dashboard_address == "http://ray-head:8265"


def test_the_submitted_command_runs_the_stage_as_a_driver_with_the_same_settings() -> None:
    config = load_config(
        preset="tiny",
        overrides=["ray.mode=address", "ray.dashboard_address=http://h:8265", "seed=7"],
    )
    inputs = StageInputs("/data/ds", "/data/out dir", "run-1", "/data/pre", "/data/ft")
    argv = shlex.split(stage_command(config, "tune", inputs))
    assert argv[:5] == ["python", "-m", "graft.cli", "stage", "tune"]
    options = dict(zip(argv[5::2], argv[6::2], strict=True))
    assert options["--output-dir"] == "/data/out dir"  # quoted for the shell
    assert options["--pretrained-dir"] == "/data/pre"
    assert options["--finetuned-dir"] == "/data/ft"
    sent = config_from_json(options["--config-json"])
    assert sent == in_cluster_config(config)
    assert not sent.ray.submits_jobs  # the job never submits itself again
    assert sent.seed == 7


def test_same_run_and_stage_give_the_same_submission_id() -> None:
    run = "0F3C2A9B7D6E4C1A"
    assert stage_submission_id("pretrain", run) == stage_submission_id("pretrain", run)
    assert stage_submission_id("pretrain", run) != stage_submission_id("tune", run)
    assert stage_submission_id("pretrain", run) == "graft-pretrain-0f3c2a9b7d6e4c1a"


def test_the_last_result_line_of_a_log_is_the_stage_output() -> None:
    logs = "\n".join(
        [
            "epoch 1 val_accuracy 0.5",
            result_line({"val_accuracy": 0.1}),  # e.g. an earlier attempt's
            "(RayTrainWorker pid=1) done",
            result_line({"val_accuracy": 0.9, "model_dir": "/m"}),
        ]
    )
    assert parse_result(logs) == {"val_accuracy": 0.9, "model_dir": "/m"}
    assert parse_result("no result here\n" + RESULT_PREFIX.strip()) is None


@pytest.mark.parametrize("kind", ["Ray job", "RayJob"])
def test_a_succeeded_job_without_a_result_line_fails_its_stage(kind: str) -> None:
    """A job whose entrypoint was not this version's `graft stage` SUCCEEDED but told nothing:
    the stage fails with the job's id and its log's tail, never with an empty output."""
    logs = "\n".join(f"line {i}" for i in range(10))
    silent = JobOutcome("graft-tune-abc", kind, False, logs, parse_result(logs))
    with pytest.raises(RayJobError) as caught:
        silent.stage_result("tune", tail_lines=3)
    message = str(caught.value)
    assert f"{kind} graft-tune-abc SUCCEEDED" in message
    assert "`graft stage tune`" in message
    assert (caught.value.submission_id, caught.value.status) == ("graft-tune-abc", "SUCCEEDED")
    assert caught.value.log_tail == "line 7\nline 8\nline 9"
    answered = JobOutcome("graft-tune-abc", kind, True, "", {"best_metric": 0.9})
    assert answered.stage_result("tune", tail_lines=3) == {"best_metric": 0.9}


@pytest.mark.parametrize(
    ("stage", "inputs", "fragment"),
    [
        ("evaluate", StageInputs("d", "o", "r"), "does not run on Ray"),
        ("transfer-finetune", StageInputs("d", "o", "r"), "needs the pretrained model"),
        ("pretrain", StageInputs("d", "o", ""), "MLflow run id"),
    ],
)
def test_a_stage_command_is_refused_without_what_the_stage_needs(
    stage: str, inputs: StageInputs, fragment: str
) -> None:
    with pytest.raises(ConfigError, match=fragment):
        stage_command(load_config(preset="tiny"), stage, inputs)


def test_graft_stage_has_help_for_every_option() -> None:
    result = CliRunner().invoke(app, ["stage", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    for option in ("--config-json", "--dataset-dir", "--pretrained-dir", "--parent-run-id"):
        assert option in result.stdout
    assert "GRAFT_STAGE_RESULT" in result.stdout


def test_joining_a_multi_node_cluster_without_shared_train_storage_is_refused() -> None:
    from graft.io.ray_runtime import _refuse_node_local_storage

    node_local = load_config(overrides=["ray.mode=address"]).ray
    with pytest.raises(ConfigError, match=r"has 3 nodes.*ray.storage_uri=s3://"):
        _refuse_node_local_storage(node_local, alive_nodes=3)
    _refuse_node_local_storage(node_local, alive_nodes=1)  # one node: its disk is shared
    shared = load_config(overrides=["ray.mode=address", "ray.storage_uri=s3://b/ray"]).ray
    _refuse_node_local_storage(shared, alive_nodes=3)
