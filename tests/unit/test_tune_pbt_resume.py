"""A resumed synchronous PBT search keeps running: Ray's scheduler, rebuilt without its state,
would pause the whole restored population for good after its first perturbation point. Ray's
real scheduler and trials; the controller is a stand-in offering what PBT calls on it."""

from types import SimpleNamespace
from typing import Any

import pytest
from ray.tune.experiment import Trial
from ray.tune.schedulers import PopulationBasedTraining

from graft.tune.pbt_scheduler import ResumablePBT


def _after_the_first_perturbation_of_a_resumed_population(scheduler_class: type) -> Any:
    """Three trials restored at epoch 2 report epoch 3, are ranked and paused (synchronous
    PBT); what the scheduler picks to run next."""
    scheduler = scheduler_class(
        time_attr="epoch",
        perturbation_interval=1,
        hyperparam_mutations={"lr": [0.1, 0.2]},
        synch=True,
    )
    scheduler.set_search_properties("val_loss", "min")
    trials = []
    for index in range(3):
        trial = Trial("segments", config={"lr": 0.1}, stub=True, trial_id=f"t{index}")
        trial.run_metadata.last_result = {"epoch": 2, "val_loss": 1.0 + index}  # restored
        trials.append(trial)
    controller = SimpleNamespace(
        search_alg=None,
        get_trials=lambda: trials,
        get_live_trials=lambda: trials,
        _schedule_trial_save=lambda trial, result=None: None,  # no checkpoint: no exploit
    )
    for trial in trials:
        scheduler.on_trial_add(controller, trial)
        trial.set_status(Trial.RUNNING)
    for index, trial in enumerate(trials):
        scheduler.on_trial_result(controller, trial, {"epoch": 3, "val_loss": 0.5 + index})
        trial.set_status(Trial.PAUSED)
    return scheduler.choose_trial_to_run(controller)


def test_a_resumed_synchronous_population_goes_on_after_its_next_perturbation() -> None:
    assert _after_the_first_perturbation_of_a_resumed_population(ResumablePBT) is not None


@pytest.mark.filterwarnings("ignore")
def test_rays_own_scheduler_stalls_there() -> None:
    """Why ResumablePBT exists; once this fails, Ray has fixed it and the subclass can go."""
    assert _after_the_first_perturbation_of_a_resumed_population(PopulationBasedTraining) is None
