import json
from pathlib import Path

import pytest

from graft.config import GraftConfig, config_from_json, load_config, with_overrides
from graft.errors import ConfigError


def test_presets_resolve_over_schema_defaults() -> None:
    tiny = load_config(preset="tiny")
    assert tiny.data.source == "builtin:digits"
    assert tiny.model.hidden_sizes == [64, 32]
    # a key the preset does not set keeps the schema default
    assert tiny.pretrain.optimizer.name == GraftConfig().pretrain.optimizer.name
    default = load_config()
    assert default.data.source == "builtin:fashion_mnist"
    assert default.data.transfer.target_classes == [0, 2]


def test_overrides_are_typed_and_win_over_files(tmp_path: Path) -> None:
    user = tmp_path / "my.yaml"
    user.write_text("finetune:\n  epochs: 7\npretrain:\n  epochs: 2\n")
    config = load_config(
        user,
        preset="tiny",
        overrides=["finetune.epochs=3", "model.hidden_sizes=[8, 4]", "data.source=s3://b/x.npz"],
    )
    assert config.finetune.epochs == 3
    assert config.pretrain.epochs == 2
    assert config.model.hidden_sizes == [8, 4]
    assert config.data.source == "s3://b/x.npz"


@pytest.mark.parametrize(
    ("override", "fragment"),
    [
        ("pretrain.epochz=3", "pretrain.epochz"),
        ("pretrain.epochs=zero", "pretrain.epochs"),
        ("tune.space={'nope.lr': {type: uniform, low: 0, high: 1}}", "nope.lr"),
        ("tune.space={'pretrain.optimizer.lr': {type: loguniform, low: 0, high: 1}}", "low > 0"),
        ("pretrain", "key.path=value"),
    ],
)
def test_bad_config_names_the_key(override: str, fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment.replace(".", r"\.")):
        load_config(preset="tiny", overrides=[override])


def test_missing_config_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "absent.yaml")


def test_with_overrides_copies(tmp_path: Path) -> None:
    base = load_config(preset="tiny")
    trial = with_overrides(base, {"finetune.optimizer.lr": 0.01, "model.dropout.rate": 0.25})
    assert trial.finetune.optimizer.lr == 0.01
    assert trial.model.dropout.rate == 0.25
    assert base.model.dropout.rate == GraftConfig().model.dropout.rate


def test_the_tracking_uri_is_the_configs_then_mlflows_variable_then_sqlite_in_work_dir(
    tmp_path: Path,
) -> None:
    server = "http://graft-mlflow.kubeflow.svc:5000"
    config = load_config(preset="tiny", overrides=[f"work_dir={tmp_path}"])
    assert config.resolved_tracking_uri({}) == f"sqlite:///{tmp_path.resolve()}/mlflow.db"
    assert config.resolved_tracking_uri({"MLFLOW_TRACKING_URI": server}) == server
    named = load_config(preset="tiny", overrides=["tracking.tracking_uri=http://other:5000"])
    assert named.resolved_tracking_uri({"MLFLOW_TRACKING_URI": server}) == "http://other:5000"


def test_the_environment_is_read_where_the_stage_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = load_config(preset="tiny", overrides=[f"work_dir={tmp_path}"])
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://graft-mlflow:5000")
    # the config that travelled as JSON to the pod resolves against the pod's environment
    assert config_from_json(config.to_json()).resolved_tracking_uri() == "http://graft-mlflow:5000"


def test_s3_locations_name_every_s3_key_of_the_config() -> None:
    config = load_config(
        preset="tiny",
        overrides=["ray.storage_uri=s3://b/ckpt", "tracking.artifact_location=s3://b/mlflow"],
    )
    assert set(config.s3_locations()) == {"ray.storage_uri", "tracking.artifact_location"}
    assert load_config(preset="tiny").s3_locations() == []


# ------------------------------------------------------------------ found by tests/fuzz


@pytest.mark.parametrize(
    "text",
    [
        '{"seed": ' + "9" * 5000 + "}",  # was ValueError: past Python's 4300-digit int limit
        "[" * 100_000 + "]" * 100_000,  # was RecursionError in json.loads
    ],
    ids=["5000-digit number", "arrays nested 100000 deep"],
)
def test_config_json_that_python_cannot_parse_is_a_config_error(text: str) -> None:
    with pytest.raises(ConfigError, match="config parameter is not valid JSON"):
        config_from_json(text)


@pytest.mark.parametrize("value", ["Infinity", "-Infinity", "NaN"])
@pytest.mark.parametrize(
    "key", ["pretrain.optimizer.lr", "model.activation.swish_beta", "evaluate.champion_margin"]
)
def test_nan_and_infinity_are_refused_where_they_could_not_travel(key: str, value: str) -> None:
    """They were accepted, then written as null by to_json: the next task refused the config."""
    data = json.loads(GraftConfig().to_json())
    section, *middle, leaf = key.split(".")
    node = data[section]
    for part in middle:
        node = node[part]
    node[leaf] = "__value__"
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        config_from_json(json.dumps(data).replace('"__value__"', value))


@pytest.mark.parametrize("source", ["/data/run #2.npz", "#1.npz", "/data/a#b?c.parquet"])
def test_a_hash_in_a_set_value_is_part_of_it_not_a_yaml_comment(source: str) -> None:
    """'--set data.source=/data/run #2.npz' read as '/data/run': the error named another file."""
    config = load_config(preset="tiny", overrides=[f"data.source={source}"])
    assert config.data.source == source
    quoted = load_config(preset="tiny", overrides=[f"data.source='{source}'"])
    assert quoted.data.source == source
