"""Ray's PopulationBasedTraining, made to survive ``graft tune --resume`` in synchronous mode.

Tune does not save a scheduler's state with the experiment: a resumed search gets the PBT
object pickled when the search began, whose next synchronous perturbation point is still the
first one. Once the restored population reports again, PBT moves that point to the
population's latest epoch, no later, and then runs only trials *before* it: every trial
waits, and the search spins forever (seen here: a population resumed at epoch 2 reported
epoch 3 and then stalled). This subclass moves the point past each restored trial's epoch
as the trial is added, as an unbroken search would have.
"""

from __future__ import annotations

from typing import Any

from ray.tune.schedulers import PopulationBasedTraining

from graft.io import ray_compat


class ResumablePBT(PopulationBasedTraining):
    def on_trial_add(self, tune_controller: Any, trial: Any) -> None:
        super().on_trial_add(tune_controller, trial)
        epoch = (trial.run_metadata.last_result or {}).get(ray_compat.pbt_time_attr(self))
        if epoch is None:  # a new trial, not one restored from the experiment state
            return
        # what the last perturbation left behind: the trial trained to ``epoch`` and was
        # ranked there, so its next perturbation is an interval later
        ray_compat.mark_pbt_trial_perturbed_at(self, trial, int(epoch))
