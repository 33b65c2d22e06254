"""Bad input ends with one clear error line, a non-zero exit code and no traceback."""

from pathlib import Path

import numpy as np
import pytest
from cli_helpers import assert_one_clear_error, run_graft


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


@pytest.mark.parametrize(
    "command",
    ["run", "compile", "config", "ui", "stage", "rayjob", "lr-find", "tune", "submit", "upload"],
)
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
