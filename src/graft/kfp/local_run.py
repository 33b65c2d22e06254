"""Run the compiled-in-memory pipeline on this machine with KFP's local SubprocessRunner."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path
from typing import Any

from graft.config import GraftConfig
from graft.config.runtime import TMPDIR_ENV
from graft.kfp.pipeline import build_pipeline
from graft.kfp.stage_logs import StageListener, StageLogRouter


def run_local(config: GraftConfig, listener: StageListener | None = None) -> dict[str, Any]:
    """Execute every stage as a local KFP task (same code path as on a cluster) and return
    the export summary.

    Without ``listener`` everything the runner prints reaches this process's stdout, as KFP
    prints it. With one, each stage's output goes to ``stage_log_dir(config)/<stage>.log``,
    ``listener`` hears each stage start and end, and a failed stage raises
    PipelineStageError naming the cause found at the end of its log.
    """
    from kfp import local

    work = config.work_path.resolve()
    work.mkdir(parents=True, exist_ok=True)
    return run_pipeline(
        config,
        local.SubprocessRunner(use_venv=False),
        work / "kfp",
        stage_log_dir(config) if listener else None,
        listener,
        scratch=work / "tmp",
    )


def run_pipeline(
    config: GraftConfig,
    runner: Any,
    pipeline_root: Path,
    log_dir: Path | None = None,
    listener: StageListener | None = None,
    image: str | None = None,
    scratch: Path | None = None,
) -> dict[str, Any]:
    """The pipeline built from ``config``, run by the KFP local ``runner``; the export summary.

    ``image`` is the components' base image (what a DockerRunner starts); ``scratch`` becomes
    TMPDIR for the run, where KFP's runner leaves its per-task files."""
    from kfp import local

    routing: AbstractContextManager[None] = (
        StageLogRouter(log_dir, listener).routing()
        if log_dir is not None and listener is not None
        else nullcontext()
    )
    with routing:
        local.init(runner=runner, pipeline_root=str(pipeline_root), raise_on_error=True)
        pipeline = build_pipeline(**({"image": image} if image else {}), default_config=config)
        with _scratch_tmpdir(scratch) if scratch else nullcontext():
            task = pipeline(config_json=config.to_json())
    output = task.output if hasattr(task, "output") else task.outputs["Output"]
    return dict(json.loads(output))


@contextmanager
def _scratch_tmpdir(scratch: Path) -> Iterator[None]:
    """KFP's local runner leaves per-task scratch files in TMPDIR: point it at the run folder
    for the run only, then restore it (later code must not inherit a folder that may vanish)."""
    scratch.mkdir(parents=True, exist_ok=True)
    previous_env, previous_tempdir = os.environ.get(TMPDIR_ENV), tempfile.tempdir
    os.environ[TMPDIR_ENV] = str(scratch)
    tempfile.tempdir = str(scratch)
    try:
        yield
    finally:
        tempfile.tempdir = previous_tempdir
        if previous_env is None:
            os.environ.pop(TMPDIR_ENV, None)
        else:
            os.environ[TMPDIR_ENV] = previous_env


def stage_outputs(config: GraftConfig) -> Path:
    return config.work_path.resolve() / "kfp"


def stage_log_dir(config: GraftConfig) -> Path:
    """Where a quiet ``graft run`` writes each stage's whole output."""
    return config.work_path.resolve() / "logs"
