"""Token authentication on every Ray instance Graft starts or joins.

A Ray cluster without it runs code for anyone who reaches its ports (the "ShadowRay" class of
attack), and its processes hold the pipeline's S3 and MLflow credentials. Even the local
instance listens on the machine's own address, not only on loopback, so it gets a token too.
Ray reads its settings from the environment (``RAY_AUTH_MODE``, ``RAY_AUTH_TOKEN``,
``RAY_AUTH_TOKEN_PATH``, then ``~/.ray/auth_token``), and every process Ray starts inherits
them.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from graft.config.runtime import (
    RAY_AUTH_MODE_ENV,
    RAY_AUTH_TOKEN_ENV,
    RAY_AUTH_TOKEN_PATH_ENV,
    RAY_TOKEN_AUTH,
)
from graft.errors import ConfigError
from graft.io import ray_compat

# Ray's own default token file, read when neither variable is set
DEFAULT_TOKEN_FILE = Path(".ray") / "auth_token"
_TOKEN_BYTES = 32


def token_supplied() -> bool:
    """Whether the environment (or Ray's default token file) gives Ray a token to use."""
    if os.environ.get(RAY_AUTH_TOKEN_ENV, "").strip():
        return True
    token_path = os.environ.get(RAY_AUTH_TOKEN_PATH_ENV, "").strip()
    candidate = Path(token_path) if token_path else Path.home() / DEFAULT_TOKEN_FILE
    try:
        return bool(candidate.read_text().strip())
    except OSError:
        return False


def _refuse_disabled_auth() -> None:
    mode = os.environ.get(RAY_AUTH_MODE_ENV)
    if mode is not None and mode.strip().lower() != RAY_TOKEN_AUTH:
        raise ConfigError(
            f"{RAY_AUTH_MODE_ENV}={mode} turns off Ray's token authentication: anyone who "
            "reaches the Ray ports could then run code with this pipeline's credentials. "
            f"Unset it (the local instance then gets a random token of its own) or set "
            f"{RAY_AUTH_MODE_ENV}={RAY_TOKEN_AUTH}"
        )


def _use_token_auth() -> None:
    os.environ[RAY_AUTH_MODE_ENV] = RAY_TOKEN_AUTH
    # Ray caches the mode and the token per process: a process that met Ray before (a test
    # session, a driver that joined another cluster) would otherwise keep the old ones
    ray_compat.reload_auth_settings()


def secure_local_instance() -> None:
    """Token auth for the Ray instance this process starts: the user's token if one is
    supplied, else a fresh random one, which the instance's processes inherit and which
    lives no longer than this process and its children."""
    _refuse_disabled_auth()
    if not token_supplied():
        os.environ[RAY_AUTH_TOKEN_ENV] = secrets.token_urlsafe(_TOKEN_BYTES)
    _use_token_auth()


def require_cluster_token(target: str, where: str) -> None:
    """Refuse to reach an existing Ray cluster (``where`` it is configured) without its token:
    the cluster must run with token auth, and this process must hold the same token."""
    _refuse_disabled_auth()
    if not token_supplied():
        raise ConfigError(
            f"the Ray cluster at {target} ({where}) needs its authentication token: set "
            f"{RAY_AUTH_TOKEN_ENV} (on Kubernetes, from the Secret named by "
            f"cluster.ray_token_secret) or {RAY_AUTH_TOKEN_PATH_ENV} to a file holding it. "
            "Graft joins only clusters that run with token authentication"
        )
    _use_token_auth()
