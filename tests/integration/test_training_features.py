"""The loop's budget features on real Ray Train DDP: virtual epochs, linear LR scaling, per-step
diagnostics in a real MLflow server, and a mid-pass resume that matches the uninterrupted run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from graft.config import GraftConfig, load_config
from graft.io.ray_runtime import TrainStorage
from graft.train.budget import virtual_epoch_budget
from graft.train.fit import FitResult, fit
from graft.train.model_dir import load_checkpoint_model
from graft.train.request import FitRun
from graft.train.stage_requests import pretrain_request

pytestmark = [pytest.mark.ray, pytest.mark.timeout(600)]

STOP_POINT, NUM_CHECKPOINTS, BATCH, LR, EVERY = 1.5, 3, 32, 0.002, 5


def _config(tmp: Path, tracking_uri: str | None = None) -> GraftConfig:
    overrides = [
        f"work_dir={tmp}",
        f"pretrain.batch_size={BATCH}",
        f"pretrain.optimizer.lr={LR}",
        "pretrain.optimizer.name=momentum",  # so that a momentum is logged per step
        "pretrain.early_stopping.enabled=false",
        "pretrain.preflight_overfit_batch=false",
        "pretrain.budget.mode=virtual_epochs",
        f"pretrain.budget.stop_point={STOP_POINT}",
        f"pretrain.budget.num_checkpoints={NUM_CHECKPOINTS}",
        "pretrain.scale_lr_with_workers=true",
        f"pretrain.diagnostics.every_n_steps={EVERY}",
    ]
    if tracking_uri:
        overrides.append(f"tracking.tracking_uri={tracking_uri}")
    return load_config(preset="tiny", overrides=overrides)


def _fit(
    config: GraftConfig,
    dataset: str,
    name: str,
    workers: int,
    run_id: str | None = None,
    **extra: Any,
) -> FitResult:
    request = pretrain_request(config, dataset, run_id).model_copy(update=extra)
    return fit(
        request,
        FitRun(
            num_workers=workers,
            storage=TrainStorage(str((config.work_path / "ray").resolve())),
            run_name=name,
            output_dir=config.work_path / name,
            max_failures=1,
            num_to_keep=10,
        ),
    )


def _num_train(dataset: str) -> int:
    with np.load(Path(dataset) / "source" / "train.npz") as archive:
        return len(archive["y"])


def _checkpoints(config: GraftConfig, name: str) -> list[Path]:
    return sorted(p for p in (config.work_path / "ray" / name).glob("checkpoint_*") if p.is_dir())


def test_virtual_epochs_budget_lr_scaling_diagnostics_and_mid_pass_resume(
    ray_local: None, dataset: str, tmp_path: Path, mlflow_server: str
) -> None:
    from mlflow.tracking import MlflowClient

    num_train = _num_train(dataset)
    client = MlflowClient(tracking_uri=mlflow_server)
    run_id = client.create_run(client.create_experiment("training-features")).info.run_id

    # ---- 2 workers: reports, checkpoints and examples follow the budget arithmetic
    config = _config(tmp_path / "two", mlflow_server)
    two = _fit(config, dataset, "two", workers=2, run_id=run_id)
    plan2 = virtual_epoch_budget(num_train, STOP_POINT, BATCH, 2, NUM_CHECKPOINTS)
    assert len(two.history) == NUM_CHECKPOINTS
    assert len(_checkpoints(config, "two")) == NUM_CHECKPOINTS
    assert [h["epoch"] for h in two.history] == [1.0, 2.0, 3.0]
    assert [h["epoch_steps"] for h in two.history] == [plan2.steps_per_virtual_epoch] * 3
    assert all(0.0 < h["epoch_seconds"] < 60.0 for h in two.history)  # the steps' wall time
    assert [h["examples_seen"] for h in two.history] == [
        k * plan2.examples_per_virtual_epoch for k in (1, 2, 3)
    ]
    assert two.history[-1]["examples_seen"] == plan2.examples_seen
    assert two.history[-1]["steps"] == plan2.total_steps
    assert two.final_metrics["fit_complete"] == 1.0
    # a virtual epoch here is half a pass: checkpoint 1 falls in the middle of pass 0
    assert plan2.examples_per_virtual_epoch < num_train
    # the linear scaling rule: 2 workers, twice the configured LR
    assert [h["lr"] for h in two.history] == pytest.approx([2 * LR] * 3)

    # ---- per-step diagnostics in MLflow, step = global step
    lr_history = client.get_metric_history(run_id, "diag.lr")
    expected_steps = list(range(EVERY, plan2.total_steps + 1, EVERY))
    assert sorted(m.step for m in lr_history) == expected_steps
    assert all(m.value == pytest.approx(2 * LR) for m in lr_history)
    assert all(
        m.value == pytest.approx(0.9) for m in client.get_metric_history(run_id, "diag.momentum")
    )
    for block in (0, 1):  # the tiny preset's two hidden ReLU blocks
        dead = client.get_metric_history(run_id, f"diag.block{block}.dead_relu_fraction")
        std = client.get_metric_history(run_id, f"diag.block{block}.activation_std")
        assert len(dead) == len(expected_steps) and len(std) == len(expected_steps)
        assert all(0.0 <= m.value < 0.5 for m in dead)
        assert all(m.value > 0.0 for m in std)
    norms = client.get_metric_history(run_id, "diag.grad_norm_before_clip")
    clipped = client.get_metric_history(run_id, "diag.grad_norm_after_clip")
    assert all(m.value > 0 for m in norms)
    assert [m.value for m in norms] == [m.value for m in clipped]  # clip.mode none

    # ---- 1 worker: the global batch halves, steps per virtual epoch double, same budget
    one = _fit(_config(tmp_path / "one"), dataset, "one", workers=1)
    plan1 = virtual_epoch_budget(num_train, STOP_POINT, BATCH, 1, NUM_CHECKPOINTS)
    steps1, steps2 = one.history[0]["epoch_steps"], two.history[0]["epoch_steps"]
    assert steps1 == plan1.steps_per_virtual_epoch
    assert steps2 == steps1 // 2  # floor(x / 2g) = floor(floor(x / g) / 2)
    assert abs(one.history[-1]["examples_seen"] - two.history[-1]["examples_seen"]) < 2 * BATCH * 3
    assert [h["lr"] for h in one.history] == pytest.approx([LR] * 3)

    # ---- a crash after checkpoint 1 (mid-pass) resumes to the uninterrupted run's weights
    marker = Path(dataset) / "source" / ".failed-1"
    crashed = _fit(_config(tmp_path / "crashed"), dataset, "crashed", workers=2, fail_at_epoch=1)
    assert marker.exists()
    marker.unlink()
    assert [h["epoch"] for h in crashed.history] == [1.0, 2.0, 3.0]
    assert [h["examples_seen"] for h in crashed.history] == [
        h["examples_seen"] for h in two.history
    ]
    clean_model, _ = load_checkpoint_model(two.model_dir)
    resumed_model, _ = load_checkpoint_model(crashed.model_dir)
    for (key, a), (_, b) in zip(
        clean_model.state_dict().items(), resumed_model.state_dict().items(), strict=True
    ):
        assert torch.allclose(a, b, atol=1e-6), key
