"""The Ray Train settings Graft gives every driver, controller and worker."""

from __future__ import annotations

import pytest

from graft.ray_cluster import train_env_defaults


def test_report_poll_is_fast_enough_for_short_epochs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", raising=False)
    # Ray's default (2 s) throttles a report-per-epoch loop to one epoch per 2 s
    assert float(train_env_defaults()["RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"]) <= 0.5


def test_users_own_ray_train_settings_win(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "3")
    monkeypatch.setenv("RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S", "30")
    settings = train_env_defaults()
    assert settings["RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"] == "3"
    assert settings["RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S"] == "30"
    assert settings["RAY_TRAIN_V2_ENABLED"] == "1"
