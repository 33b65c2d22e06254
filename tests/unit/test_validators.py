"""Contradictory training configs are refused at load time, with the fix in the message."""

from __future__ import annotations

import logging

import pytest

from graft.config import GraftConfig, load_config, validate_config
from graft.errors import ConfigError


def _load(*overrides: str) -> GraftConfig:
    return load_config(preset="tiny", overrides=["tune.enabled=false", *overrides])


SELU = "model.activation.name=selu"


@pytest.mark.parametrize(
    ("overrides", "fragments"),
    [
        (["model.batch_norm.enabled=true"], ["batch norm", "self_normalizing"]),
        (["model.dropout.rate=0.2"], ["standard dropout", "model.dropout.kind=alpha"]),
        (["model.dropout.input_rate=0.1"], ["standard dropout", "model.dropout.kind=alpha"]),
        (["pretrain.regularization.l2=0.01"], ["pretrain.regularization", "l2=0.01"]),
        (["finetune.regularization.l1=0.001"], ["finetune.regularization", "default_shallow"]),
        (["pretrain.regularization.max_norm=1.0"], ["max_norm=1.0", "self_normalizing"]),
    ],
)
def test_selu_refuses_what_breaks_self_normalization(
    overrides: list[str], fragments: list[str]
) -> None:
    with pytest.raises(ConfigError) as caught:
        _load(SELU, *overrides)
    message = str(caught.value)
    for fragment in fragments:
        assert fragment in message
    assert "LeCun" in message  # every SELU refusal spells out the recipe


def test_selu_recipe_itself_is_accepted() -> None:
    config = _load(
        SELU, "model.init=lecun_normal", "model.dropout.kind=alpha", "model.dropout.rate=0.1"
    )
    assert config.model.activation.name == "selu"
    assert config.model.dropout.rate == 0.1
    # standard dropout kind with rate 0 is no dropout at all: not a contradiction
    assert _load(SELU).model.dropout.kind == "standard"


def test_selu_with_a_tuned_standard_dropout_rate_is_refused() -> None:
    # the default tune space searches model.dropout.rate in [0, 0.5]
    with pytest.raises(ConfigError, match=r"tune\.space.*model\.dropout\.kind=alpha"):
        load_config(preset="tiny", overrides=[SELU])
    config = load_config(preset="tiny", overrides=[SELU, "model.dropout.kind=alpha"])
    assert config.tune.space["model.dropout.rate"].high == 0.5


def test_alpha_dropout_without_selu_warns_but_is_accepted(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="graft.config"):
        config = _load("model.dropout.kind=alpha", "model.dropout.rate=0.2")
    assert config.model.dropout.kind == "alpha"
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("alpha dropout" in w and "relu" in w for w in warnings)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="graft.config"):
        _load("model.dropout.kind=alpha", "model.dropout.rate=0.0")  # no dropout: no warning
    assert not [r for r in caplog.records if r.levelno == logging.WARNING]


@pytest.mark.parametrize("name", ["sgd", "momentum", "nag", "adagrad", "rmsprop", "adam", "nadam"])
def test_weight_decay_outside_adamw_is_refused_at_load(name: str) -> None:
    with pytest.raises(ConfigError, match=r"pretrain\.optimizer.*adamw.*regularization\.l2"):
        _load(f"pretrain.optimizer.name={name}", "pretrain.optimizer.weight_decay=0.01")
    ok = _load("pretrain.optimizer.name=adamw", "pretrain.optimizer.weight_decay=0.01")
    assert ok.pretrain.optimizer.weight_decay == 0.01


@pytest.mark.parametrize("name", ["momentum", "nag"])
def test_momentum_optimizers_need_momentum(name: str) -> None:
    with pytest.raises(ConfigError, match=r"momentum > 0.*optimizer\.name=sgd"):
        _load(f"finetune.optimizer.name={name}", "finetune.optimizer.momentum=0")
    assert _load("finetune.optimizer.name=sgd", "finetune.optimizer.momentum=0")


@pytest.mark.parametrize(
    ("boundaries", "values", "fragment"),
    [
        ([5, 15], [0.01, 0.005], "one more entry"),
        ([5, 15], [0.01, 0.005, 0.001, 0.0001], "one more entry"),
        ([15, 5], [0.01, 0.005, 0.001], "strictly increasing"),
        ([5, 5], [0.01, 0.005, 0.001], "strictly increasing"),
        ([0, 5], [0.01, 0.005, 0.001], "positive"),
        ([5], [0.01, 0.0], "> 0"),
    ],
)
def test_piecewise_table_is_checked_at_load(
    boundaries: list[int], values: list[float], fragment: str
) -> None:
    with pytest.raises(ConfigError, match=fragment):
        _load(
            "pretrain.schedule.name=piecewise",
            f"pretrain.schedule.boundaries={boundaries}",
            f"pretrain.schedule.values={values}",
        )


def test_valid_piecewise_table_loads() -> None:
    config = _load(
        "pretrain.schedule.name=piecewise",
        "pretrain.schedule.boundaries=[5, 15]",
        "pretrain.schedule.values=[0.01, 0.005, 0.001]",
    )
    assert config.pretrain.schedule.values == [0.01, 0.005, 0.001]


@pytest.mark.parametrize("momentum", ["[0.85, 0.95]", "[0.95, 1.0]", "[0.9, -0.1]"])
def test_one_cycle_momentum_must_be_high_then_low_in_unit_interval(momentum: str) -> None:
    with pytest.raises(ConfigError, match=r"one_cycle_momentum.*0 <= low <= high < 1"):
        _load(
            "pretrain.schedule.name=one_cycle", f"pretrain.schedule.one_cycle_momentum={momentum}"
        )
    config = _load("pretrain.schedule.one_cycle_momentum=[0.9, 0.9]")
    assert config.pretrain.schedule.one_cycle_momentum == (0.9, 0.9)


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("eps", 0),
        ("eps", -1e-8),
        ("rho", 0),
        ("rho", 1),
        ("beta1", 0),
        ("beta1", 1.0),
        ("beta2", 1),
        ("beta2", -0.5),
    ],
)
def test_optimizer_constants_in_range(key: str, value: float) -> None:
    with pytest.raises(ConfigError, match=rf"pretrain\.optimizer\.{key}"):
        _load(f"pretrain.optimizer.{key}={value}")


def test_plateau_patience_not_below_early_stopping_warns(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="graft.config"):
        _load("pretrain.schedule.name=plateau", "pretrain.schedule.plateau_patience=5")
    assert any(
        "plateau_patience=5 >= early_stopping.patience=3" in r.getMessage() for r in caplog.records
    )


def test_errors_surface_through_validate_config_as_config_error() -> None:
    data = GraftConfig().model_dump(mode="json")
    data["model"]["activation"]["name"] = "selu"
    data["model"]["batch_norm"]["enabled"] = True
    with pytest.raises(ConfigError, match=r"^invalid config: model: .*batch norm"):
        validate_config(data)
