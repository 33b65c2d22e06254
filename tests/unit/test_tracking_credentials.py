"""A tracking URI never carries credentials: MLflow's user comes from the environment."""

from __future__ import annotations

import pytest

from graft.config import load_config
from graft.errors import ConfigError

PASSWORD = "hunter2-sentinel"


@pytest.mark.parametrize(
    "uri",
    [
        f"http://alice:{PASSWORD}@mlflow.example.com:5000",
        f"https://alice:{PASSWORD}@mlflow.example.com",
        f"https://{PASSWORD}@mlflow.example.com",
        f"postgresql://mlflow:{PASSWORD}@db:5432/mlflow",
    ],
)
def test_credentials_in_the_configured_uri_are_refused_without_repeating_them(uri: str) -> None:
    with pytest.raises(ConfigError, match="MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD"):
        load_config(preset="tiny", overrides=[f"tracking.tracking_uri={uri}"])
    with pytest.raises(ConfigError) as refused:
        load_config(preset="tiny", overrides=[f"tracking.tracking_uri={uri}"])
    assert PASSWORD not in str(refused.value)
    assert "\n" not in str(refused.value)


def test_credentials_in_mlflow_tracking_uri_are_refused_where_it_is_read() -> None:
    config = load_config(preset="tiny")
    environ = {"MLFLOW_TRACKING_URI": f"http://alice:{PASSWORD}@mlflow:5000"}
    with pytest.raises(ConfigError, match="MLFLOW_TRACKING_URI carries credentials") as refused:
        config.resolved_tracking_uri(environ)
    assert PASSWORD not in str(refused.value)
    with pytest.raises(ConfigError):
        config.tracks_to_a_server(environ)


@pytest.mark.parametrize(
    "uri",
    ["http://mlflow.example.com:5000", "https://mlflow.example.com/path?x=@", "sqlite:///w/m.db"],
)
def test_uris_without_credentials_pass(uri: str) -> None:
    config = load_config(preset="tiny", overrides=[f"tracking.tracking_uri={uri}"])
    assert config.resolved_tracking_uri() == uri
    assert load_config(preset="tiny").resolved_tracking_uri({"MLFLOW_TRACKING_URI": uri}) == uri
