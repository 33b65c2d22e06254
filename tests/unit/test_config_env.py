"""The config's environment layer: GRAFT_<SECTION>__<KEY> variables, between --config and --set,
read by the CLI as a user runs it."""

from pathlib import Path

import pytest
import yaml
from cli_helpers import assert_one_clear_error, run_graft

from graft.config.env import environment_overrides, environment_variable


def resolved(*args: str, env: dict[str, str]) -> dict:
    result = run_graft("config", "-p", "tiny", *args, env=env)
    assert result.returncode == 0, result.stderr
    return yaml.safe_load(result.stdout)


def test_variables_set_nested_and_top_level_keys_with_set_s_parsing() -> None:
    config = resolved(
        env={
            "GRAFT_TRACKING__TRACKING_URI": "http://mlflow.graft:5000",
            "GRAFT_FINETUNE__EPOCHS": "3",
            "GRAFT_Evaluate__N_Bins": "9",  # the key part in any case
            "graft_ray__storage_uri": "s3://bucket/ray",  # but the prefix is GRAFT_
            "GRAFT_DATA__TRANSFER__TARGET_CLASSES": "[5, 7]",
            "GRAFT_SEED": "7",
        }
    )
    assert config["tracking"]["tracking_uri"] == "http://mlflow.graft:5000"
    assert config["finetune"]["epochs"] == 3
    assert config["data"]["transfer"]["target_classes"] == [5, 7]
    assert config["seed"] == 7
    assert config["evaluate"]["n_bins"] == 9
    assert config["ray"]["storage_uri"] is None


def test_the_layer_sits_above_the_config_file_and_below_set(tmp_path: Path) -> None:
    user = tmp_path / "user.yaml"
    user.write_text("finetune:\n  epochs: 9\npretrain:\n  epochs: 4\n")
    env = {"GRAFT_FINETUNE__EPOCHS": "3", "GRAFT_PRETRAIN__EPOCHS": "2"}
    config = resolved("--config", str(user), "--set", "pretrain.epochs=5", env=env)
    assert config["finetune"]["epochs"] == 3  # environment over the file
    assert config["pretrain"]["epochs"] == 5  # --set over the environment


def test_graft_s_other_variables_are_not_config_keys() -> None:
    env = {"GRAFT_LOG_LEVEL": "debug", "GRAFT_TORCH_THREADS": "1", "GRAFT_NAMESPACE": "ml"}
    assert environment_overrides(env) == []
    assert resolved(env=env) == resolved(env={})


@pytest.mark.parametrize(
    ("variable", "fragment"),
    [
        ("GRAFT_TRAKING__TRACKING_URI", "GRAFT_TRAKING__TRACKING_URI: the config has no key"),
        ("GRAFT_TRACKING__URI", "tracking has no key 'uri'"),
        ("GRAFT_SEED__X", "seed is a value, not a section"),
        ("GRAFT_PRETRAIN__OPTIMIZER", "name one of its keys, e.g. GRAFT_PRETRAIN__OPTIMIZER__"),
        ("GRAFT_TRACKING____TRACKING_URI", "an empty key"),
    ],
)
def test_a_variable_that_names_no_key_is_refused_naming_it(variable: str, fragment: str) -> None:
    # a misspelt address would otherwise send the runs elsewhere without a word
    assert_one_clear_error(run_graft("config", "-p", "tiny", env={variable: "x"}), fragment)


def test_a_bad_value_is_refused_as_set_refuses_it() -> None:
    result = run_graft("config", "-p", "tiny", env={"GRAFT_FINETUNE__EPOCHS": "many"})
    assert_one_clear_error(result, "finetune.epochs")


def test_variable_names_round_trip() -> None:
    assert environment_variable("tracking.tracking_uri") == "GRAFT_TRACKING__TRACKING_URI"
    text = environment_overrides({environment_variable("ray.storage_uri"): "s3://b/r"})
    assert text == ["ray.storage_uri=s3://b/r"]


def test_a_log_level_in_any_case_is_taken_and_a_wrong_one_refused() -> None:
    assert run_graft("config", "-p", "tiny", env={"GRAFT_LOG_LEVEL": "debug"}).returncode == 0
    result = run_graft("config", "-p", "tiny", env={"GRAFT_LOG_LEVEL": "loud"})
    assert_one_clear_error(result, "GRAFT_LOG_LEVEL='loud' is not a log level")
