"""The Ray Train settings Graft gives every driver, controller and worker."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from graft.errors import ConfigError
from graft.io.ray_runtime import train_env_defaults


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


@pytest.mark.parametrize("value", ["0", "false"])
def test_ray_train_v1_is_refused_before_any_fit(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    """Graft's fits use Train V2's settings (e.g. the controller's failure limit): under V1
    they would fail deep inside Ray, so the switch is refused where it is read."""
    monkeypatch.setenv("RAY_TRAIN_V2_ENABLED", value)
    with pytest.raises(ConfigError, match="Graft runs on Train V2 only"):
        train_env_defaults()


@pytest.mark.ray
@pytest.mark.timeout(120)
def test_local_ray_points_state_api_clients_at_its_own_dashboard_behind_a_token(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Train V2's controller and placement-group cleaner query the State API; with two local
    Ray instances on a machine an unpinned client cannot tell which one is its own."""
    import urllib.error
    import urllib.request

    from graft.config import RayConfig
    from graft.config.runtime import RAY_API_SERVER_ADDRESS_ENV
    from graft.io.ray_runtime import ensure_ray, shutdown_ray

    monkeypatch.setenv(RAY_API_SERVER_ADDRESS_ENV, "http://elsewhere:8265")
    for key in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.ray/auth_token: Graft makes a token
    ensure_ray(RayConfig(num_cpus=1))
    try:
        import ray

        address = os.environ[RAY_API_SERVER_ADDRESS_ENV]
        assert address.startswith("http://127.0.0.1:")

        @ray.remote(num_cpus=0)
        def seen_by_a_worker() -> str | None:
            return os.environ.get(RAY_API_SERVER_ADDRESS_ENV)

        assert ray.get(seen_by_a_worker.remote()) == address
        # the local instance runs with token auth: it listens on this machine's own address,
        # not only on loopback, and without a token anyone reaching it could run code
        token = os.environ["RAY_AUTH_TOKEN"]
        assert os.environ["RAY_AUTH_MODE"] == "token" and len(token) >= 32
        bearer = {"Authorization": f"Bearer {token}"}
        # ray.init returns before its dashboard serves: under load that took over 30 s here
        version = urllib.request.Request(f"{address}/api/version", headers=bearer)
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(version, timeout=10) as response:
                    assert response.status == 200  # it is this instance's dashboard
                    break
            except urllib.error.HTTPError:
                raise  # it answered, and refused: not a dashboard that is still starting
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(1)
        jobs = f"{address}/api/jobs/"
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(jobs, timeout=30)
        assert refused.value.code == 401
        with_token = urllib.request.Request(jobs, headers=bearer)
        with urllib.request.urlopen(with_token, timeout=30) as response:
            assert response.status == 200
    finally:
        shutdown_ray()
    assert os.environ[RAY_API_SERVER_ADDRESS_ENV] == "http://elsewhere:8265"  # restored
