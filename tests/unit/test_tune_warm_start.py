"""A search warm-started from the champion's search (tune.warm_start_top_k): a past trial's
parameters fitted to a changed space, and the top-k trials read back from a real (SQLite)
MLflow store with its registry."""

from __future__ import annotations

import logging
import random
from pathlib import Path
from typing import Any, NamedTuple

import pytest
from local_tracking import tiny_config_tracked_in

from champion_search import LoggedTrial, log_champion_search, register_champion
from graft.config import GraftConfig, SearchDimension, load_config, with_overrides
from graft.errors import ConfigError
from graft.io import tracking
from graft.tune.runs import trial_runs
from graft.tune.search_algorithms import make_searcher
from graft.tune.search_start import PriorResult, SearchStart, warm_rng_seed
from graft.tune.seeds import completed_seed, fitted_seed
from graft.tune.space import OptunaSpace, optuna_distributions, param_space
from graft.tune.warm_start import (
    SEEDS_TAG,
    WARM_START_FILE,
    WARM_START_TAG,
    recorded_start,
    search_start,
    warm_start,
)

LR = "finetune.optimizer.lr"
DROPOUT = "model.dropout.rate"
NAME = "finetune.optimizer.name"
MOMENTUM = "finetune.optimizer.momentum"
EPOCHS = "finetune.epochs"

# the space as it is now: the past search searched a wider LR, more dropout, more epochs,
# and rmsprop, and also the batch size
SPACE = {
    LR: SearchDimension(type="loguniform", low=1e-3, high=1e-2),
    DROPOUT: SearchDimension(type="uniform", low=0.0, high=0.3),
    EPOCHS: SearchDimension(type="int", low=1, high=3),
    NAME: SearchDimension(type="choice", values=["adamw", "sgd"]),
    MOMENTUM: SearchDimension(type="choice", values=[0.5, 0.9], when=f"{NAME} == sgd"),
}


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


def test_a_seed_loses_gone_keys_and_removed_choices_and_is_clipped_into_the_new_bounds(
    caplog: pytest.LogCaptureFixture,
) -> None:
    logged = {
        LR: "0.05",  # above the new loguniform high
        DROPOUT: "0.45",  # above the new uniform high
        EPOCHS: "7",  # above the new int high
        NAME: "rmsprop",  # no longer a choice
        "finetune.batch_size": "64",  # no longer searched
    }
    with caplog.at_level(logging.WARNING, logger="graft.tune.seeds"):
        seed, changes = fitted_seed(logged, SPACE, "trial t1")
    assert seed == {LR: 0.01, DROPOUT: 0.3, EPOCHS: 3}
    assert type(seed[EPOCHS]) is int
    assert {c.key: (c.old, c.new) for c in changes} == {
        LR: (0.05, 0.01),
        DROPOUT: (0.45, 0.3),
        EPOCHS: (7, 3),
        NAME: ("rmsprop", None),
        "finetune.batch_size": ("64", None),
    }
    warned = _warnings(caplog)
    assert len(warned) == 5
    clipped = f"trial t1: '{LR}': 0.05 -> 0.01 (clipped to the bounds [0.001, 0.01])"
    assert clipped in warned[0]
    assert any(f"'{DROPOUT}': 0.45 -> 0.3" in w for w in warned)
    assert any(f"'{EPOCHS}': 7 -> 3" in w for w in warned)
    assert any(f"'{NAME}': 'rmsprop' -> dropped (not one of the values" in w for w in warned)
    gone = "'finetune.batch_size': '64' -> dropped (no longer in tune.space)"
    assert any(gone in w for w in warned)


def test_a_log_scale_value_below_its_low_bound_or_at_zero_is_clipped_to_low(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, logger="graft.tune.seeds"):
        below, _ = fitted_seed({LR: "1e-05"}, SPACE)
        zero, _ = fitted_seed({LR: "0.0"}, SPACE)
    assert below == zero == {LR: 1e-3}
    assert len(_warnings(caplog)) == 2
    assert f"'{LR}': 0.0 -> 0.001" in _warnings(caplog)[1]


def test_values_inside_the_space_pass_unchanged_and_typed_without_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    logged = {LR: "0.0031622776601683794", DROPOUT: "0", EPOCHS: "2", NAME: "sgd", MOMENTUM: "0.9"}
    with caplog.at_level(logging.WARNING, logger="graft.tune.seeds"):
        seed, changes = fitted_seed(logged, SPACE)
    assert seed == {LR: 0.0031622776601683794, DROPOUT: 0.0, EPOCHS: 2, NAME: "sgd", MOMENTUM: 0.9}
    assert changes == [] and _warnings(caplog) == []


def test_a_fraction_for_an_int_is_rounded_and_a_key_its_condition_now_rules_out_dropped(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, logger="graft.tune.seeds"):
        seed, changes = fitted_seed({EPOCHS: "2.6", NAME: "adamw", MOMENTUM: "0.5"}, SPACE)
    assert seed == {EPOCHS: 3, NAME: "adamw"}
    assert [(c.key, c.why) for c in changes] == [
        (EPOCHS, "rounded to a whole number"),
        (MOMENTUM, f"inactive: {NAME} == sgd"),
    ]
    # a conditional key whose parent the seed lacks stays: the searcher decides the parent
    assert fitted_seed({MOMENTUM: "0.5"}, SPACE)[0] == {MOMENTUM: 0.5}


def test_a_choice_value_matches_however_its_number_was_written() -> None:
    space = {"finetune.batch_size": SearchDimension(type="choice", values=[16, 32, True])}
    assert fitted_seed({"finetune.batch_size": "32.0"}, space)[0] == {"finetune.batch_size": 32}
    assert fitted_seed({"finetune.batch_size": "True"}, space)[0] == {"finetune.batch_size": True}
    assert fitted_seed({"finetune.batch_size": "1.0"}, space)[0] == {}


def test_a_value_of_another_type_is_dropped() -> None:
    seed, changes = fitted_seed({LR: "adamw", EPOCHS: "nan"}, SPACE)
    assert seed == {}
    assert [c.new for c in changes] == [None, None]


def test_hyperopt_seeds_get_every_missing_key_drawn_inside_its_dimension() -> None:
    whole = completed_seed({LR: 0.005}, SPACE, random.Random(0))
    assert set(whole) == set(SPACE) and whole[LR] == 0.005
    assert 0.0 <= whole[DROPOUT] <= 0.3 and whole[EPOCHS] in (1, 2, 3)
    assert whole[NAME] in ("adamw", "sgd") and whole[MOMENTUM] in (0.5, 0.9)


TWO_KEYS = (
    'tune.space={"finetune.optimizer.lr": {"type": "loguniform", "low": 0.001, "high": 0.01},'
    ' "model.dropout.rate": {"type": "uniform", "low": 0.0, "high": 0.3}}'
)


def _searcher(config: GraftConfig, start: SearchStart | None = None) -> Any:
    search = make_searcher(config, start)
    if config.tune.searcher == "hyperopt":  # its space comes from the Tuner's param_space
        search.set_search_properties(config.tune.metric, config.tune.mode, param_space(config))
    return search


def _suggested(search: Any, count: int) -> list[tuple[float, float]]:
    """``count`` suggestions, each trial finished (at 0.5) before the next is asked for."""
    points = []
    for index in range(count):
        params = search.suggest(f"t{index}")
        points.append((params[LR], params[DROPOUT]))
        search.on_trial_complete(f"t{index}", {"val_accuracy": 0.5, "epoch": 2})
    return points


def test_the_searchers_take_the_seeds_as_their_first_suggestions() -> None:
    seeds = [{LR: 0.002}, {LR: 0.004, DROPOUT: 0.1}]
    for searcher in ("optuna", "hyperopt"):
        config = load_config(preset="tiny", overrides=[f"tune.searcher={searcher}", TWO_KEYS])
        search = _searcher(config, SearchStart(seeds))
        first = [search.suggest(f"t{i}") for i in range(2)]
        assert [p[LR] for p in first] == [0.002, 0.004], searcher
        assert first[1][DROPOUT] == 0.1


@pytest.mark.parametrize("searcher", ["optuna", "hyperopt"])
def test_a_warm_search_does_not_run_again_what_the_search_it_continues_ran(
    searcher: str,
) -> None:
    """Same tune.seed, so a cold restart would draw the last search's startup points again
    (the seeds among them); a warm one runs its seeds, then new points."""
    config = load_config(
        preset="tiny", overrides=[f"tune.searcher={searcher}", TWO_KEYS, "tune.num_samples=8"]
    )
    last = _suggested(_searcher(config), 5)
    scores = [0.6, 0.9, 0.5, 0.8, 0.7]
    seeds = [{LR: last[1][0], DROPOUT: last[1][1]}, {LR: last[3][0], DROPOUT: last[3][1]}]
    prior = [
        PriorResult({LR: lr, DROPOUT: rate}, s) for (lr, rate), s in zip(last, scores, strict=True)
    ]
    assert _suggested(_searcher(config), 5) == last  # what a cold restart would run
    warm = _suggested(_searcher(config, SearchStart(seeds, prior, rng_seed=12345)), 5)
    assert warm[:2] == [last[1], last[3]]
    assert not set(warm[2:]) & set(last)


def test_tpe_models_the_prior_results_before_its_first_suggestion() -> None:
    """With as many prior results as TPE's random startup trials, its first suggestion is
    modelled: the same sampler seed without them draws a random point instead."""
    config = load_config(preset="tiny", overrides=[TWO_KEYS, "tune.tpe.startup_trials=3"])
    prior = [
        PriorResult({LR: 0.0012, DROPOUT: 0.05}, 0.55),
        PriorResult({LR: 0.0060, DROPOUT: 0.20}, 0.93),
        PriorResult({LR: 0.0090, DROPOUT: 0.28}, 0.60),
        PriorResult({LR: 0.0020, DROPOUT: 0.25}, 0.58),
    ]
    told = make_searcher(config, SearchStart([], prior, rng_seed=7))
    study = told.searcher._ot_study  # Ray keeps it private; read here for what TPE models
    assert [(t.params, t.value) for t in study.trials] == [(p.params, p.score) for p in prior]
    untold = make_searcher(config, SearchStart([], [], rng_seed=7))
    assert _suggested(told, 1) != _suggested(untold, 1)


def test_the_prior_results_carry_the_distributions_the_searcher_suggests_from() -> None:
    import optuna

    study = optuna.create_study()
    for _ in range(6):
        trial = study.ask()
        OptunaSpace(SPACE)(trial)
        assert trial.distributions == optuna_distributions(SPACE, trial.params)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["tune.searcher=grid", "tune.warm_start_top_k=1"], "cannot seed tune.searcher=grid"),
        (["tune.num_samples=2", "tune.warm_start_top_k=3"], "seeds more trials than"),
    ],
)
def test_the_config_refuses_seeds_a_search_cannot_take(overrides: list[str], message: str) -> None:
    grid_space = 'tune.space={"model.dropout.rate": {"type": "choice", "values": [0.0, 0.2]}}'
    with pytest.raises(ConfigError, match=message):
        load_config(preset="tiny", overrides=[grid_space, *overrides])


# ----------------------------------------------------------------------------- from MLflow

PAST = [
    LoggedTrial({LR: "0.02", DROPOUT: "0.1"}, [0.50, 0.80]),  # best, LR clipped now
    LoggedTrial({LR: "0.004", DROPOUT: "0.2"}, [0.60, 0.55]),  # best epoch, not last
    LoggedTrial({LR: "0.002", DROPOUT: "0.4"}, [0.40, 0.70]),  # second by its last epoch
    LoggedTrial({LR: "0.003", DROPOUT: "0.0"}, [0.30]),
]


def _config(tmp_path: Path, *overrides: str) -> GraftConfig:
    return tiny_config_tracked_in(
        tmp_path,
        "export.model_name=graft-warm",
        "tune.warm_start_top_k=2",
        'tune.space={"finetune.optimizer.lr": {"type": "loguniform", "low": 0.001, "high": 0.01},'
        ' "model.dropout.rate": {"type": "uniform", "low": 0.0, "high": 0.3}}',
        *overrides,
    )


class Logged(NamedTuple):
    config: GraftConfig
    pipeline: str
    stage: str


@pytest.fixture(scope="module")
def logged(tmp_path_factory: pytest.TempPathFactory) -> Logged:
    """A champion whose search ran PAST (the store is read, never changed, by the tests)."""
    config = _config(tmp_path_factory.mktemp("warm"))
    return Logged(config, *log_champion_search(config, PAST))


def test_the_top_k_trials_of_the_champions_search_by_their_last_score_seed_the_search(
    logged: Logged, caplog: pytest.LogCaptureFixture
) -> None:
    config, pipeline, stage = logged
    with caplog.at_level(logging.INFO, logger="graft.tune"):
        warm = warm_start(config)
    assert warm.seeds == [{LR: 0.01, DROPOUT: 0.1}, {LR: 0.002, DROPOUT: 0.3}]
    assert [t["trial_id"] for t in warm.trials] == ["past_00000", "past_00002"]
    assert [t["score"] for t in warm.trials] == [0.80, 0.70]
    assert warm.source == {
        "champion_version": "1",
        "pipeline_run_id": pipeline,
        "tune_run_id": stage,
        "metric": "val_accuracy",
        "mode": "max",
    }
    clipped = f"'{LR}': 0.02 -> 0.01 (clipped to the bounds [0.001, 0.01])"
    assert warm.trials[0]["changes"] == [clipped]
    assert "seeding the search with the 2 best trial(s) by val_accuracy" in caplog.text
    # every trial is a prior result, fitted to the space as the seeds are, with its last score
    assert [(p.params, p.score) for p in warm.prior] == [
        ({LR: 0.01, DROPOUT: 0.1}, 0.80),
        ({LR: 0.004, DROPOUT: 0.2}, 0.55),
        ({LR: 0.002, DROPOUT: 0.3}, 0.70),
        ({LR: 0.003, DROPOUT: 0.0}, 0.30),
    ]
    # a random stream of its own, the same for the same champion search and data
    assert warm.rng_seed == warm_rng_seed(config.tune.seed, stage, "") != config.tune.seed
    assert warm.start() == SearchStart(warm.seeds, warm.prior, warm.rng_seed)
    # next week's data (the gate kept the champion): the same seeds, another stream
    week_2, week_3 = warm_start(config, "week2-hash"), warm_start(config, "week3-hash")
    assert week_2.seeds == week_3.seeds == warm.seeds
    assert week_2.rng_seed != week_3.rng_seed
    assert warm_start(config, "week2-hash").rng_seed == week_2.rng_seed


def test_a_search_that_minimised_its_loss_is_ranked_by_it_and_pbt_trials_by_their_last_values(
    tmp_path: Path,
) -> None:
    config = _config(tmp_path, "tune.warm_start_top_k=1")  # this search maximises accuracy
    losses = [LoggedTrial(t.params, [1.0 - s for s in t.scores]) for t in PAST]
    _, stage = log_champion_search(config, losses, metric="val_loss")
    # the lowest-loss trial was a PBT trial that last trained under LR 0.005
    best_run = trial_runs(config, stage)["past_00000"]
    tracking.logger_for(config, best_run).metrics({f"pbt.{LR}": 0.005, "pbt.exploit": 1.0}, 2)
    warm = warm_start(config)
    assert warm.source["metric"] == "val_loss" and warm.source["mode"] == "min"
    assert warm.seeds == [{LR: 0.005, DROPOUT: 0.1}]
    # losses do not compare with the accuracies this search maximises: no prior results
    assert warm.prior == []


def test_the_tune_stage_run_records_its_seeds_and_a_retry_reuses_them(logged: Logged) -> None:
    config = logged.config
    stage = tracking.create_child_run(
        config.resolved_tracking_uri(), tracking.experiment_id(config), "pipeline", "tune", {}
    )
    logger = tracking.logger_for(config, stage)
    start = search_start(config, logger, "data-hash")
    assert len(start.seeds) == 2 and len(start.prior) == 4 and start.rng_seed is not None
    run = tracking.run_record(config, stage)
    assert run is not None
    assert run.tags[WARM_START_TAG] == "seeded" and run.tags[SEEDS_TAG] == "2"
    record = tracking.run_dict(config, stage, WARM_START_FILE)
    assert record is not None and record["seeds"] == start.seeds and record["seeded"] is True
    assert [p["score"] for p in record["prior"]] == [0.80, 0.55, 0.70, 0.30]
    # the retried stage keeps what it recorded, whatever a new lookup would give
    assert len(warm_start(with_overrides(config, {"tune.warm_start_top_k": 1})).seeds) == 1
    retried = with_overrides(config, {"tune.warm_start_top_k": 1})
    assert search_start(retried, logger, "data-hash") == start


def test_a_start_recorded_before_prior_results_were_kept_reuses_its_seeds() -> None:
    old = {"seeded": True, "seeds": [{LR: 0.004}], "reason": "", "source": {}, "trials": []}
    assert recorded_start(old) == SearchStart([{LR: 0.004}])
    assert recorded_start({"seeded": False, "seeds": [], "rng_seed": 3}) == SearchStart()


def test_no_champion_or_a_champion_without_a_search_starts_cold_and_says_why(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = _config(tmp_path)
    with caplog.at_level(logging.INFO, logger="graft.tune.warm_start"):
        cold = warm_start(config)
        assert cold.seeds == []
        assert "starts cold: no champion: models:/graft-warm@champion" in caplog.text
        register_champion(config, tracking.start_pipeline_run(config, "no-tune"))
        assert "has no tune stage" in warm_start(config).reason
        register_champion(config, None)
        assert "does not name the pipeline run" in warm_start(config).reason
    stage = tracking.create_child_run(
        config.resolved_tracking_uri(), tracking.experiment_id(config), "pipeline", "tune", {}
    )
    assert search_start(config, tracking.logger_for(config, stage), "h") == SearchStart()
    run = tracking.run_record(config, stage)
    assert run is not None and run.tags[WARM_START_TAG] == "cold"
    record = tracking.run_dict(config, stage, WARM_START_FILE)
    assert record is not None and "does not name the pipeline run" in record["reason"]
