"""A search warm-started from the champion's search (tune.warm_start_top_k): a past trial's
parameters fitted to a changed space, and the top-k trials read back from a real (SQLite)
MLflow store with its registry."""

from __future__ import annotations

import logging
import random
from pathlib import Path
from typing import NamedTuple

import pytest
from local_tracking import tiny_config_tracked_in

from champion_search import LoggedTrial, log_champion_search, register_champion
from graft.config import GraftConfig, SearchDimension, load_config, with_overrides
from graft.errors import ConfigError
from graft.io import tracking
from graft.tune.runs import trial_runs
from graft.tune.search_algorithms import make_searcher
from graft.tune.seeds import completed_seed, fitted_seed
from graft.tune.warm_start import (
    SEEDS_TAG,
    WARM_START_FILE,
    WARM_START_TAG,
    seeds_for_search,
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


def test_the_searchers_take_the_seeds_as_their_first_suggestions() -> None:
    space = (
        'tune.space={"finetune.optimizer.lr": {"type": "loguniform", "low": 0.001, "high": 0.01},'
        ' "model.dropout.rate": {"type": "uniform", "low": 0.0, "high": 0.3}}'
    )
    seeds = [{LR: 0.002}, {LR: 0.004, DROPOUT: 0.1}]
    for searcher in ("optuna", "hyperopt"):
        config = load_config(preset="tiny", overrides=[f"tune.searcher={searcher}", space])
        search = make_searcher(config, seeds)
        if searcher == "hyperopt":  # its space comes from the Tuner's param_space
            from graft.tune.space import param_space

            search.set_search_properties(config.tune.metric, config.tune.mode, param_space(config))
        first = [search.suggest(f"t{i}") for i in range(2)]
        assert [p[LR] for p in first] == [0.002, 0.004], searcher
        assert first[1][DROPOUT] == 0.1


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


def test_the_tune_stage_run_records_its_seeds_and_a_retry_reuses_them(logged: Logged) -> None:
    config = logged.config
    stage = tracking.create_child_run(
        config.resolved_tracking_uri(), tracking.experiment_id(config), "pipeline", "tune", {}
    )
    logger = tracking.logger_for(config, stage)
    seeds = seeds_for_search(config, logger)
    assert len(seeds) == 2
    run = tracking.run_record(config, stage)
    assert run is not None
    assert run.tags[WARM_START_TAG] == "seeded" and run.tags[SEEDS_TAG] == "2"
    record = tracking.run_dict(config, stage, WARM_START_FILE)
    assert record is not None and record["seeds"] == seeds and record["seeded"] is True
    # the retried stage keeps the seeds it recorded, whatever a new lookup would give
    assert len(warm_start(with_overrides(config, {"tune.warm_start_top_k": 1})).seeds) == 1
    assert seeds_for_search(with_overrides(config, {"tune.warm_start_top_k": 1}), logger) == seeds


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
    assert seeds_for_search(config, tracking.logger_for(config, stage)) == []
    run = tracking.run_record(config, stage)
    assert run is not None and run.tags[WARM_START_TAG] == "cold"
    record = tracking.run_dict(config, stage, WARM_START_FILE)
    assert record is not None and "does not name the pipeline run" in record["reason"]
