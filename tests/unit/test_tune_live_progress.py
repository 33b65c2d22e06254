"""What a running search shows: a bar over its budget in a terminal, a line per ended trial
elsewhere, both with the trials running and ended and the best metric so far."""

import io
import pickle
from types import SimpleNamespace

from rich.console import Console

from graft.tune.live_progress import LiveSearchProgress, SearchTally


def _trial(trial_id: str, **last: float) -> SimpleNamespace:
    return SimpleNamespace(trial_id=trial_id, last_result=last, status="RUNNING")


def _run_search(show: LiveSearchProgress) -> None:
    show.setup(total_num_samples=4)
    a, b = _trial("a"), _trial("b")
    show.on_trial_start(0, [], a)
    show.on_trial_start(0, [], b)
    for epoch, (acc_a, acc_b) in enumerate([(0.5, 0.7), (0.6, 0.9)], start=1):
        show.on_trial_result(0, [], a, {"epoch": epoch, "val_accuracy": acc_a})
        show.on_trial_result(0, [], b, {"epoch": epoch, "val_accuracy": acc_b})
    a.last_result = {"epoch": 2, "val_accuracy": 0.6, "fit_complete": 0.0}
    show.on_trial_complete(0, [], a)  # cut by the scheduler
    b.last_result = {"epoch": 2, "val_accuracy": 0.9, "fit_complete": 1.0}
    show.on_trial_complete(0, [], b)
    show.on_trial_error(0, [], _trial("c"))  # never reported
    # a budget's stop-all ends a running trial without Tune's on_trial_complete
    d = _trial("d")
    show.on_trial_start(0, [], d)
    show.on_trial_result(0, [], d, {"epoch": 1, "val_accuracy": 0.8})
    d.last_result, d.status = {"epoch": 1, "val_accuracy": 0.8, "fit_complete": 0.0}, "RUNNING"
    show.on_experiment_end([a, b, d])


def test_the_tally_counts_trials_epochs_and_the_best_metric() -> None:
    tally = SearchTally("val_loss", "min", num_samples=5, epoch_budget=10)
    tally.started("a")
    tally.reported("a", {"epoch": 1, "val_loss": 0.8})
    tally.reported("a", {"epoch": 2, "val_loss": 0.5})
    tally.started("b")
    tally.reported("b", {"epoch": 1, "val_loss": 0.6})
    assert (tally.best, tally.best_trial) == (0.5, "a")  # lower is better
    assert tally.spent == 3
    assert (tally.completed, tally.total) == (3, 10)  # the bar fills up to the epoch budget
    assert tally.finished("a", {"epoch": 2, "fit_complete": 1.0}, errored=False) == "completed"
    assert tally.running == {"b"}
    assert (
        tally.summary()
    ) == "1 trials ended, 1 running, 3 trial-epochs; best val_loss 0.5000 (trial a)"
    no_budget = SearchTally("val_loss", "min", num_samples=5)
    no_budget.finished("x", {}, errored=True)
    assert (no_budget.completed, no_budget.total) == (1, 5)  # ...else up to the trials


def test_outside_a_terminal_each_ended_trial_is_one_line() -> None:
    out = io.StringIO()
    show = LiveSearchProgress(SearchTally("val_accuracy", "max", 2), Console(file=out))
    _run_search(show)
    lines = out.getvalue().splitlines()
    assert lines == [
        "tune: trial a cut at epoch 2, val_accuracy 0.6000; 1 trials ended, 1 running, "
        "4 trial-epochs; best val_accuracy 0.9000 (trial b)",
        "tune: trial b completed at epoch 2, val_accuracy 0.9000; 2 trials ended, 0 running, "
        "4 trial-epochs; best val_accuracy 0.9000 (trial b)",
        "tune: trial c failed before its first epoch; 3 trials ended, 0 running, "
        "4 trial-epochs; best val_accuracy 0.9000 (trial b)",
        "tune: trial d cut at epoch 1, val_accuracy 0.8000; 4 trials ended, 0 running, "
        "5 trial-epochs; best val_accuracy 0.9000 (trial b)",
    ]
    assert show.tally.num_samples == 4  # Tune's own count of the trials it will start


def test_in_a_terminal_a_bar_fills_up_to_the_budget() -> None:
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=160)
    show = LiveSearchProgress(SearchTally("val_accuracy", "max", 2, epoch_budget=8), console)
    _run_search(show)
    screen = out.getvalue()
    assert "5/8" in screen and "trial-epochs" in screen  # spent / budget
    assert "best val_accuracy 0.9000 (trial b)" in screen
    assert "tune: trial" not in screen  # the bar replaces the per-trial lines


def test_tune_can_pickle_it_with_the_experiment_while_it_shows() -> None:
    console = Console(file=io.StringIO(), force_terminal=True)
    show = LiveSearchProgress(SearchTally("val_accuracy", "max", 2), console)
    show.setup(total_num_samples=2)
    show.on_trial_start(0, [], _trial("a"))
    restored = pickle.loads(pickle.dumps(show))
    assert restored.tally.running == {"a"}
    show.on_experiment_end([])


def test_a_resumed_search_counts_what_its_restored_trials_did_before() -> None:
    # Tune restores an interrupted search's trials without a callback, and the callback comes
    # back from the experiment as it was pickled when the search began: empty
    fresh = LiveSearchProgress(SearchTally("val_accuracy", "max", 4, epoch_budget=20))
    show = pickle.loads(pickle.dumps(fresh))
    out = io.StringIO()
    show._console = Console(file=out, force_terminal=False)
    done = SimpleNamespace(
        trial_id="a",
        status="TERMINATED",
        last_result={"epoch": 5, "val_accuracy": 0.8, "fit_complete": 1.0},
        metric_analysis={"val_accuracy": {"max": 0.85, "min": 0.5}},
    )
    cut_off = SimpleNamespace(
        trial_id="b", status="PENDING", last_result={"epoch": 2, "val_accuracy": 0.6}
    )
    unstarted = SimpleNamespace(trial_id="c", status="PENDING", last_result={})
    show.setup(total_num_samples=4)
    show.on_step_begin(0, [done, cut_off, unstarted])
    tally = show.tally
    assert tally.spent == 7
    assert tally.ended == {"a": "completed"}
    assert (tally.best, tally.best_trial) == (0.85, "a")  # its best epoch, not its last
    assert "resumed; before the interruption: 1 trials ended" in out.getvalue()
    # once: later steps and the resumed trial's own reports are not counted again
    show.on_step_begin(1, [done, cut_off, unstarted])
    show.on_trial_start(1, [], cut_off)
    show.on_trial_result(1, [], cut_off, {"epoch": 3, "val_accuracy": 0.7})
    assert tally.spent == 8
    assert out.getvalue().count("resumed") == 1


def test_a_search_started_afresh_adopts_nothing() -> None:
    out = io.StringIO()
    show = LiveSearchProgress(SearchTally("val_accuracy", "max", 2), Console(file=out))
    show.setup(total_num_samples=2)
    show.on_step_begin(0, [SimpleNamespace(trial_id="a", status="PENDING", last_result={})])
    assert show.tally.spent == 0 and "resumed" not in out.getvalue()


def test_a_search_saved_by_the_earlier_graft_resumes_its_progress() -> None:
    # what the previous release pickled: the tally's per-trial epochs as a plain dict, and a
    # callback state without the resumed-search flag
    tally = SearchTally.__new__(SearchTally)
    tally.__dict__.update(
        metric="val_accuracy",
        mode="max",
        num_samples=4,
        epoch_budget=20,
        furthest_epoch={"a": 3},
        running={"a"},
        ended={},
        best=0.7,
        best_trial="a",
    )
    show = LiveSearchProgress.__new__(LiveSearchProgress)
    show.__setstate__(
        {
            "tally": pickle.loads(pickle.dumps(tally)),
            "_console": None,
            "_progress": None,
            "_task": None,
        }
    )
    out = io.StringIO()
    show._console = Console(file=out, force_terminal=False)
    show.setup(total_num_samples=4)
    show.on_step_begin(0, [_trial("a", epoch=3, val_accuracy=0.7)])
    show.on_trial_result(0, [], _trial("a"), {"epoch": 4, "val_accuracy": 0.75})
    assert show.tally.spent == 4
    assert show.tally.best == 0.75


def test_a_trial_stopped_before_its_first_epoch_gets_its_line_with_the_reason() -> None:
    out = io.StringIO()
    show = LiveSearchProgress(
        SearchTally("val_accuracy", "max", 4, epoch_budget=3), Console(file=out)
    )
    show.setup(total_num_samples=4)
    a = _trial("a")
    show.on_trial_start(0, [], a)
    for epoch in (1, 2, 3):
        show.on_trial_result(0, [], a, {"epoch": epoch, "val_accuracy": 0.5 + epoch / 10})
    a.last_result, a.status = {"epoch": 3, "val_accuracy": 0.8, "fit_complete": 0.0}, "TERMINATED"
    # started (its MLflow run exists) but stopped while its workers started: Tune's stand-in
    # result names the trial and its host, and no epoch
    starting = SimpleNamespace(
        trial_id="b", status="TERMINATED", last_result={"trial_id": "b", "hostname": "h"}
    )
    show.on_trial_start(0, [], starting)
    # made by the searcher but stopped before its actor started: no on_trial_start at all
    unstarted = SimpleNamespace(trial_id="c", status="TERMINATED", last_result={"trial_id": "c"})
    show.on_experiment_end([a, starting, unstarted])
    lines = out.getvalue().splitlines()
    assert lines[1:] == [
        "tune: trial b stopped before its first epoch: epoch budget spent; 2 trials ended "
        "(1 before their first epoch), 0 running, 3 trial-epochs; best val_accuracy 0.8000 "
        "(trial a)",
        "tune: trial c stopped before its first epoch: epoch budget spent; 3 trials ended "
        "(2 before their first epoch), 0 running, 3 trial-epochs; best val_accuracy 0.8000 "
        "(trial a)",
    ]
    assert show.tally.ended == {"a": "cut", "b": "before_first_epoch", "c": "before_first_epoch"}


def test_an_interrupted_search_leaves_its_waiting_trials_to_the_resume() -> None:
    out = io.StringIO()
    show = LiveSearchProgress(SearchTally("val_accuracy", "max", 4), Console(file=out))
    show.setup(total_num_samples=4)
    waiting = SimpleNamespace(trial_id="w", status="PENDING", last_result={"trial_id": "w"})
    show.on_experiment_end([waiting])  # Ctrl-C: Tune cleans up and ends the experiment
    assert out.getvalue() == "" and show.tally.ended == {}


def test_a_time_budget_is_named_as_the_reason_once_it_ran_out() -> None:
    tally = SearchTally("val_accuracy", "max", 4, time_budget_s=60.0)
    assert tally.stop_reason(elapsed_s=61.0) == "time budget spent"
    assert tally.stop_reason(elapsed_s=10.0) == "the search ended"
