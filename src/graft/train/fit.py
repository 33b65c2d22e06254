"""Run one distributed fit with Ray Train's ``TorchTrainer`` and collect what it produced."""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from graft.config.train import TRAIN_CONTROLLER_FAILURE_LIMIT
from graft.errors import TrainingError
from graft.train.model_dir import HISTORY_FILE, MODEL_FILE, SPEC_FILE
from graft.train.recipe import train_loop_per_worker, worker_payload
from graft.train.request import FitRequest, FitRun, ship_inputs
from graft.train.stream_data import require_decode_cpus, stream_datasets

log = logging.getLogger(__name__)


@dataclass
class FitResult:
    model_dir: str  # holds model.pt and spec.json of the final (best-restored) weights
    history: list[dict[str, float]] = field(default_factory=list)
    final_metrics: dict[str, float] = field(default_factory=dict)
    checkpoint_path: str = ""


def fit(request: FitRequest, run: FitRun) -> FitResult:
    """Train ``request`` on ``run.num_workers`` DDP workers; a rerun with the same run name and
    storage resumes from the latest checkpoint (Ray Train V2 restores its checkpoint manager).

    ``run.storage`` is a local folder, or a path on its pyarrow filesystem (see
    :func:`graft.io.ray_runtime.train_storage`), e.g. ``bucket/prefix`` on S3."""
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    per_worker = run.resources.ray_resources(run.cpu_discount)
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config=worker_payload(request, ship_inputs(request)),
        datasets=_streamed_datasets(request, per_worker["CPU"] * run.num_workers),
        scaling_config=ScalingConfig(
            num_workers=run.num_workers,
            # use_gpu also makes Ray Train pick NCCL over gloo for the process group
            use_gpu=run.resources.gpus > 0,
            resources_per_worker=per_worker,
        ),
        run_config=RunConfig(
            name=run.run_name,
            storage_path=run.storage.path,
            storage_filesystem=run.storage.filesystem,
            checkpoint_config=CheckpointConfig(num_to_keep=run.num_to_keep),
            # ray.train exports Train V2's FailureConfig (V2 is Ray 2.60's default); type
            # checkers read the V1 class its module imports first, without this argument
            failure_config=FailureConfig(  # type: ignore[call-arg]
                max_failures=run.max_failures,
                controller_failure_limit=TRAIN_CONTROLLER_FAILURE_LIMIT,
            ),
            callbacks=list(run.callbacks) or None,
        ),
    )
    try:
        result = trainer.fit()
    except Exception as exc:
        raise TrainingError(f"training run '{run.run_name}' failed: {_root_cause(exc)}") from exc
    if result.checkpoint is None:
        raise TrainingError(f"training run '{run.run_name}' finished without a checkpoint")
    output_dir = run.output_dir
    output_dir.mkdir(parents=True, exist_ok=True)
    with result.checkpoint.as_directory() as ckpt_dir:
        for name in (MODEL_FILE, SPEC_FILE, HISTORY_FILE):
            shutil.copyfile(Path(ckpt_dir) / name, output_dir / name)
    history = json.loads((output_dir / HISTORY_FILE).read_text())
    return FitResult(
        model_dir=str(output_dir),
        history=history,
        final_metrics={k: float(v) for k, v in (result.metrics or {}).items() if _is_number(v)},
        checkpoint_path=str(result.checkpoint.path),
    )


def _streamed_datasets(request: FitRequest, reserved_cpus: float) -> dict[str, Any] | None:
    """Ray Data datasets for a request over split manifests (data.loader: streaming)."""
    if request.stream is None:
        return None
    import ray

    require_decode_cpus(float(ray.cluster_resources().get("CPU", 0.0)), reserved_cpus)
    return stream_datasets(request)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _root_cause(exc: BaseException) -> str:
    seen = exc
    while seen.__cause__ is not None:
        seen = seen.__cause__
    text = str(seen).strip().splitlines()
    return text[-1] if text else type(seen).__name__
