"""The per-worker training loop that Ray Train runs on every DDP worker.

One loop serves pretrain and transfer-finetune: a fit is a list of phases, each with its own
trainable set and learning rate (pretrain is one phase that trains everything). On each phase
change the optimizer is rebuilt and the model re-wrapped for DDP, since both capture the
trainable set at construction. Every epoch the full training state is checkpointed, and a
restarted run continues from the latest checkpoint: same phase, same epoch, same LR sequence,
same RNG streams.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import random
import sys
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from graft.config import FinetuneConfig, PhaseConfig, TrainConfig
from graft.nn.models import GraftNet, ModelSpec, build_model
from graft.nn.transfer import apply_phase, set_train_mode
from graft.train.clipping import clip_gradients
from graft.train.optimizers import build_optimizer
from graft.train.regularizers import apply_max_norm, kernel_penalty
from graft.train.schedules import build_schedule

progress = logging.getLogger("graft.progress")

MODEL_FILE = "model.pt"
SPEC_FILE = "spec.json"
STATE_FILE = "state.pt"
HISTORY_FILE = "history.json"


@dataclass
class FitRequest:
    """Everything a worker needs, as plain data (it crosses process boundaries)."""

    train_path: str
    val_path: str
    spec_json: str
    train_config_json: str
    phases: list[dict[str, Any]]
    seed: int
    init_weights_path: str | None = None
    tracking_uri: str | None = None
    mlflow_run_id: str | None = None
    fail_at_epoch: int | None = None  # fault injection for resume tests only
    extra_metrics: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def train_config(self) -> TrainConfig:
        data = json.loads(self.train_config_json)
        return (
            FinetuneConfig.model_validate(data)
            if "phases" in data
            else TrainConfig.model_validate(data)
        )


def phases_for(config: TrainConfig) -> list[PhaseConfig]:
    if isinstance(config, FinetuneConfig):
        return list(config.phases)
    return [PhaseConfig(trainable="all", epochs=config.epochs)]


@dataclass
class LoopState:
    phase_index: int = 0
    epoch_in_phase: int = 0  # epochs completed in the current phase
    global_epoch: int = 0  # epochs completed overall
    phase_done: bool = False
    best_metric: float | None = None
    best_state: dict[str, torch.Tensor] | None = None
    wait: int = 0
    history: list[dict[str, float]] = field(default_factory=list)


def _next_phase(state: LoopState) -> LoopState:
    return LoopState(
        phase_index=state.phase_index + 1,
        global_epoch=state.global_epoch,
        history=state.history,
    )


def seed_everything(seed: int, deterministic: bool) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)


def _rng_state(generator: torch.Generator) -> dict[str, Any]:
    return {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
        "loader": generator.get_state(),
    }


def _set_rng_state(state: dict[str, Any], generator: torch.Generator) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    generator.set_state(state["loader"])


def _load_npz(path: str) -> TensorDataset:
    with np.load(path) as archive:
        x = torch.from_numpy(archive["x"].astype(np.float32))
        y = torch.from_numpy(archive["y"].astype(np.int64))
    return TensorDataset(x, y)


@torch.no_grad()
def evaluate_model(
    model: nn.Module, dataset: TensorDataset, batch_size: int = 1024
) -> dict[str, float]:
    model.eval()
    loss_sum, correct, count = 0.0, 0, 0
    for xb, yb in DataLoader(dataset, batch_size=batch_size):
        logits = model(xb)
        loss_sum += float(nn.functional.cross_entropy(logits, yb, reduction="sum"))
        correct += int((logits.argmax(1) == yb).sum())
        count += len(yb)
    return {"loss": loss_sum / max(count, 1), "accuracy": correct / max(count, 1)}


def _improved(metric: float, best: float | None, monitor: str, min_delta: float) -> bool:
    if best is None:
        return True
    if monitor == "val_loss":
        return metric < best - min_delta
    return metric > best + min_delta


class _Checkpointer:
    """Writes the full training state; only rank 0 attaches it to the report."""

    def __init__(self, rank: int) -> None:
        self.rank = rank

    def report(self, metrics: dict[str, float], payload: dict[str, Any] | None) -> None:
        import ray.train

        if self.rank != 0 or payload is None:
            ray.train.report(metrics)
            return
        with tempfile.TemporaryDirectory() as tmp:
            torch.save(payload, Path(tmp) / STATE_FILE)
            torch.save(payload["model"], Path(tmp) / MODEL_FILE)
            Path(tmp, SPEC_FILE).write_text(payload["spec_json"])
            Path(tmp, HISTORY_FILE).write_text(json.dumps(payload["loop"]["history"]))
            ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(tmp))


def train_loop_per_worker(request_dict: dict[str, Any]) -> None:
    import ray.train
    import ray.train.torch as ray_torch

    request = FitRequest(**request_dict)
    config = request.train_config
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    threads = int(os.environ.get("GRAFT_TORCH_THREADS", "1"))
    torch.set_num_threads(max(1, threads))
    seed_everything(request.seed, config.deterministic)

    spec = ModelSpec.from_json(request.spec_json)
    model = build_model(spec)
    if request.init_weights_path:
        model.load_state_dict(torch.load(request.init_weights_path, weights_only=True))
    train_set, val_set = _load_npz(request.train_path), _load_npz(request.val_path)
    phases = [PhaseConfig.model_validate(p) for p in request.phases]

    generator = torch.Generator().manual_seed(request.seed)
    state = LoopState()
    saved = None
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as ckpt_dir:
            saved = torch.load(Path(ckpt_dir) / STATE_FILE, weights_only=False)
        model.load_state_dict(saved["model"])
        state = LoopState(**saved["loop"])
        _set_rng_state(saved["rng"], generator)
        if state.phase_done:
            state = _next_phase(state)
            saved = None  # optimizer/schedule state belongs to the finished phase

    if rank == 0 and not progress.handlers:
        progress.addHandler(logging.StreamHandler(sys.stderr))
        progress.setLevel(logging.INFO)
    total_epochs = sum(p.epochs for p in phases)
    logger = None
    if rank == 0 and request.tracking_uri and request.mlflow_run_id:
        from graft.tracking import RunLogger

        logger = RunLogger(request.tracking_uri, request.mlflow_run_id)
    checkpointer = _Checkpointer(rank)
    early = config.early_stopping

    for phase_index in range(state.phase_index, len(phases)):
        phase = phases[phase_index]
        unfrozen = apply_phase(model, phase)
        lr = config.optimizer.lr * phase.lr_scale
        trainable = [p for p in model.parameters() if p.requires_grad]
        optimizer = build_optimizer(trainable, config.optimizer, lr)
        loader = DataLoader(
            train_set,
            batch_size=config.batch_size,
            shuffle=True,
            generator=generator,
            drop_last=len(train_set) > config.batch_size * world,
        )
        loader = ray_torch.prepare_data_loader(loader, move_to_device=False)
        schedule = build_schedule(
            optimizer,
            config.schedule,
            lr,
            steps_per_epoch=max(1, len(loader)),
            total_epochs=phase.epochs,
        )
        if saved is not None:
            optimizer.load_state_dict(saved["optimizer"])
            schedule.load_state_dict(saved["schedule"])
            saved = None
        wrapped = ray_torch.prepare_model(model, move_to_device=False) if world > 1 else model

        while state.epoch_in_phase < phase.epochs:
            if request.fail_at_epoch is not None and state.global_epoch == request.fail_at_epoch:
                marker = Path(request.train_path).parent / f".failed-{request.fail_at_epoch}"
                if not marker.exists():
                    marker.touch()
                    raise RuntimeError(f"injected worker failure at epoch {state.global_epoch}")
            sampler: Any = getattr(loader, "sampler", None)
            if hasattr(sampler, "set_epoch"):
                sampler.set_epoch(state.global_epoch)
            set_train_mode(model, unfrozen if phase.trainable != "all" else None)
            loss_sum, correct, seen, grad_before, grad_after = 0.0, 0, 0, 0.0, 0.0
            for xb, yb in loader:
                optimizer.zero_grad(set_to_none=True)
                logits = wrapped(xb)
                loss = nn.functional.cross_entropy(logits, yb)
                total = loss + kernel_penalty(model, config.regularization)
                total.backward()  # DDP has all-reduced the gradients when this returns
                grad_before, grad_after = clip_gradients(trainable, config.clip)
                optimizer.step()
                if config.regularization.max_norm is not None:
                    apply_max_norm(model, config.regularization.max_norm)
                schedule.after_batch()
                loss_sum += loss.item() * len(yb)
                correct += int((logits.argmax(1) == yb).sum())
                seen += len(yb)
            val = evaluate_model(model, val_set)
            schedule.after_epoch(val["loss"])
            state.epoch_in_phase += 1
            state.global_epoch += 1
            metrics = {
                "epoch": float(state.global_epoch),
                "phase": float(phase_index),
                "train_loss": loss_sum / max(seen, 1),
                "train_accuracy": correct / max(seen, 1),
                "val_loss": val["loss"],
                "val_accuracy": val["accuracy"],
                "lr": schedule.current_lr(),
                "grad_norm_before_clip": grad_before,
                "grad_norm_after_clip": grad_after,
            }
            monitored = metrics[early.monitor]
            if _improved(monitored, state.best_metric, early.monitor, early.min_delta):
                state.best_metric, state.wait = monitored, 0
                if early.restore_best:
                    state.best_state = copy.deepcopy(model.state_dict())
            else:
                state.wait += 1
            stop = early.enabled and state.wait >= early.patience
            phase_over = stop or state.epoch_in_phase >= phase.epochs
            if phase_over and early.restore_best and state.best_state is not None:
                model.load_state_dict(state.best_state)
            state.phase_done = phase_over
            state.history.append(metrics)
            if rank == 0:
                progress.info(
                    "epoch %d/%d (phase %d: %s) train_loss %.4f train_acc %.4f "
                    "val_loss %.4f val_acc %.4f lr %.2e%s",
                    state.global_epoch,
                    total_epochs,
                    phase_index,
                    phase.trainable,
                    metrics["train_loss"],
                    metrics["train_accuracy"],
                    metrics["val_loss"],
                    metrics["val_accuracy"],
                    metrics["lr"],
                    " (early stop)" if stop else "",
                )
            if logger is not None:
                logger.metrics(metrics, step=state.global_epoch)
            payload = None
            if rank == 0:
                payload = {
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "schedule": schedule.state_dict(),
                    "loop": asdict(state),
                    "rng": _rng_state(generator),
                    "spec_json": request.spec_json,
                }
            # fit_complete tells a scheduler's cut (no final report) from a finished fit
            fit_complete = phase_over and phase_index == len(phases) - 1
            checkpointer.report(
                {**metrics, "stopped_early": float(stop), "fit_complete": float(fit_complete)},
                payload,
            )
            if phase_over:
                break
        state = _next_phase(state)


def load_checkpoint_model(checkpoint_dir: str | Path) -> tuple[GraftNet, ModelSpec]:
    directory = Path(checkpoint_dir)
    spec = ModelSpec.load(directory / SPEC_FILE)
    model = build_model(spec)
    model.load_state_dict(torch.load(directory / MODEL_FILE, weights_only=True))
    return model, spec
