"""A search's progress against compute: reports in arrival order, never reordered by their
metric, the best so far after each, and the trial-epochs spent before a target was reached."""

from pathlib import Path

import pandas as pd

from graft.tune.progress import plot_progress_by_trial_epochs, search_progress


def _trial(timestamps: list[int], accuracies: list[float]) -> pd.DataFrame:
    epochs = [float(e) for e in range(1, len(accuracies) + 1)]
    return pd.DataFrame({"timestamp": timestamps, "epoch": epochs, "val_accuracy": accuracies})


def test_reports_are_taken_in_arrival_order_across_trials() -> None:
    first = _trial([100, 101, 105], [0.50, 0.60, 0.90])
    second = _trial([102, 103, 104], [0.70, 0.95, 0.80])
    progress = search_progress([first, second], "val_accuracy", "max")
    assert progress.values == [0.50, 0.60, 0.70, 0.95, 0.80, 0.90]
    assert progress.best_so_far() == [0.50, 0.60, 0.70, 0.95, 0.95, 0.95]
    assert progress.trial_epochs == 6
    assert progress.best == 0.95
    assert progress.epochs_to_reach(0.65) == 3
    assert progress.epochs_to_reach(0.95) == 4
    assert progress.epochs_to_reach(0.99) is None


def test_reports_in_the_same_second_are_ordered_by_epoch_not_by_their_metric() -> None:
    # Tune's timestamp has whole seconds: a good epoch 1 and a bad epoch 2 of another trial
    # in one second stay in epoch order, whichever reached the target
    good = _trial([10], [0.9])
    bad = _trial([9, 10], [0.1, 0.2])
    progress = search_progress([bad, good], "val_accuracy", "max")
    assert progress.values == [0.1, 0.9, 0.2]
    assert progress.epochs_to_reach(0.9) == 2


def test_a_loss_is_minimised_and_trials_without_the_metric_are_skipped() -> None:
    losses = pd.DataFrame(
        {"timestamp": [1, 2, 3], "epoch": [1.0, 2.0, 3.0], "val_loss": [0.9, 0.4, 0.6]}
    )
    no_report = pd.DataFrame({"timestamp": [1], "epoch": [1.0]})
    progress = search_progress([losses, no_report], "val_loss", "min")
    assert progress.best_so_far() == [0.9, 0.4, 0.4]
    assert progress.epochs_to_reach(0.5) == 2
    assert search_progress([], "val_loss", "min").best is None


def test_progress_plot_is_written(tmp_path: Path) -> None:
    progress = search_progress([_trial([1, 2, 3], [0.5, 0.7, 0.6])], "val_accuracy", "max")
    path = plot_progress_by_trial_epochs(progress, tmp_path / "p.png", epoch_budget=3)
    assert path.stat().st_size > 5_000


def test_an_epoch_reported_again_after_a_restart_is_not_spent_twice() -> None:
    # the trial failed after epoch 2 and resumed from its epoch-1 checkpoint: epoch 2 is
    # reported twice; tune.epoch_budget and the live progress count its furthest epoch
    restarted = pd.DataFrame(
        {
            "timestamp": [1, 2, 3, 4],
            "epoch": [1.0, 2.0, 2.0, 3.0],
            "val_accuracy": [0.5, 0.6, 0.7, 0.9],
        }
    )
    other = _trial([5], [0.8])
    progress = search_progress([restarted, other], "val_accuracy", "max")
    assert progress.values == [0.5, 0.6, 0.7, 0.9, 0.8]
    assert progress.spent == [1, 2, 2, 3, 4]
    assert progress.trial_epochs == 4
    assert progress.epochs_to_reach(0.7) == 2  # the repeated epoch came in at 2 spent
    assert progress.epochs_to_reach(0.85) == 3


def test_reports_without_an_epoch_count_one_epoch_each() -> None:
    iterations = pd.DataFrame({"timestamp": [1, 2], "val_accuracy": [0.5, 0.6]})
    assert search_progress([iterations], "val_accuracy", "max").spent == [1, 2]
