"""The search hands on the best trial whose reported checkpoint still exists: a trial that Tune
stopped may have rotated that checkpoint out before the stop reached its workers, and another
checkpoint of it would not be the weights its metric describes."""

import logging
from pathlib import Path
from types import SimpleNamespace

import pytest

from graft.errors import TrainingError
from graft.io.ray_runtime import TrainStorage
from graft.train.model_dir import MODEL_FILE
from graft.tune.search import existing_best


def _result(root: Path, trial: str, accuracy: float, kept: bool) -> SimpleNamespace:
    checkpoint = root / trial / "checkpoint_000003"
    checkpoint.mkdir(parents=True)
    if kept:
        (checkpoint / MODEL_FILE).write_bytes(b"weights")
    metrics = {"trial_id": trial, "val_accuracy": accuracy, "checkpoint_path": str(checkpoint)}
    return SimpleNamespace(metrics=metrics, config={})


def test_the_best_trial_whose_checkpoint_survived_is_handed_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    results = [
        _result(tmp_path, "steady", 0.91, kept=True),
        _result(tmp_path, "stopped", 0.95, kept=False),  # rotated out after Tune's stop
        _result(tmp_path, "weak", 0.60, kept=True),
    ]
    store = TrainStorage(str(tmp_path))
    with caplog.at_level(logging.WARNING, logger="graft.tune.search"):
        best = existing_best(results, "val_accuracy", "max", store)
    assert best.metrics["trial_id"] == "steady"
    assert "['stopped'] lost the checkpoint" in caplog.text
    # nothing lost: the best one, without a warning
    caplog.clear()
    kept = [r for r in results if r.metrics["trial_id"] != "stopped"]
    assert existing_best(kept, "val_accuracy", "max", store).metrics["trial_id"] == "steady"
    assert not caplog.text
    # a loss is minimised
    assert existing_best(kept, "val_accuracy", "min", store).metrics["trial_id"] == "weak"


def test_no_surviving_checkpoint_is_one_clear_error(tmp_path: Path) -> None:
    results = [_result(tmp_path, "gone", 0.9, kept=False)]
    with pytest.raises(TrainingError, match="none of the 1 tuning trials' last reported"):
        existing_best(results, "val_accuracy", "max", TrainStorage(str(tmp_path)))
