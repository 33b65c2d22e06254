"""A tuning process killed after its first finished trial resumes with `graft tune --resume`:
the finished trial is not run again, the others complete, and MLflow holds one nested run per
trial under one tune stage run, the best one tagged."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from graft import tracking
from graft.config import load_config
from graft.data.prepare import prepare_dataset
from graft.train.loop import MODEL_FILE
from graft.tune.runs import BEST_TAG, EXPERIMENT_TAG, TRIAL_TAG
from graft.tune.session import load_session

pytestmark = [pytest.mark.ray, pytest.mark.timeout(400)]

NUM_SAMPLES = 3
PHASES = '[{"trainable": "head", "epochs": 3}, {"trainable": "all", "epochs": 3, "lr_scale": 0.1}]'


def _terminated_trials(experiment_dir: Path) -> set[str]:
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


def _graft(*args: str) -> list[str]:
    return [sys.executable, "-m", "graft.cli", "tune", *args]


def test_killed_search_resumes_without_rerunning_finished_trials(
    tmp_path: Path, untrained_model_dir: Callable[..., Path]
) -> None:
    overrides = [
        f"work_dir={tmp_path / 'work'}",
        f"tune.num_samples={NUM_SAMPLES}",
        "tune.max_concurrent=1",
        "tune.searcher=random",
        "tune.scheduler=fifo",
        f"finetune.phases={PHASES}",
    ]
    config = load_config(preset="tiny", overrides=overrides)
    dataset = tmp_path / "dataset"
    prepare_dataset(config.data, config.seed, dataset)
    # no pretrain fit: resume does not depend on what the source model learned
    pretrained = untrained_model_dir(config, dataset, tmp_path / "pretrained")
    out = tmp_path / "tune"
    env = {**os.environ, "GRAFT_RAY_LOG_TO_DRIVER": "0"}
    sets = [item for override in overrides for item in ("--set", override)]
    first = subprocess.Popen(
        _graft(
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
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # its own process group: the kill takes Ray's processes too
    )
    finished: set[str] = set()
    try:
        deadline = time.monotonic() + 150
        while time.monotonic() < deadline and not finished and first.poll() is None:
            time.sleep(1)
            if (out / "tune-session.json").exists():
                session = load_session(out)
                experiment = f"tune-{session.parent_run_id[:12]}"
                finished = _terminated_trials(config.work_path / "ray" / "tune" / experiment)
    finally:
        os.killpg(first.pid, signal.SIGKILL)
        first.wait(30)
    assert finished, "no trial finished before the kill"
    assert len(finished) < NUM_SAMPLES, "the search ended before it could be interrupted"
    trials_dir = config.work_path / "tune-trials" / experiment
    finished_models = {t: (trials_dir / t / "model" / MODEL_FILE).stat().st_mtime for t in finished}

    resumed = subprocess.run(
        _graft("--resume", "--output-dir", str(out)),
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]

    # every trial ran, the finished one was not run again
    trial_ids = {p.name for p in trials_dir.iterdir() if p.is_dir()}
    assert len(trial_ids) == NUM_SAMPLES
    assert finished <= trial_ids
    for trial_id, mtime in finished_models.items():
        assert (trials_dir / trial_id / "model" / MODEL_FILE).stat().st_mtime == mtime

    # MLflow: one tune stage run for the experiment, one child run per trial
    client = tracking.client_for(config)
    experiment_id = tracking.experiment_id(config)
    stage_runs = client.search_runs(
        [experiment_id],
        filter_string=f"tags.`{EXPERIMENT_TAG}` = '{experiment}' and tags.`graft.stage` = 'tune'",
    )
    assert len(stage_runs) == 1
    assert stage_runs[0].data.tags[tracking.PARENT_TAG] == session.parent_run_id
    assert stage_runs[0].info.status == "FINISHED"
    children = client.search_runs(
        [experiment_id],
        filter_string=f"tags.`{tracking.PARENT_TAG}` = '{stage_runs[0].info.run_id}'",
    )
    assert len(children) == NUM_SAMPLES
    assert {c.data.tags[TRIAL_TAG] for c in children} == trial_ids
    assert all(c.info.status == "FINISHED" for c in children)
    assert [c.data.tags.get(BEST_TAG) for c in children].count("true") == 1

    # outputs: the table covers every trial, the plots exist
    table = (out / "trials.csv").read_text().strip().splitlines()
    assert len(table) == 1 + NUM_SAMPLES
    assert (out / "metric_by_trial.png").stat().st_size > 5_000
    assert (out / "params_vs_metric.png").stat().st_size > 5_000
    assert (out / "best_model" / MODEL_FILE).exists()
