"""A search's progress against the compute it spent: every epoch report of every trial in the
order Tune received them, the best metric so far after each, and how many trial-epochs the
search had spent when some trial first reached a target. The tune stage plots it (is the
budget enough?) and ``bench/tune_efficiency.py`` compares searchers with it.

Trial-epochs are counted as ``tune.epoch_budget`` counts them (:class:`TrialEpochs`); the
reports of an epoch trained again are kept, at the spend they came in at."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd

from graft.io.plotting import save_figure
from graft.tune.trial_epochs import TrialEpochs


@dataclass(frozen=True)
class SearchProgress:
    metric: str
    mode: str  # "max" or "min"
    values: list[float]  # the metric of each epoch report, in arrival order
    spent: list[int]  # trial-epochs spent after each report: the trials' furthest epochs

    @property
    def trial_epochs(self) -> int:
        return self.spent[-1] if self.spent else 0

    def best_so_far(self) -> list[float]:
        pick = max if self.mode == "max" else min
        best: list[float] = []
        for value in self.values:
            best.append(value if not best else pick(best[-1], value))
        return best

    @property
    def best(self) -> float | None:
        return self.best_so_far()[-1] if self.values else None

    def epochs_to_reach(self, target: float) -> int | None:
        """Trial-epochs spent (this report included) when a trial first reached ``target``;
        None if none did."""
        for spent, value in zip(self.spent, self.values, strict=True):
            if (value >= target) if self.mode == "max" else (value <= target):
                return spent
        return None


def _epoch(row: pd.Series) -> float:
    epoch = row.get("epoch")
    return 0.0 if epoch is None or pd.isna(epoch) else float(epoch)


def search_progress(frames: Iterable[pd.DataFrame], metric: str, mode: str) -> SearchProgress:
    """From each trial's table of reports (Tune's ``Result.metrics_dataframe`` or
    ``ExperimentAnalysis.trial_dataframes``). Tune's ``timestamp`` has whole seconds: reports
    within one second are ordered by epoch, then trial, never by their metric."""
    rows = sorted(
        (float(row["timestamp"]), _epoch(row), trial, float(row[metric]))
        for trial, frame in enumerate(frames)
        if metric in frame
        for _, row in frame.dropna(subset=[metric]).iterrows()
    )
    trial_epochs = TrialEpochs()
    spent: list[int] = []
    for _, epoch, trial, _ in rows:
        # a report without an epoch (not Graft's trainable) counts one epoch more
        trial_epochs.add(str(trial), int(epoch) or trial_epochs.of(str(trial)) + 1)
        spent.append(trial_epochs.total)
    return SearchProgress(metric, mode, [value for *_, value in rows], spent)


def plot_progress_by_trial_epochs(
    progress: SearchProgress, path: Path, epoch_budget: int | None = None
) -> Path:
    spent = progress.spent
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.scatter(spent, progress.values, s=10, alpha=0.5, color="tab:blue", label="epoch report")
    ax.step(spent, progress.best_so_far(), where="post", color="black", label="best so far")
    if epoch_budget is not None:
        ax.axvline(epoch_budget, color="tab:red", linestyle="--", label="tune.epoch_budget")
    ax.set_xlabel("trial-epochs spent (each trial's furthest epoch, summed, in arrival order)")
    ax.set_ylabel(progress.metric)
    ax.set_title(f"Search progress: best {progress.metric} vs compute")
    ax.legend(loc="best")
    fig.tight_layout()
    return save_figure(fig, path, dpi=100)
