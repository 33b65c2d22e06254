"""Bad input ends with one clear error line, a non-zero exit code and no traceback."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

GRAFT = [sys.executable, "-m", "graft.cli"]


def _graft(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*GRAFT, *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {}), "COLUMNS": "200"},
    )


def _assert_one_clear_error(result: subprocess.CompletedProcess[str], fragment: str) -> None:
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, result.stderr
    assert fragment in lines[0], lines[0]


def test_missing_data_file(tmp_path: Path) -> None:
    result = _graft("run", "-p", "tiny", "--set", f"data.source={tmp_path}/absent.npz")
    _assert_one_clear_error(result, "does not exist")


def test_nan_values(tmp_path: Path) -> None:
    x = np.ones((40, 3), dtype=np.float32)
    x[5, 0] = np.nan
    np.savez(tmp_path / "nan.npz", x=x, y=np.repeat([0, 1], 20))
    result = _graft(
        "run",
        "-p",
        "tiny",
        "--set",
        f"data.source={tmp_path}/nan.npz",
        "--set",
        "data.transfer.target_classes=[]",
    )
    _assert_one_clear_error(result, "NaN/inf values")


def test_unknown_label(tmp_path: Path) -> None:
    result = _graft("run", "-p", "tiny", "--set", "data.transfer.target_classes=[3, 42]")
    _assert_one_clear_error(result, "[42] are not labels")


def test_bad_override_key() -> None:
    result = _graft("run", "-p", "tiny", "--set", "pretrain.epochz=2")
    _assert_one_clear_error(result, "pretrain.epochz")


def test_unreachable_s3() -> None:
    result = _graft(
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
    _assert_one_clear_error(result, "cannot reach S3")


@pytest.mark.parametrize("command", ["run", "compile", "config", "ui"])
def test_help_explains_each_command(command: str) -> None:
    result = _graft(command, "--help")
    assert result.returncode == 0
    assert "Usage" in result.stdout
