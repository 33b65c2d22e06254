"""Token authentication on every Ray instance Graft starts or joins (graft.io.ray_auth)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from graft.errors import ConfigError
from graft.io import ray_auth

AUTH_VARIABLES = ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH")


@pytest.fixture(autouse=True)
def _no_ambient_token(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for key in AUTH_VARIABLES:
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # and no ~/.ray/auth_token


def test_a_local_instance_gets_a_fresh_random_token(monkeypatch: pytest.MonkeyPatch) -> None:
    ray_auth.secure_local_instance()
    first = os.environ["RAY_AUTH_TOKEN"]
    assert os.environ["RAY_AUTH_MODE"] == "token"
    assert len(first) >= 32

    monkeypatch.delenv("RAY_AUTH_TOKEN")
    ray_auth.secure_local_instance()
    assert os.environ["RAY_AUTH_TOKEN"] != first  # not a constant anyone could know


def test_a_users_own_token_is_kept(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("RAY_AUTH_TOKEN", "the-users-token")
    ray_auth.secure_local_instance()
    assert os.environ["RAY_AUTH_TOKEN"] == "the-users-token"

    monkeypatch.delenv("RAY_AUTH_TOKEN")
    default_file = tmp_path / "home" / ".ray" / "auth_token"
    default_file.parent.mkdir(parents=True)
    default_file.write_text("from-ray-get-auth-token\n")
    ray_auth.secure_local_instance()
    assert "RAY_AUTH_TOKEN" not in os.environ  # Ray reads its own file


@pytest.mark.parametrize("mode", ["disabled", "DISABLED", "off"])
def test_turning_auth_off_is_refused_everywhere(monkeypatch: pytest.MonkeyPatch, mode: str) -> None:
    monkeypatch.setenv("RAY_AUTH_MODE", mode)
    monkeypatch.setenv("RAY_AUTH_TOKEN", "a-token")
    with pytest.raises(ConfigError, match=f"RAY_AUTH_MODE={mode} turns off"):
        ray_auth.secure_local_instance()
    with pytest.raises(ConfigError, match=f"RAY_AUTH_MODE={mode} turns off"):
        ray_auth.require_cluster_token("ray-head:6379", "ray.address")


def test_joining_a_cluster_needs_its_token(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"ray-head:6379 \(ray.address\) needs its"):
        ray_auth.require_cluster_token("ray-head:6379", "ray.address")
    assert "RAY_AUTH_TOKEN" not in os.environ  # no token is made up for someone else's cluster

    token_file = tmp_path / "token"
    token_file.write_text("")
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(token_file))
    with pytest.raises(ConfigError, match="needs its authentication token"):
        ray_auth.require_cluster_token("ray-head:6379", "ray.address")  # an empty file

    token_file.write_text("the-clusters-token\n")  # as a mounted Secret holds it
    ray_auth.require_cluster_token("ray-head:6379", "ray.address")
    assert os.environ["RAY_AUTH_MODE"] == "token"
