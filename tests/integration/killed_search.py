"""A `graft tune` process killed after its first finished trial, and its resume: shared by the
resume tests."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import NamedTuple

from graft.config import GraftConfig
from graft.tune.session import TuneSession, load_session


class KilledSearch(NamedTuple):
    finished: set[str]  # trial ids the experiment state recorded as finished before the kill
    experiment: str  # the Tune experiment's name
    session: TuneSession


def terminated_trials(experiment_dir: Path) -> set[str]:
    """Trial ids the experiment state on disk records as finished."""
    done: set[str] = set()
    for state_file in experiment_dir.glob("experiment_state-*.json"):
        try:
            state = json.loads(state_file.read_text())
        except (json.JSONDecodeError, OSError):  # being rewritten right now
            continue
        for entry in state.get("trial_data", []):
            trial = json.loads(entry[0]) if isinstance(entry[0], str) else entry[0]
            if trial.get("status") == "TERMINATED":
                done.add(str(trial["trial_id"]))
    return done


def graft_tune(*args: str) -> list[str]:
    return [sys.executable, "-m", "graft.cli", "tune", *args]


def _env() -> dict[str, str]:
    return {**os.environ, "GRAFT_RAY_LOG_TO_DRIVER": "0"}


def kill_after_first_finished_trial(
    config: GraftConfig, overrides: list[str], dataset: Path, pretrained: Path, out: Path
) -> KilledSearch:
    """Start `graft tune` on the tiny preset with ``overrides`` and SIGKILL its whole process
    group (Ray's processes too) once the experiment state records a finished trial."""
    sets = [item for override in overrides for item in ("--set", override)]
    first = subprocess.Popen(
        graft_tune(
            "-p",
            "tiny",
            *sets,
            "--dataset-dir",
            str(dataset),
            "--pretrained-dir",
            str(pretrained),
            "--output-dir",
            str(out),
        ),
        env=_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # its own process group: the kill takes Ray's processes too
    )
    finished: set[str] = set()
    experiment = ""
    try:
        deadline = time.monotonic() + 150
        while time.monotonic() < deadline and not finished and first.poll() is None:
            time.sleep(1)
            if (out / "tune-session.json").exists():
                session = load_session(out)
                experiment = f"tune-{session.parent_run_id[:12]}"
                finished = terminated_trials(config.work_path / "ray" / "tune" / experiment)
    finally:
        os.killpg(first.pid, signal.SIGKILL)
        first.wait(30)
    assert finished, "no trial finished before the kill"
    return KilledSearch(finished, experiment, session)


def resume_killed_search(out: Path) -> None:
    resumed = subprocess.run(
        graft_tune("--resume", "--output-dir", str(out)),
        env=_env(),
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
