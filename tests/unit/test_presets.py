"""Training presets: the book's guideline tables, applied under the user's explicit keys."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from graft.config import GraftConfig, load_config, training_preset_data, validate_config
from graft.config.training_presets import TRAINING_PRESETS
from graft.errors import ConfigError

NAMES = ["default_shallow", "default_deep", "self_normalizing", "low_latency", "risk_sensitive"]


def _preset(
    name: str, *overrides: str, path: Path | None = None, base: str = "tiny"
) -> GraftConfig:
    return load_config(path, preset=base, overrides=[f"training_preset={name}", *overrides])


def test_the_five_presets_exist() -> None:
    assert sorted(TRAINING_PRESETS) == sorted(NAMES)


@pytest.mark.parametrize("base", ["default", "tiny"])
@pytest.mark.parametrize("name", NAMES)
def test_every_preset_validates_and_every_key_it_sets_takes_effect(name: str, base: str) -> None:
    config = _preset(name, base=base)
    assert config.training_preset == name
    dumped = config.model_dump(mode="json")

    def check(expected: dict[str, Any], actual: dict[str, Any], where: str) -> None:
        for key, value in expected.items():
            if isinstance(value, dict):
                check(value, actual[key], f"{where}{key}.")
            else:
                assert actual[key] == value, f"{where}{key}"

    check(training_preset_data(name), dumped, "")


def test_rows_of_the_book_tables() -> None:
    shallow, deep = _preset("default_shallow"), _preset("default_deep")
    for cfg in (shallow, deep):
        assert cfg.model.init == "he_normal"
        assert cfg.pretrain.optimizer.name == cfg.finetune.optimizer.name == "adamw"
        assert cfg.pretrain.schedule.name == "plateau"
        assert cfg.pretrain.early_stopping.enabled and cfg.pretrain.early_stopping.restore_best
        # the LR is lowered before early stopping would end the phase
        assert cfg.pretrain.schedule.plateau_patience < cfg.pretrain.early_stopping.patience
    assert (shallow.model.activation.name, shallow.model.batch_norm.enabled) == ("relu", False)
    assert (deep.model.activation.name, deep.model.batch_norm.enabled) == ("silu", True)
    assert _preset("low_latency").model.batch_norm.enabled is False
    assert _preset("low_latency").model.dropout.rate == 0.0
    assert _preset("risk_sensitive").model.dropout.rate == 0.2  # MC dropout needs dropout


def test_self_normalizing_gives_the_selu_recipe_and_passes_validation() -> None:
    config = _preset("self_normalizing")  # tune on: the searched dropout rate is alpha dropout
    model = config.model
    assert model.activation.name == "selu"
    assert model.init == "lecun_normal"
    assert model.dropout.kind == "alpha"
    assert model.batch_norm.enabled is False
    assert model.family == "mlp"
    for train in (config.pretrain, config.finetune):
        assert train.optimizer.name == "nag"
        assert train.optimizer.momentum == 0.9
        assert train.optimizer.lr == 0.01
        assert (train.regularization.l1, train.regularization.l2) == (0.0, 0.0)
        assert train.regularization.max_norm is None


def test_preset_beats_base_yaml_but_not_the_user() -> None:
    # tiny.yaml sets finetune.optimizer.lr=0.003; the preset's NAG LR replaces it ...
    assert load_config(preset="tiny").finetune.optimizer.lr == 0.003
    assert _preset("self_normalizing").finetune.optimizer.lr == 0.01
    # ... tiny's keys the preset does not name survive
    assert _preset("self_normalizing").model.hidden_sizes == [64, 32]
    # ... and an explicit --set beats the preset
    config = _preset("self_normalizing", "model.activation.name=relu")
    assert config.model.activation.name == "relu"
    assert config.model.init == "lecun_normal"  # the keys the user did not set still apply


def test_user_file_beats_preset_and_set_beats_user_file(tmp_path: Path) -> None:
    user = tmp_path / "mine.yaml"
    user.write_text(
        "training_preset: default_deep\n"
        "model:\n  activation: {name: gelu}\n"
        "pretrain:\n  optimizer: {name: nadam}\n"
    )
    config = load_config(user, preset="tiny")
    assert config.training_preset == "default_deep"
    assert config.model.activation.name == "gelu"  # user file over preset
    assert config.model.batch_norm.enabled is True  # preset key the user did not set
    assert config.pretrain.optimizer.name == "nadam"
    assert config.finetune.optimizer.name == "adamw"
    overridden = load_config(user, preset="tiny", overrides=["model.activation.name=mish"])
    assert overridden.model.activation.name == "mish"
    # --set can also pick the preset over the file's choice
    switched = load_config(user, preset="tiny", overrides=["training_preset=default_shallow"])
    assert switched.model.batch_norm.enabled is False
    assert switched.model.activation.name == "gelu"


def test_no_preset_leaves_schema_defaults() -> None:
    config = load_config(preset="tiny")
    assert config.training_preset is None
    assert config.model.init == GraftConfig().model.init == "auto"


def test_unknown_preset_is_a_config_error_listing_the_names() -> None:
    with pytest.raises(ConfigError) as caught:
        _preset("self_normalising")
    message = str(caught.value)
    assert "self_normalising" in message
    for name in NAMES:
        assert name in message
    with pytest.raises(ConfigError, match="default_shallow"):
        training_preset_data("nope")
    data = GraftConfig().model_dump(mode="json")
    data["training_preset"] = "nope"
    with pytest.raises(ConfigError, match="unknown training_preset 'nope'"):
        validate_config(data)  # a config from JSON (KFP parameter) is checked too


def test_preset_with_l1_is_refused_by_exception_1() -> None:
    with pytest.raises(ConfigError, match=r"sparse model.*training_preset=default_shallow"):
        _preset("self_normalizing", "pretrain.regularization.l1=0.001")


def test_resolved_config_round_trips_through_json() -> None:
    from graft.config import config_from_json

    config = _preset("default_deep")
    assert config_from_json(config.to_json()) == config
