"""What a running search shows while it runs (Tune's own table is off: ``verbose=0``).

In a terminal, a progress bar over the search's budget (trial-epochs under
``tune.epoch_budget``, else trials) with the trials running and done and the best metric so
far. Elsewhere (KFP pod logs, CI) one line per trial as it ends: how it ended, its metric, and
the same totals. Every trial Tune made gets its line, also one the search stopped before its
first epoch (while its workers started, or before its actor could start), with the reason.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from ray.tune import Callback
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from graft.tune.runs import BEFORE_FIRST_EPOCH, has_report, search_stop_reason, trial_outcome
from graft.tune.trial_epochs import TrialEpochs


@dataclass
class SearchTally:
    """A search's counts as Tune reports them; what the bar and the lines show."""

    metric: str
    mode: str  # "max" or "min"
    num_samples: int
    epoch_budget: int | None = None
    time_budget_s: float | None = None
    trial_epochs: TrialEpochs = field(default_factory=TrialEpochs)
    running: set[str] = field(default_factory=set)
    ended: dict[str, str] = field(default_factory=dict)  # trial -> outcome
    best: float | None = None
    best_trial: str = ""

    def __setstate__(self, state: dict[str, Any]) -> None:
        # a search saved by an earlier Graft kept the per-trial epochs as a plain dict
        if "furthest_epoch" in state:
            state = {**state, "trial_epochs": TrialEpochs(dict(state["furthest_epoch"]))}
            del state["furthest_epoch"]
        self.__dict__.update(state)

    def started(self, trial_id: str) -> None:
        self.running.add(trial_id)

    def reported(self, trial_id: str, result: dict[str, Any]) -> None:
        self.trial_epochs.add(trial_id, int(result.get("epoch", 0)))
        value = result.get(self.metric)
        if value is None:
            return
        if self.best is None or (value > self.best if self.mode == "max" else value < self.best):
            self.best, self.best_trial = float(value), trial_id

    def adopt(self, trials: list[Any]) -> int:
        """Counts what the trials of a resumed search did before the interruption: Tune
        restores them without calling a callback, and this tally was pickled empty when the
        search began. Returns how many trials it adopted."""
        adopted = 0
        for trial in trials:
            trial_id, last = str(trial.trial_id), dict(trial.last_result or {})
            ended = getattr(trial, "status", None) in ("TERMINATED", "ERROR")
            if trial_id in self.trial_epochs or trial_id in self.ended:
                continue
            if not (has_report(last) or ended):
                continue
            adopted += 1
            if has_report(last):
                # the best the trial ever reported, not only its last (Tune keeps both)
                analysis = getattr(trial, "metric_analysis", None) or {}
                best = analysis.get(self.metric, {}).get(self.mode)
                self.reported(trial_id, last if best is None else {**last, self.metric: best})
            if ended:
                self.ended[trial_id] = trial_outcome(last, trial.status == "ERROR").outcome
        return adopted

    def finished(self, trial_id: str, last_result: dict[str, Any], errored: bool) -> str:
        self.running.discard(trial_id)
        self.ended[trial_id] = trial_outcome(last_result, errored).outcome
        return self.ended[trial_id]

    @property
    def spent(self) -> int:
        """Trial-epochs so far, counted as ``tune.epoch_budget`` counts them."""
        return self.trial_epochs.total

    @property
    def total(self) -> int:
        """What the bar fills up to."""
        return self.epoch_budget if self.epoch_budget is not None else self.num_samples

    @property
    def completed(self) -> int:
        done = self.spent if self.epoch_budget is not None else len(self.ended)
        return min(done, self.total)

    def stop_reason(self, elapsed_s: float) -> str:
        """Why the search stopped a trial that had not reported yet."""
        return search_stop_reason(
            epoch_budget=self.epoch_budget,
            trial_epochs=self.spent,
            time_budget_s=self.time_budget_s,
            elapsed_s=elapsed_s,
        )

    def summary(self) -> str:
        best = (
            f"best {self.metric} {self.best:.4f} (trial {self.best_trial})"
            if self.best is not None
            else f"no {self.metric} yet"
        )
        unreported = sum(1 for outcome in self.ended.values() if outcome == BEFORE_FIRST_EPOCH)
        before = f" ({unreported} before their first epoch)" if unreported else ""
        return (
            f"{len(self.ended)} trials ended{before}, {len(self.running)} running, "
            f"{self.spent} trial-epochs; {best}"
        )


class LiveSearchProgress(Callback):
    """Shows a search's :class:`SearchTally` as it changes."""

    def __init__(self, tally: SearchTally, console: Console | None = None) -> None:
        self.tally = tally
        self._console = console
        self._progress: Progress | None = None
        self._task: Any = None
        self._adopted = False
        self._setup_at = time.monotonic()

    def __getstate__(self) -> dict[str, Any]:
        # Tune pickles its callbacks with the experiment; the live display stays behind
        return {"tally": self.tally}

    def __setstate__(self, state: dict[str, Any]) -> None:
        # also reads the state earlier Graft versions saved (the tally and a blank display)
        self.__init__(state["tally"])  # type: ignore[misc]

    @property
    def console(self) -> Console:
        if self._console is None:
            self._console = Console(stderr=True)
        return self._console

    def setup(
        self,
        stop: Any = None,
        num_samples: int | None = None,
        total_num_samples: int | None = None,
        **info: Any,
    ) -> None:
        self._setup_at = time.monotonic()
        if total_num_samples:  # Tune's count: a grid's points times num_samples
            self.tally.num_samples = total_num_samples
        if not self.console.is_terminal:
            return
        unit = "trial-epochs" if self.tally.epoch_budget is not None else "trials"
        self._progress = Progress(
            TextColumn("[bold]tune[/bold]"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn(unit),
            TimeElapsedColumn(),
            TextColumn("{task.description}"),
            console=self.console,
            transient=False,
        )
        self._progress.start()
        self._task = self._progress.add_task(self.tally.summary(), total=self.tally.total)

    def _refresh(self) -> None:
        if self._progress is not None:
            self._progress.update(
                self._task, completed=self.tally.completed, description=self.tally.summary()
            )

    def on_step_begin(self, iteration: int, trials: list[Any], **info: Any) -> None:
        if self._adopted:
            return
        self._adopted = True
        if self.tally.adopt(trials):
            self.console.print(
                f"tune: resumed; before the interruption: {self.tally.summary()}",
                highlight=False,
                soft_wrap=True,
            )
            self._refresh()

    def on_trial_start(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        self.tally.started(str(trial.trial_id))
        self._refresh()

    def on_trial_result(
        self, iteration: int, trials: list[Any], trial: Any, result: dict[str, Any], **info: Any
    ) -> None:
        self.tally.reported(str(trial.trial_id), result)
        self._refresh()

    def _ended(self, trial: Any, errored: bool) -> None:
        trial_id = str(trial.trial_id)
        last = dict(trial.last_result or {})
        outcome = self.tally.finished(trial_id, last, errored)
        if self._progress is None:
            self.console.print(
                f"tune: trial {trial_id} {self._how(outcome, last)}; {self.tally.summary()}",
                highlight=False,
                soft_wrap=True,  # a log line: never wrapped at the console's width
            )
        self._refresh()

    def _how(self, outcome: str, last: dict[str, Any]) -> str:
        """How a trial ended, as its line says it."""
        if not has_report(last):
            if outcome == BEFORE_FIRST_EPOCH:
                reason = self.tally.stop_reason(time.monotonic() - self._setup_at)
                return f"stopped before its first epoch: {reason}"
            return f"{outcome} before its first epoch"
        value = last.get(self.tally.metric)
        shown = f"{self.tally.metric} {value:.4f}" if value is not None else "no result"
        return f"{outcome} at epoch {int(last.get('epoch', 0))}, {shown}"

    def on_trial_complete(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        self._ended(trial, errored=False)

    def on_trial_error(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        self._ended(trial, errored=True)

    def on_experiment_end(self, trials: list[Any], **info: Any) -> None:
        # a stopper's stop-all (tune.epoch_budget) and the time budget stop trials without
        # Tune's on_trial_complete: running ones, and pending ones whose actor never started
        # (no on_trial_start either), which the stop marks TERMINATED. An interrupted search
        # leaves those PENDING: they run when it resumes.
        for trial in trials:
            trial_id = str(trial.trial_id)
            stopped = trial_id in self.tally.running or trial.status in ("TERMINATED", "ERROR")
            if stopped and trial_id not in self.tally.ended:
                self._ended(trial, errored=trial.status == "ERROR")
        if self._progress is not None:
            self._refresh()
            self._progress.stop()
            self._progress = None
