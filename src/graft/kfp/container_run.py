"""Run the pipeline with every task in the Graft image, through KFP's local DockerRunner.

The containers get what a cluster's pods get and nothing more: the image, the environment
(tracking URI, S3 endpoint and keys), a read-only root with scratch space in memory, and the
pipeline root, which KFP's runner mounts at the same path to pass artifacts between tasks.
They run with the host's network, as the image's user (uid 1000).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from graft.config import GraftConfig
from graft.errors import ConfigError
from graft.kfp.local_run import run_pipeline
from graft.kfp.stage_logs import StageListener

IMAGE_UID = 1000  # images/Dockerfile.cpu: USER 1000:1000
# Ray keeps its object store in /dev/shm; Docker's default 64 MiB makes Ray warn and spill.
SHARED_MEMORY = "1g"


def container_run_args(environment: Mapping[str, str], uid: int = IMAGE_UID) -> dict[str, Any]:
    """docker-py ``containers.run`` arguments for every task (KFP's DockerRunner passes them)."""
    return {
        "network_mode": "host",
        "user": f"{uid}:{uid}",
        "read_only": True,
        # what a task writes besides its artifacts: work_dir (under HOME), Ray's and KFP's temp
        "tmpfs": {"/tmp": "", "/home/graft": f"uid={uid},gid={uid}"},
        "shm_size": SHARED_MEMORY,
        # The image's ENTRYPOINT is `graft`; KFP's command (`sh -ec ...`) would become its
        # arguments. On Kubernetes a pod's command replaces the entrypoint, so only here.
        "entrypoint": "",
        "environment": dict(environment),
    }


def prepare_pipeline_root(root: Path, uid: int = IMAGE_UID) -> Path:
    """The folder KFP mounts into every task, writable by the image's user."""
    root.mkdir(parents=True, exist_ok=True)
    if os.geteuid() == 0:
        os.chown(root, uid, uid)
    elif os.geteuid() != uid:
        raise ConfigError(
            f"the tasks run as uid {uid} and must write to {root}, which uid {os.geteuid()} "
            f"owns; run as root or as uid {uid}, or make {root} writable for uid {uid}"
        )
    return root


def run_in_containers(
    config: GraftConfig,
    image: str,
    environment: Mapping[str, str],
    pipeline_root: Path,
    listener: StageListener | None = None,
) -> dict[str, Any]:
    """Execute every stage as a container of ``image`` and return the export summary; with
    ``listener``, each stage's output goes to ``<pipeline_root>/logs/<stage>.log``."""
    from kfp import local

    root = prepare_pipeline_root(pipeline_root.resolve())
    return run_pipeline(
        config,
        local.DockerRunner(**container_run_args(environment)),
        root,
        root / "logs" if listener else None,
        listener,
        image=image,
    )
