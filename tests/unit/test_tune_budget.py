"""tune.epoch_budget: the search stops once its trials trained the budget's epochs in total,
the count survives Tune's experiment-state round trip (what a resumed search restores), and
the config refuses the budget where it cannot mean anything."""

import json
import math
import pickle
from typing import Any

import pytest
from ray.tune.execution.tune_controller import TuneController
from ray.tune.utils.serialization import TuneFunctionEncoder, _loads_with_cloudpickle

from graft.config import load_config
from graft.errors import ConfigError
from graft.tune.epoch_budget import EpochBudgetStopper
from graft.tune.search_algorithms import make_searcher, search_stopper, tpe_sampler
from graft.tune.space import param_space
from graft.tune.trial import TIME_ATTR


def _report(stopper: EpochBudgetStopper, trial_id: str, epoch: int) -> bool:
    return stopper(trial_id, {TIME_ATTR: epoch, "val_accuracy": 0.5})


def test_budget_counts_each_trials_furthest_epoch_and_stops_the_search_when_spent() -> None:
    stopper = EpochBudgetStopper(budget=10, time_attr=TIME_ATTR)
    for epoch in (1, 2, 3):
        assert not _report(stopper, "a", epoch)  # a single trial is never stopped by itself
    for epoch in (1, 2, 3, 4):
        _report(stopper, "b", epoch)
    assert stopper.spent == 7
    assert not stopper.stop_all()
    # a trial restarted from its epoch-2 checkpoint reports epochs 3, 4 again: not new spend
    _report(stopper, "a", 3)
    assert stopper.spent == 7
    _report(stopper, "a", 4)
    _report(stopper, "c", 1)
    assert stopper.spent == 9 and not stopper.stop_all()
    _report(stopper, "c", 2)
    assert stopper.spent == 10 and stopper.stop_all()


def test_budget_survives_the_experiment_state_a_resumed_search_restores() -> None:
    stopper = EpochBudgetStopper(budget=12, time_attr=TIME_ATTR)
    for epoch in range(1, 6):
        _report(stopper, "a", epoch)
    # TuneController.save_to_dir writes its own __getstate__ (which keeps the stopper) through
    # TuneFunctionEncoder; restore_from_dir decodes it with _loads_with_cloudpickle and hands
    # the dict to __setstate__
    state = {"_stopper": stopper, "_session_str": "s", "_start_time": 0.0}
    encoded = json.dumps(state, cls=TuneFunctionEncoder)
    controller = TuneController.__new__(TuneController)
    controller.__dict__["_create_checkpoint_manager"] = lambda: None
    TuneController.__setstate__(controller, _loads_with_cloudpickle(encoded))
    restored = controller.__dict__["_stopper"]
    assert isinstance(restored, EpochBudgetStopper)
    assert restored.spent == 5 and restored.budget == 12
    for epoch in range(1, 8):
        _report(restored, "b", epoch)
    assert restored.stop_all()  # 5 before the restart + 7 after


def test_search_stopper_follows_the_config() -> None:
    budgeted = load_config(preset="tiny", overrides=["tune.epoch_budget=25"])
    stopper = search_stopper(budgeted, max_epochs=10)
    assert isinstance(stopper, EpochBudgetStopper) and stopper.budget == 25
    assert search_stopper(load_config(preset="tiny"), max_epochs=10) is None
    pbt = load_config(
        preset="tiny",
        overrides=["tune.scheduler=pbt", "tune.searcher=random", "tune.max_concurrent=3"],
    )
    assert search_stopper(pbt, max_epochs=10) == {TIME_ATTR: 10}


def test_pbt_refuses_an_epoch_budget() -> None:
    with pytest.raises(ConfigError, match="epoch_budget cannot bound a PBT search"):
        load_config(
            preset="tiny",
            overrides=[
                "tune.scheduler=pbt",
                "tune.searcher=random",
                "tune.max_concurrent=3",
                "tune.epoch_budget=20",
            ],
        )


def _distance_to_optimum_after_startup(startup_trials: int) -> float:
    """Median |log10 lr - log10 1e-3| of the suggestions made after 20 observed trials."""
    config = load_config(
        preset="tiny",
        overrides=[
            "tune.searcher=optuna",
            "tune.seed=5",
            "tune.max_concurrent=1",
            f"tune.tpe.startup_trials={startup_trials}",
            'tune.space={"finetune.optimizer.lr": '
            '{"type": "loguniform", "low": 1e-5, "high": 1e-1}}',
        ],
    )
    searcher = make_searcher(config)
    searcher.set_search_properties(config.tune.metric, config.tune.mode, param_space(config))
    distances: list[float] = []
    for index in range(30):
        suggested: dict[str, Any] = searcher.suggest(f"t{index}")
        distance = abs(math.log10(suggested["finetune.optimizer.lr"]) + 3)
        searcher.on_trial_complete(f"t{index}", {"val_accuracy": 1.0 - distance / 4})
        if index >= 20:
            distances.append(distance)
    return sorted(distances)[len(distances) // 2]


def test_tpe_startup_trials_decide_when_the_search_stops_sampling_at_random() -> None:
    # after 3 random start-up trials TPE closes in on the optimum (0.58 decades at this seed);
    # with 30 it is still random: uniform over 4 decades, a median distance of about 1
    modelled = _distance_to_optimum_after_startup(3)
    still_random = _distance_to_optimum_after_startup(30)
    assert modelled < 0.8
    assert still_random > 0.9
    assert still_random > 1.5 * modelled


@pytest.mark.parametrize("enabled", [True, False])
def test_tpe_modelling_choices_come_from_the_config(enabled: bool) -> None:
    # Optuna's defaults equal Graft's, so only a config that turns them off shows they are read
    flag = str(enabled).lower()
    config = load_config(
        preset="tiny",
        overrides=[f"tune.tpe.multivariate={flag}", f"tune.tpe.constant_liar={flag}"],
    )
    sampler = tpe_sampler(config)
    assert sampler._multivariate is enabled
    assert sampler._group is enabled  # conditional keys are grouped only when multivariate
    assert sampler._constant_liar is enabled
    assert sampler._n_startup_trials == config.tune.tpe.startup_trials


def test_a_search_saved_by_the_earlier_graft_resumes_with_its_count() -> None:
    # what the stopper of the previous release pickled: the per-trial epochs as a plain dict
    saved = EpochBudgetStopper.__new__(EpochBudgetStopper)
    saved.__dict__.update(
        budget=12, time_attr=TIME_ATTR, epochs_by_trial={"a": 3, "b": 2}, _announced=False
    )
    restored = pickle.loads(pickle.dumps(saved))
    assert restored.spent == 5 and len(restored.trial_epochs) == 2
    _report(restored, "a", 3)  # a repeated epoch is still not new spend
    assert restored.spent == 5
    for epoch in range(1, 8):
        _report(restored, "c", epoch)
    assert restored.stop_all()
