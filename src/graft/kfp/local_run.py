"""Run the compiled-in-memory pipeline on this machine with KFP's local SubprocessRunner."""

from __future__ import annotations

import functools
import hashlib
import inspect
import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path
from typing import Any

from graft.config import GraftConfig
from graft.config.runtime import TMPDIR_ENV
from graft.errors import PipelineStageError
from graft.io.ray_runtime import one_local_ray
from graft.kfp.local_conditions import sibling_output_conditions
from graft.kfp.local_oneof import oneof_artifacts
from graft.kfp.pipeline import build_pipeline
from graft.kfp.stage_logs import StageListener, StageLogRouter

# what data-prep and pretrain compute with besides Graft: a new version may change their outputs
CACHED_OUTPUT_LIBRARIES = ("torch", "numpy", "ray", "scikit-learn", "pillow", "pyarrow")


def run_local(
    config: GraftConfig,
    listener: StageListener | None = None,
    one_ray: bool = True,
    cache: bool = False,
) -> dict[str, Any]:
    """Execute every stage as a local KFP task (same code path as on a cluster) and return
    the export summary (``retrained`` true), or the monitor's when it ended the run early
    (``retrained`` false).

    Without ``listener`` everything the runner prints reaches this process's stdout, as KFP
    prints it. With one, each stage's output goes to ``stage_log_dir(config)/<stage>.log``,
    ``listener`` hears each stage start and end, and a failed stage raises
    PipelineStageError naming the cause found at the end of its log.

    With ``ray.mode=local`` the training stages join one Ray instance started here
    (``one_ray=False``: each starts its own, as before; ``bench/pipeline_e2e.py --paths``
    compares the two).

    ``cache``: KFP's local cache (under the pipeline root) serves a task whose inputs an
    earlier run had, as a KFP server does; data-prep and pretrain take only the config and the
    data's digest (:mod:`graft.stages.open_run`), and the digest of Graft's code
    (:func:`graft_code_digest`). The other stages run every time.
    """
    from kfp import local

    work = config.work_path.resolve()
    work.mkdir(parents=True, exist_ok=True)
    # the stages run as this process's children: one Ray here serves them all
    with one_local_ray(config.ray) if one_ray else nullcontext(config.ray) as ray_settings:
        return run_pipeline(
            config.model_copy(update={"ray": ray_settings}),
            local.SubprocessRunner(use_venv=False),
            work / "kfp",
            stage_log_dir(config) if listener else None,
            listener,
            scratch=work / "tmp",
            cache=cache,
        )


def run_pipeline(
    config: GraftConfig,
    runner: Any,
    pipeline_root: Path,
    log_dir: Path | None = None,
    listener: StageListener | None = None,
    image: str | None = None,
    scratch: Path | None = None,
    cache: bool = False,
) -> dict[str, Any]:
    """The pipeline built from ``config``, run by the KFP local ``runner``; the export summary.

    ``image`` is the components' base image (what a DockerRunner starts); ``scratch`` becomes
    TMPDIR for the run, where KFP's runner leaves its per-task files; ``cache`` turns KFP's
    local cache on, keyed on Graft's code too (:func:`graft_code_digest`)."""
    from kfp import local

    routing: AbstractContextManager[None] = (
        StageLogRouter(log_dir, listener).routing()
        if log_dir is not None and listener is not None
        else nullcontext()
    )
    with (
        routing,
        oneof_artifacts(),
        sibling_output_conditions(),
        task_outputs("export") as export,
        task_outputs("monitor") as monitor,
    ):
        local.init(
            runner=runner,
            pipeline_root=str(pipeline_root),
            raise_on_error=True,
            enable_caching=cache,
        )
        pipeline = build_pipeline(
            **({"image": image} if image else {}),
            default_config=config,
            code_digest=graft_code_digest() if cache else None,
        )
        with _scratch_tmpdir(scratch) if scratch else nullcontext():
            pipeline(config_json=config.to_json())
    if "Output" in export:
        return {"retrained": True, **json.loads(export["Output"])}
    if "Output" in monitor and not json.loads(monitor["Output"])["retrain"]:
        # monitor.retrain_when said no: the training stages were skipped
        return {"retrained": False, **json.loads(monitor["Output"])}
    raise PipelineStageError("the pipeline ended without the export stage's summary")


def graft_code_digest(package_dir: Path | None = None) -> str:
    """16 hex digits naming the code a local task runs: every ``.py`` and ``.yaml`` file of
    the graft package (``package_dir``; default: the one imported here), by path and bytes,
    and the versions of the libraries that compute the cached outputs. Hashing about 200
    small files takes milliseconds."""
    from importlib import metadata

    import graft

    root = package_dir or Path(graft.__file__).parent
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*")):
        if path.suffix in (".py", ".yaml") and "__pycache__" not in path.parts:
            digest.update(f"{path.relative_to(root).as_posix()}\0".encode())
            digest.update(path.read_bytes())
    for library in CACHED_OUTPUT_LIBRARIES:
        digest.update(f"{library}=={metadata.version(library)}\0".encode())
    return digest.hexdigest()[:16]


@contextmanager
def task_outputs(task: str) -> Iterator[dict[str, Any]]:
    """A dict that fills with task ``task``'s outputs when KFP's local runner has executed it.

    The pipeline cannot return export's summary as its own output: KFP takes pipeline outputs
    only from outside its ``dsl.ExitHandler``. So this wraps the function that both local
    orchestrators call once per task, as :class:`graft.kfp.stage_logs.StageLogRouter` does
    (``tests/unit/test_stage_logs.py`` runs a real pipeline through it)."""
    from kfp.local.orchestrator import task_executor

    recorded: dict[str, Any] = {}
    original = task_executor.execute_single_task
    signature = inspect.signature(original)

    @functools.wraps(original)  # another wrapper's signature is then the original's
    def execute_recorded(*args: Any, **kwargs: Any) -> Any:
        outputs, status = original(*args, **kwargs)
        if signature.bind(*args, **kwargs).arguments["task_name"] == task:
            recorded.update(outputs or {})
        return outputs, status

    task_executor.execute_single_task = execute_recorded
    try:
        yield recorded
    finally:
        task_executor.execute_single_task = original


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
