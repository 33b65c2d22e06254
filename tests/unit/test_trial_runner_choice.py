"""Where a tune trial trains (``tune.trial_runner``), the checkpoint a trial that trains in its
trainable hands to Tune, and where the search then finds that trial's model."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from ray.train import Checkpoint

from graft.config import load_config
from graft.errors import ConfigError
from graft.train.loop_session import LocalSession
from graft.train.model_dir import HISTORY_FILE, MODEL_FILE, SPEC_FILE, STATE_FILE
from graft.tune.search import _with_checkpoint_path


@pytest.mark.parametrize(
    ("runner", "workers", "in_trainable"),
    [
        ("auto", 1, True),
        ("auto", 2, False),
        ("in_trainable", 1, True),
        ("ray_train", 1, False),
        ("ray_train", 2, False),
    ],
)
def test_the_runner_follows_the_config(runner: str, workers: int, in_trainable: bool) -> None:
    config = load_config(
        preset="tiny",
        overrides=[f"tune.trial_runner={runner}", f"tune.workers_per_trial={workers}"],
    )
    assert config.tune.in_trainable is in_trainable


def test_a_ddp_trial_cannot_train_in_its_trainable() -> None:
    with pytest.raises(ConfigError, match=r"workers_per_trial=2: set tune.trial_runner=auto"):
        load_config(
            preset="tiny",
            overrides=["tune.trial_runner=in_trainable", "tune.workers_per_trial=2"],
        )


def _payload() -> dict[str, Any]:
    weights = {"w": torch.arange(6.0).reshape(2, 3)}
    return {
        "model": weights,
        "optimizer": {"state": {}, "param_groups": []},
        "schedule": {},
        "loop": {"global_epoch": 3, "history": [{"epoch": 3.0, "val_loss": 0.5}]},
        "rng": {"torch": torch.get_rng_state()},
        "spec_json": '{"spec": 1}',
    }


def test_a_local_session_reports_a_checkpoint_it_can_resume_from(tmp_path: Path) -> None:
    kept = tmp_path / "kept"
    reports: list[dict[str, float]] = []

    def report_to(metrics: dict[str, float], folder: str | None) -> None:
        assert folder is not None  # removed once this returns: keep a copy, as Tune does
        Checkpoint.from_directory(folder).to_directory(str(kept))
        reports.append(metrics)

    LocalSession(report_to=report_to).report({"epoch": 3.0}, _payload())
    assert reports == [{"epoch": 3.0}]
    assert {p.name for p in kept.iterdir()} >= {STATE_FILE, MODEL_FILE, SPEC_FILE, HISTORY_FILE}
    assert torch.equal(torch.load(kept / MODEL_FILE)["w"], _payload()["model"]["w"])

    resumed = LocalSession(checkpoint=Checkpoint.from_directory(str(kept))).saved_state()
    assert resumed is not None
    assert resumed["loop"] == _payload()["loop"]
    assert torch.equal(resumed["model"]["w"], _payload()["model"]["w"])
    assert LocalSession().saved_state() is None  # a fresh start


def test_a_report_without_a_checkpoint_goes_on_without_a_folder() -> None:
    seen: list[str | None] = []
    LocalSession(report_to=lambda metrics, folder: seen.append(folder)).report({"e": 1.0}, None)
    assert seen == [None]
    LocalSession().report({"e": 1.0}, _payload())  # reporting nowhere: a PBT segment


def test_the_search_finds_an_in_trainable_trials_model_at_its_tune_checkpoint() -> None:
    tune_kept = SimpleNamespace(
        metrics={"epoch": 4.0}, checkpoint=SimpleNamespace(path="/store/trial/checkpoint_3")
    )
    assert _with_checkpoint_path(tune_kept).metrics["checkpoint_path"] == (
        "/store/trial/checkpoint_3"
    )
    # a Ray Train (or PBT) trial reports where its model is: that stands
    reported = SimpleNamespace(
        metrics={"epoch": 4.0, "checkpoint_path": "/train/run/checkpoint_x"},
        checkpoint=SimpleNamespace(path="/store/trial/checkpoint_3"),
    )
    assert _with_checkpoint_path(reported).metrics["checkpoint_path"] == "/train/run/checkpoint_x"
    # a trial stopped before its first report has neither
    unstarted = SimpleNamespace(metrics={}, checkpoint=None)
    assert "checkpoint_path" not in _with_checkpoint_path(unstarted).metrics
