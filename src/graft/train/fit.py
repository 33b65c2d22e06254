"""Run one distributed fit with Ray Train's ``TorchTrainer`` and collect what it produced."""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from graft.config import WorkerResources
from graft.errors import TrainingError
from graft.train.loop import (
    HISTORY_FILE,
    MODEL_FILE,
    SPEC_FILE,
    FitRequest,
    ship_inputs,
    train_loop_per_worker,
)

log = logging.getLogger(__name__)

CONTROLLER_FAILURE_LIMIT = 2


@dataclass
class FitResult:
    model_dir: str  # holds model.pt and spec.json of the final (best-restored) weights
    history: list[dict[str, float]] = field(default_factory=list)
    final_metrics: dict[str, float] = field(default_factory=dict)
    checkpoint_path: str = ""


def fit(
    request: FitRequest,
    *,
    num_workers: int,
    storage_path: Path | str,
    run_name: str,
    output_dir: Path,
    max_failures: int,
    num_to_keep: int,
    resources: WorkerResources | None = None,
    cpu_discount: float = 0.0,
    callbacks: list[Any] | None = None,
    storage_filesystem: Any = None,
) -> FitResult:
    """Train on ``num_workers`` DDP workers; a rerun with the same ``run_name`` and storage
    resumes from the latest checkpoint (Ray Train V2 restores its checkpoint manager).

    ``storage_path`` is a local folder, or with ``storage_filesystem`` (a pyarrow filesystem,
    see :func:`graft.io.ray_runtime.train_storage`) a path on it, e.g. ``bucket/prefix`` on S3."""
    from ray.train.v2.api.config import (
        CheckpointConfig,
        FailureConfig,
        RunConfig,
        ScalingConfig,
    )
    from ray.train.v2.torch.torch_trainer import TorchTrainer

    per_worker = resources or WorkerResources()
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config=ship_inputs(request).as_dict(),
        scaling_config=ScalingConfig(
            num_workers=num_workers,
            # use_gpu also makes Ray Train pick NCCL over gloo for the process group
            use_gpu=per_worker.gpus > 0,
            resources_per_worker=per_worker.ray_resources(cpu_discount),
        ),
        run_config=RunConfig(
            name=run_name,
            storage_path=(
                str(storage_path.resolve()) if isinstance(storage_path, Path) else storage_path
            ),
            storage_filesystem=storage_filesystem,
            checkpoint_config=CheckpointConfig(num_to_keep=num_to_keep),
            # Train V2 retries controller errors (e.g. a worker group that cannot start)
            # forever by default: a starved trial would hang the whole tune stage.
            failure_config=FailureConfig(
                max_failures=max_failures, controller_failure_limit=CONTROLLER_FAILURE_LIMIT
            ),
            callbacks=callbacks,
        ),
    )
    try:
        result = trainer.fit()
    except Exception as exc:
        raise TrainingError(f"training run '{run_name}' failed: {_root_cause(exc)}") from exc
    if result.checkpoint is None:
        raise TrainingError(f"training run '{run_name}' finished without a checkpoint")
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


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _root_cause(exc: BaseException) -> str:
    seen = exc
    while seen.__cause__ is not None:
        seen = seen.__cause__
    text = str(seen).strip().splitlines()
    return text[-1] if text else type(seen).__name__
