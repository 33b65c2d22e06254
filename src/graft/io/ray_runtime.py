"""How a stage gets Ray: an in-process local instance, or an existing cluster's address."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from graft.config import RayConfig
from graft.config.runtime import (
    DEFAULT_RAY_LOG_TO_DRIVER,
    RAY_ADDRESS_ENV,
    RAY_API_SERVER_ADDRESS_ENV,
    RAY_LOG_TO_DRIVER_ENV,
    RAY_SUBMITTED_JOB_ENV,
    RAY_TRAIN_ENV_DEFAULTS,
    RAY_TRAIN_V2_ENV,
)
from graft.errors import ConfigError
from graft.io import ray_auth, storage

log = logging.getLogger(__name__)

_replaced_env: dict[str, str | None] = {}  # what ensure_ray overrode, for shutdown_ray


def _log_to_driver() -> bool:
    # the training loop's per-epoch progress lines come from the workers
    return os.environ.get(RAY_LOG_TO_DRIVER_ENV, DEFAULT_RAY_LOG_TO_DRIVER) == "1"


def train_env_defaults() -> dict[str, str]:
    """Ray Train settings every Graft driver, controller and worker runs with (a user's own
    environment wins, except over Train V2, which Graft's fits are written for)."""
    settings = {key: os.environ.get(key, value) for key, value in RAY_TRAIN_ENV_DEFAULTS.items()}
    if settings[RAY_TRAIN_V2_ENV].strip().lower() not in ("1", "true"):
        raise ConfigError(
            f"{RAY_TRAIN_V2_ENV}={settings[RAY_TRAIN_V2_ENV]} selects Ray Train V1, and Graft runs "
            f"on Train V2 only: unset {RAY_TRAIN_V2_ENV} or set it to 1"
        )
    return settings


def ensure_ray(config: RayConfig) -> None:
    """Start (local) or join (address) Ray once per process."""
    import ray

    if ray.is_initialized():
        return
    train_env = train_env_defaults()
    # a local instance's controller and workers inherit this process's environment
    os.environ.update(train_env)
    if config.mode == "address":
        address = config.address or os.environ.get(RAY_ADDRESS_ENV) or "auto"
        ray_auth.require_cluster_token(address, "ray.address")
        log.info("joining Ray cluster at %s", address)
        # A cluster's processes don't: the job's runtime environment carries the settings,
        # unless this driver already runs as a submitted Ray job (whose runtime environment
        # is set at submission, and a second one for the same keys is refused).
        in_submitted_job = RAY_SUBMITTED_JOB_ENV in os.environ
        ray.init(
            address=address,
            log_to_driver=_log_to_driver(),
            runtime_env=None if in_submitted_job else {"env_vars": train_env},
        )
        _refuse_node_local_storage(config, sum(1 for n in ray.nodes() if n.get("Alive")))
        return
    # The dashboard serves the State API that Train V2's controller and its placement-group
    # cleaner query. Without an address they look for "the" local Ray and fail when another
    # Ray instance runs on the machine (a second pipeline, a test run), which strands the
    # workers' placement groups. Pinning the port and exporting it before the raylet starts
    # gives every process of this instance its own dashboard's address.
    ray_auth.secure_local_instance()
    # ray.init without an address joins RAY_ADDRESS when it is set: local means a new instance
    if os.environ.get(RAY_ADDRESS_ENV):
        log.info("ray.mode=local: starting a local Ray, not joining RAY_ADDRESS")
        _replaced_env.setdefault(RAY_ADDRESS_ENV, os.environ.pop(RAY_ADDRESS_ENV))
    dashboard_port = _free_port()
    _replaced_env[RAY_API_SERVER_ADDRESS_ENV] = os.environ.get(RAY_API_SERVER_ADDRESS_ENV)
    os.environ[RAY_API_SERVER_ADDRESS_ENV] = f"http://127.0.0.1:{dashboard_port}"
    ray.init(
        num_cpus=config.num_cpus or os.cpu_count() or 2,
        dashboard_host="127.0.0.1",
        dashboard_port=dashboard_port,
        log_to_driver=_log_to_driver(),
        configure_logging=False,
    )


@dataclass(frozen=True)
class TrainStorage:
    """Ray Train's (and Tune's) ``storage_path`` and, for S3, the pyarrow filesystem that
    reaches it. Paths on it are POSIX strings: ``bucket/key`` on S3, absolute folders else."""

    path: str
    filesystem: Any = None

    def join(self, *parts: str) -> str:
        return "/".join([self.path.rstrip("/"), *(p.strip("/") for p in parts if p)])

    def fetch(self, path: str, destination: Path, names: tuple[str, ...]) -> None:
        """Copy the files ``names`` of folder ``path`` (on this storage) into ``destination``."""
        destination.mkdir(parents=True, exist_ok=True)
        for name in names:
            if self.filesystem is None:
                shutil.copyfile(Path(path) / name, destination / name)
            else:
                from pyarrow import fs

                fs.copy_files(
                    f"{path}/{name}", str(destination / name), source_filesystem=self.filesystem
                )

    def has_file(self, folder: str, name: str) -> bool:
        """Whether ``folder`` (a path on this storage) holds the file ``name``."""
        if self.filesystem is None:
            return (Path(folder) / name).is_file()
        from pyarrow import fs

        return bool(self.filesystem.get_file_info(f"{folder}/{name}").type == fs.FileType.File)

    def publish(self, folder: Path, relative: str) -> str:
        """Copy a local ``folder`` to ``relative`` under this storage; its path there."""
        target = self.join(relative)
        if self.filesystem is None:
            shutil.copytree(folder, target, dirs_exist_ok=True)
        else:
            from pyarrow import fs

            fs.copy_files(str(folder), target, destination_filesystem=self.filesystem)
        return target

    def with_subpath(self, relative: str) -> TrainStorage:
        return TrainStorage(self.join(relative), self.filesystem) if relative else self

    def remove(self, relative: str) -> None:
        target = self.join(relative)
        if self.filesystem is None:
            shutil.rmtree(target, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError, OSError):
                self.filesystem.delete_dir(target)


def train_storage(config: RayConfig, local_root: Path, shared_subpath: str = "") -> TrainStorage:
    """Where a fit or a search keeps its checkpoints: ``shared_subpath`` under the config's
    shared storage, else the local folder ``local_root``."""
    shared = config.shared_train_storage
    if shared is None:
        return TrainStorage(str(local_root.resolve()))
    if not storage.is_s3(shared):
        return TrainStorage(shared).with_subpath(shared_subpath)
    from pyarrow import fs

    bucket, key = storage.split_s3_uri(shared)
    filesystem = fs.S3FileSystem(**storage.arrow_s3_options())
    root = TrainStorage(f"{bucket}/{key}".rstrip("/"), filesystem)
    return root.with_subpath(shared_subpath)


def _refuse_node_local_storage(config: RayConfig, alive_nodes: int) -> None:
    if alive_nodes > 1 and config.shared_train_storage is None:
        raise ConfigError(
            f"the Ray cluster has {alive_nodes} nodes, but Ray Train would keep checkpoints "
            "under this driver's work_dir, which the other nodes' workers cannot write: set "
            "ray.storage_uri=s3://bucket/prefix (or ray.staging_uri, whose /ray it then uses) "
            "or a folder every node mounts"
        )


@contextlib.contextmanager
def one_local_ray(config: RayConfig) -> Iterator[RayConfig]:
    """One local Ray instance for a whole run on this machine, which every stage joins.

    With ``ray.mode=local`` each training stage would start (and stop) an instance of its own,
    about 6 s each. This starts one here, in the caller's process, and yields the settings a
    stage joins it with: ``mode=address`` with no address, ``submit=driver`` (the stage
    process is the driver). The stages' processes inherit the GCS address (``RAY_ADDRESS``),
    the token and the dashboard's address from this process's environment, exported here and
    by :func:`ensure_ray`, and restored by :func:`shutdown_ray`. The address stays out of the
    settings on purpose: they are part of the config every task gets, so an address that
    changes from run to run would change every task's inputs, and KFP's cache would never
    serve a rerun. Any other mode is yielded unchanged."""
    import ray

    # a cluster is already one Ray; a Ray this process runs already is someone else's to stop
    if config.mode != "local" or ray.is_initialized():
        yield config
        return
    ensure_ray(config)
    address = ray.get_runtime_context().gcs_address
    log.info("one local Ray for the run at %s", address)
    _replaced_env.setdefault(RAY_ADDRESS_ENV, os.environ.get(RAY_ADDRESS_ENV))
    os.environ[RAY_ADDRESS_ENV] = address
    try:
        yield config.model_copy(update={"mode": "address", "address": None, "submit": "driver"})
    finally:
        shutdown_ray()


def shutdown_ray() -> None:
    import ray

    if ray.is_initialized():
        ray.shutdown()
    for key, value in _replaced_env.items():  # the caller's own values come back
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    _replaced_env.clear()


# Ports Ray's other components take by default (GCS, dashboard, client server, dashboard
# agent): Ray refuses to start when the dashboard is given one of them, and 52365 lies in the
# kernel's ephemeral range, so a port the kernel hands out may be it.
RAY_DEFAULT_PORTS = frozenset({6379, 8265, 10001, 52365})


def _free_port() -> int:
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.bind(("127.0.0.1", 0))
            port = int(probe.getsockname()[1])
        if port not in RAY_DEFAULT_PORTS:
            return port
