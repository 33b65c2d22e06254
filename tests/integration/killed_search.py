"""A `graft tune` process killed part-way, and its resume: shared by the resume tests."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

from graft.config import GraftConfig
from graft.data.prepare import prepare_dataset
from graft.io import tracking
from graft.tune.runs import EXPERIMENT_TAG
from graft.tune.session import TuneSession, load_session


class TrialState(NamedTuple):
    status: str  # Tune's: PENDING, RUNNING, PAUSED, TERMINATED, ERROR
    epoch: int  # of the last result the experiment state recorded; 0 before any


class KilledSearch(NamedTuple):
    trials: dict[str, TrialState]  # what the experiment state on disk held at the kill
    experiment: str  # the Tune experiment's name
    session: TuneSession

    @property
    def finished(self) -> set[str]:
        return {t for t, state in self.trials.items() if state.status == "TERMINATED"}


def trial_states(experiment_dir: Path) -> dict[str, TrialState]:
    """Each trial's status and last recorded epoch, from the newest experiment state on disk:
    what a resumed search starts from."""
    for state_file in sorted(experiment_dir.glob("experiment_state-*.json"), reverse=True):
        try:
            state = json.loads(state_file.read_text())
        except (json.JSONDecodeError, OSError):  # being rewritten right now
            continue
        trials: dict[str, TrialState] = {}
        for entry in state.get("trial_data", []):
            trial, metadata = (json.loads(e) if isinstance(e, str) else e for e in entry[:2])
            last = metadata.get("last_result") or {}
            trials[str(trial["trial_id"])] = TrialState(
                str(trial["status"]), int(last.get("epoch", 0))
            )
        return trials
    return {}


def search_inputs(
    config: GraftConfig, root: Path, untrained_model_dir: Callable[..., Path]
) -> tuple[Path, Path]:
    """A prepared dataset and an untrained source model under ``root``: a resume does not
    depend on what the source model learned, so no pretrain fit."""
    dataset = root / "dataset"
    prepare_dataset(config.data, config.seed, dataset)
    return dataset, untrained_model_dir(config, dataset, root / "pretrained")


def graft_tune(*args: str) -> list[str]:
    return [sys.executable, "-m", "graft.cli", "tune", *args]


def _env() -> dict[str, str]:
    return {**os.environ, "GRAFT_RAY_LOG_TO_DRIVER": "0"}


def kill_search_when(
    ready: Callable[[dict[str, TrialState]], bool],
    config: GraftConfig,
    overrides: list[str],
    dataset: Path,
    pretrained: Path,
    out: Path,
    deadline_s: float = 150,
) -> KilledSearch:
    """Start `graft tune` on the tiny preset with ``overrides`` and SIGKILL its whole process
    group (Ray's processes too) once the experiment state on disk makes ``ready`` true."""
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
        # Tune saves the experiment state this often (10 s at least by default): a trial
        # that trains in its trainable takes a second or two, and the kill must land while
        # the state on disk still leaves trials to run
        env={**_env(), "TUNE_GLOBAL_CHECKPOINT_S": "0.5"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # its own process group: the kill takes Ray's processes too
    )
    trials: dict[str, TrialState] = {}
    session: TuneSession | None = None
    try:
        deadline = time.monotonic() + deadline_s
        while time.monotonic() < deadline and first.poll() is None:
            time.sleep(0.2)
            if (out / "tune-session.json").exists():
                session = load_session(out)
                experiment_dir = config.work_path / "ray" / "tune" / _experiment(session)
                trials = trial_states(experiment_dir)
                if trials and ready(trials):
                    break
    finally:
        os.killpg(first.pid, signal.SIGKILL)
        first.wait(30)
    assert session is not None and trials and ready(trials), (
        f"the search was not ready to be killed (exit code {first.returncode}): {trials}"
    )
    return KilledSearch(trials, _experiment(session), session)


def _experiment(session: TuneSession) -> str:
    return f"tune-{session.parent_run_id[:12]}"


def kill_after_first_finished_trial(
    config: GraftConfig, overrides: list[str], dataset: Path, pretrained: Path, out: Path
) -> KilledSearch:
    return kill_search_when(
        lambda trials: any(t.status == "TERMINATED" for t in trials.values()),
        config,
        overrides,
        dataset,
        pretrained,
        out,
    )


def resume_killed_search(out: Path, timeout_s: float = 240) -> str:
    """Runs `graft tune --resume`; returns what it printed to stderr (its progress lines)."""
    resumed = subprocess.run(
        graft_tune("--resume", "--output-dir", str(out)),
        env=_env(),
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    return resumed.stderr


def tune_stage_runs(config: GraftConfig, experiment: str) -> list[Any]:
    """The MLflow tune stage runs of the Tune experiment ``experiment`` (one, if resumed right)."""
    return tracking.client_for(config).search_runs(
        [tracking.experiment_id(config)],
        filter_string=f"tags.`{EXPERIMENT_TAG}` = '{experiment}' and tags.`graft.stage` = 'tune'",
    )
