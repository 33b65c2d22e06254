"""The local run's scratch folder and log folder, without running the pipeline."""

import os
import tempfile
from pathlib import Path

import pytest

from graft.config import load_config
from graft.kfp.local_run import _scratch_tmpdir, stage_log_dir


def test_scratch_tmpdir_is_scoped_to_the_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TMPDIR", "/tmp")
    scratch = tmp_path / "tmp"
    with pytest.raises(RuntimeError), _scratch_tmpdir(scratch):
        assert os.environ["TMPDIR"] == str(scratch)
        assert tempfile.gettempdir() == str(scratch)
        raise RuntimeError("a failed stage")
    # later code in this process must not inherit a folder that may vanish
    assert os.environ["TMPDIR"] == "/tmp"
    assert tempfile.gettempdir() != str(scratch)


def test_stage_logs_live_in_the_work_dir(tmp_path: Path) -> None:
    config = load_config(preset="tiny", overrides=[f"work_dir={tmp_path / 'work'}"])
    assert stage_log_dir(config) == tmp_path / "work" / "logs"
