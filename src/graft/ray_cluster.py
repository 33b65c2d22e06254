"""How a stage gets Ray: an in-process local instance, or an existing cluster's address."""

from __future__ import annotations

import logging
import os

from graft.config import RayConfig

log = logging.getLogger(__name__)


def _log_to_driver() -> bool:
    # the training loop's per-epoch progress lines come from the workers
    return os.environ.get("GRAFT_RAY_LOG_TO_DRIVER", "1") == "1"


def ensure_ray(config: RayConfig) -> None:
    """Start (local) or join (address) Ray once per process."""
    import ray

    if ray.is_initialized():
        return
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("RAY_TRAIN_V2_ENABLED", "1")
    # Worker processes import torch: on a loaded 2-core machine 60 s is not always enough.
    os.environ.setdefault("RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S", "180")
    if config.mode == "address":
        address = config.address or os.environ.get("RAY_ADDRESS") or "auto"
        log.info("joining Ray cluster at %s", address)
        ray.init(address=address, log_to_driver=_log_to_driver())
        return
    ray.init(
        num_cpus=config.num_cpus or os.cpu_count() or 2,
        # the dashboard serves the State API that Train V2's controller polls
        dashboard_host="127.0.0.1",
        log_to_driver=_log_to_driver(),
        configure_logging=False,
    )


def shutdown_ray() -> None:
    import ray

    if ray.is_initialized():
        ray.shutdown()
