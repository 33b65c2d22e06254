"""A search-wide compute budget in trial-epochs (``tune.epoch_budget``).

Wall-clock budgets (``tune.time_budget_s``) mean something else on every machine, and on a
small one most of a short trial is worker start-up. An epoch budget counts what the search
actually trained: every trial's epochs added up, which is also how ``bench/tune_efficiency.py``
compares searchers at equal compute.

Tune pickles the experiment's stopper with its experiment state (``runner_data``), so the
count survives ``Tuner.restore``: a resumed search spends only what is left.
"""

from __future__ import annotations

import logging
from typing import Any

from ray.tune.stopper import Stopper

from graft.tune.trial_epochs import TrialEpochs

log = logging.getLogger(__name__)


class EpochBudgetStopper(Stopper):
    """Stops the whole search once its trials have trained ``budget`` epochs in total.

    A trial's spend is the highest epoch it reported (:class:`TrialEpochs`; ``time_attr`` is
    the trial's true epoch, also after a restart from its checkpoint). Reports Tune takes in
    while the stop goes out still count (the tests see at most about one per running trial);
    whatever a stopped trial's workers train until the stop reaches them is never reported,
    and so neither counted nor handed on.
    """

    def __init__(self, budget: int, time_attr: str) -> None:
        self.budget = budget
        self.time_attr = time_attr
        self.trial_epochs = TrialEpochs()
        self._announced = False

    def __setstate__(self, state: dict[str, Any]) -> None:
        # a search saved by an earlier Graft kept the per-trial epochs as a plain dict
        if "epochs_by_trial" in state:
            state = {**state, "trial_epochs": TrialEpochs(dict(state["epochs_by_trial"]))}
            del state["epochs_by_trial"]
        self.__dict__.update(state)

    @property
    def spent(self) -> int:
        return self.trial_epochs.total

    def __call__(self, trial_id: str, result: dict[str, Any]) -> bool:
        self.trial_epochs.add(trial_id, int(result.get(self.time_attr, 0)))
        return False  # the budget ends the search as a whole, in stop_all

    def stop_all(self) -> bool:
        exhausted = self.spent >= self.budget
        if exhausted and not self._announced:
            self._announced = True
            log.info(
                "tune.epoch_budget spent: %d of %d trial-epochs over %d trials; stopping the "
                "search",
                self.spent,
                self.budget,
                len(self.trial_epochs),
            )
        return exhausted
