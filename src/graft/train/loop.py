"""The per-worker training loop that Ray Train runs on every DDP worker.

One loop serves pretrain and transfer-finetune: a fit is a list of phases, each with its own
trainable set and learning rate (pretrain is one phase that trains everything). On each phase
change the optimizer is rebuilt and the model re-wrapped for DDP, since both capture the
trainable set at construction. Every epoch the full training state is checkpointed, and a
restarted run continues from the latest checkpoint: same phase, same epoch, same LR sequence,
same RNG streams.

With ``budget.mode = virtual_epochs`` an "epoch" (report + checkpoint + early-stopping check) is
``steps_per_virtual_epoch`` optimizer steps drawn from a loader that cycles pass after pass
(graft.train.budget has the arithmetic); the position inside the current pass is part of the
checkpoint, so a resumed run draws the same batches. ``scale_lr_with_workers`` applies the
linear scaling rule, and ``diagnostics.every_n_steps`` makes rank 0 log per-step diagnostics
(graft.train.diagnostics) to MLflow.
"""

from __future__ import annotations

import copy
import gc
import io
import itertools
import json
import logging
import os
import random
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from graft.config import FinetuneConfig, PhaseConfig, ScheduleConfig, TrainConfig
from graft.errors import ConfigError, TrainingError
from graft.nn.models import GraftNet, ModelSpec, build_model
from graft.nn.transfer import apply_phase, set_train_mode
from graft.train.budget import VirtualEpochBudget, linear_scaled_lr, virtual_epoch_budget
from graft.train.clipping import clip_gradients
from graft.train.diagnostics import ActivationRecorder, step_diagnostics
from graft.train.objectives import objective_loss
from graft.train.optimizers import build_optimizer
from graft.train.regularizers import (
    apply_max_norm,
    kernel_penalty,
    kernel_sparsity,
    prune_below,
)
from graft.train.schedules import build_schedule

progress = logging.getLogger("graft.progress")
log = logging.getLogger(__name__)

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
    # Ray object ref of {path: bytes}, the input files (see ship_inputs)
    shipped_inputs: Any = None

    def as_dict(self) -> dict[str, Any]:
        # shallow: an ObjectRef must reach the workers as it is, not deep-copied
        return {item.name: getattr(self, item.name) for item in fields(self)}

    def input_paths(self) -> list[str]:
        return [p for p in (self.train_path, self.val_path, self.init_weights_path) if p]

    def open_inputs(self) -> dict[str, str | io.BytesIO]:
        """Each input path as this worker can read it: from the object store once shipped
        (fetched once for all of them)."""
        if self.shipped_inputs is None:
            return {path: path for path in self.input_paths()}
        import ray

        files = ray.get(self.shipped_inputs)
        return {path: io.BytesIO(files[path]) for path in self.input_paths()}

    @property
    def train_config(self) -> TrainConfig:
        data = json.loads(self.train_config_json)
        return (
            FinetuneConfig.model_validate(data)
            if "phases" in data
            else TrainConfig.model_validate(data)
        )


def ship_inputs(request: FitRequest) -> FitRequest:
    """A copy whose input files (splits, initial weights) travel in Ray's object store.

    The paths are on the driver's machine. On a cluster of several nodes a worker on another
    node has its own filesystem, where they do not exist; every worker reads the object store
    instead, on any node, so one code path serves one machine and many."""
    import ray

    files = {path: Path(path).read_bytes() for path in request.input_paths()}
    return replace(request, shipped_inputs=ray.put(files))


def phases_for(config: TrainConfig) -> list[PhaseConfig]:
    """The fit's phases; with virtual epochs a phase's ``epochs`` count virtual epochs."""
    virtual = config.budget.mode == "virtual_epochs"
    if isinstance(config, FinetuneConfig):
        phases = list(config.phases)
        total = sum(p.epochs for p in phases)
        if virtual and total != config.budget.num_checkpoints:
            raise ConfigError(
                f"finetune.budget.mode=virtual_epochs: the phases' epochs (virtual epochs) sum "
                f"to {total} but finetune.budget.num_checkpoints is "
                f"{config.budget.num_checkpoints}; make them equal"
            )
        return phases
    epochs = config.budget.num_checkpoints if virtual else config.epochs
    return [PhaseConfig(trainable="all", epochs=epochs)]


def lr_scale_factor(config: TrainConfig, world_size: int) -> float:
    """What the LR is multiplied by on ``world_size`` workers: 1, or ``world_size`` under the
    linear scaling rule (``scale_lr_with_workers``; reference batch: one worker's batch)."""
    if not config.scale_lr_with_workers:
        return 1.0
    return linear_scaled_lr(1.0, config.batch_size * world_size, config.batch_size)


def worker_lr(config: TrainConfig, world_size: int) -> float:
    """The base LR of a fit on ``world_size`` workers (``optimizer.lr`` x the scale factor)."""
    return config.optimizer.lr * lr_scale_factor(config, world_size)


def scaled_schedule(schedule: ScheduleConfig, factor: float) -> ScheduleConfig:
    """The schedule with its absolute LRs (1cycle peak, piecewise values) times ``factor``."""
    if factor == 1.0:
        return schedule
    update: dict[str, Any] = {"values": [v * factor for v in schedule.values]}
    if schedule.one_cycle_max_lr is not None:
        update["one_cycle_max_lr"] = schedule.one_cycle_max_lr * factor
    return schedule.model_copy(update=update)


def virtual_plan(
    config: TrainConfig, num_examples: int, world_size: int
) -> VirtualEpochBudget | None:
    """The virtual-epoch plan of a fit (None in ``epochs`` mode); global batch = batch_size x
    world_size, so the examples budget does not depend on the worker count."""
    budget = config.budget
    if budget.mode != "virtual_epochs":
        return None
    return virtual_epoch_budget(
        num_examples=num_examples,
        stop_point=budget.stop_point,
        per_worker_batch=config.batch_size,
        num_workers=world_size,
        num_checkpoints=budget.num_checkpoints,
    )


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
    global_step: int = 0  # optimizer steps overall
    examples_seen: int = 0  # training examples over all workers
    data_pass: int = 0  # virtual epochs: the cycling loader's pass (the sampler's epoch)
    batch_in_pass: int = 0  # virtual epochs: batches of the pass already drawn
    pass_rng: Any = None  # virtual epochs: the loader generator's state when the pass began


def _next_phase(state: LoopState) -> LoopState:
    return LoopState(
        phase_index=state.phase_index + 1,
        global_epoch=state.global_epoch,
        history=state.history,
        global_step=state.global_step,
        examples_seen=state.examples_seen,
        # a phase builds a new loader: it starts a fresh pass
        data_pass=state.data_pass + (1 if state.batch_in_pass else 0),
    )


def cycling_batches(
    loader: DataLoader[Any], state: LoopState, generator: torch.Generator
) -> Iterator[Any]:
    """Batches from ``loader``, pass after pass without end, the position kept in ``state``.

    A state restored from a checkpoint mid-pass replays the pass's shuffle (the sampler's
    epoch, or the loader generator's state when the pass began) and skips the batches already
    drawn, so the resumed run sees the batches the uninterrupted one saw.
    """
    resuming = state.batch_in_pass > 0
    while True:
        sampler: Any = getattr(loader, "sampler", None)
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(state.data_pass)
        if resuming:
            generator.set_state(state.pass_rng)
        else:
            state.pass_rng = generator.get_state()
        skip = state.batch_in_pass if resuming else 0
        resuming = False
        drawn = False
        for index, batch in enumerate(loader):
            drawn = True
            if index < skip:
                continue
            state.batch_in_pass = index + 1
            yield batch
        if not drawn:
            raise TrainingError(
                "the training loader yields no batch; use a batch_size x num_workers no "
                "larger than the training split"
            )
        state.data_pass += 1
        state.batch_in_pass = 0


def _global_sum(value: int, world_size: int, device: torch.device) -> int:
    """``value`` summed over the workers (the process group is Ray Train's; NCCL only
    reduces tensors on the GPU)."""
    if world_size == 1 or not torch.distributed.is_initialized():
        return value
    total = torch.tensor([value], dtype=torch.int64, device=device)
    torch.distributed.all_reduce(total)
    return int(total.item())


def seed_everything(seed: int, deterministic: bool) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)


@contextmanager
def cyclic_gc_paused() -> Iterator[None]:
    """Python's cyclic garbage collector off inside the block, back on (if it was) after.

    The loop runs an epoch's training steps inside it. The steps create almost no reference
    cycles (a few objects per hundred steps), but a worker holds some 400,000 long-lived
    objects (torch, torch._dynamo and sympy, imported lazily by the first optimizer step and
    by ``torch.use_deterministic_algorithms``; Ray), and once the per-epoch report and
    checkpoint have allocated enough, a full collection walks all of them: 0.2-0.3 s on one
    core, landing in whatever step comes next. Paused, that collection runs between epochs;
    under DDP it no longer stalls every worker's all-reduce at a random step either.
    Reference counting still frees everything that is not in a cycle."""
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def _rng_state(generator: torch.Generator) -> dict[str, Any]:
    return {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
        "loader": generator.get_state(),
    }


@torch.no_grad()
def bottleneck_features(
    model: GraftNet,
    dataset: TensorDataset,
    device: torch.device,
    rank: int = 0,
    world: int = 1,
    batch_size: int = 1024,
) -> TensorDataset:
    """The frozen trunk's outputs for every example, each computed once across the workers
    (feature extraction): worker r runs rows r, r+world, ... and an all-gather shares them,
    since the sampler deals every worker different rows each epoch.

    The trunk runs in eval mode, as Keras' ``predict`` does for bottleneck features: frozen
    BN uses its running statistics (as it does in a head phase anyway) and frozen dropout is
    off. The train/eval flags are restored afterwards."""
    flags = {module: module.training for module in model.modules()}
    model.eval()
    inputs, targets = dataset.tensors
    own = inputs[rank::world]
    features = torch.cat(
        [
            model.features(own[start : start + batch_size].to(device))
            for start in range(0, len(own), batch_size)
        ]
    )
    for module, training in flags.items():
        module.training = training
    if world > 1:
        features = _all_gather_interleaved(features, len(inputs), world)
    return TensorDataset(features.cpu(), targets)


def _all_gather_interleaved(own: torch.Tensor, total: int, world: int) -> torch.Tensor:
    """Undo the ``rank::world`` deal: rows padded to one length (NCCL and gloo gather equal
    shapes), gathered, and put back in dataset order."""
    per_worker = -(-total // world)
    padded = torch.zeros((per_worker, *own.shape[1:]), dtype=own.dtype, device=own.device)
    padded[: len(own)] = own
    gathered = [torch.empty_like(padded) for _ in range(world)]
    torch.distributed.all_gather(gathered, padded)
    out = torch.empty((total, *own.shape[1:]), dtype=own.dtype, device=own.device)
    for rank, rows in enumerate(gathered):
        out[rank::world] = rows[: len(range(rank, total, world))]
    return out


def _scores_line(metrics: dict[str, float]) -> str:
    keys = ("train_loss", "train_accuracy", "val_loss", "val_accuracy")
    short = {"train_accuracy": "train_acc", "val_accuracy": "val_acc"}
    return " ".join(f"{short.get(k, k)} {metrics[k]:.4f}" for k in keys if k in metrics)


def sync_batch_norm(model: GraftNet, device: torch.device, sync: bool) -> GraftNet:
    """With ``batch_norm.sync``, BN layers normalize with the statistics of the global batch
    (all workers') instead of each worker's shard. Torch implements SyncBatchNorm for GPUs
    only, so CPU workers keep per-worker statistics (said once in the log). The parameter and
    buffer names are unchanged, so checkpoints load into the plain model for export."""
    if not sync:
        return model
    if device.type != "cuda":
        log.warning(
            "batch_norm.sync: SyncBatchNorm runs on GPUs only; CPU workers normalize with "
            "their own batch statistics"
        )
        return model
    converted = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    assert isinstance(converted, GraftNet)  # only BN children are replaced
    return converted


def _quiet_per_report_logging() -> None:
    """Ray Train logs every report (all metrics, on every rank) at INFO under a logger named
    by its file path, which drowns the one-line-per-epoch progress; keep its warnings."""
    if os.environ.get("GRAFT_LOG_LEVEL", "").upper() == "DEBUG":
        return
    from ray.train.v2._internal.execution import context as train_context

    logging.getLogger(train_context.__file__).setLevel(logging.WARNING)


def _set_rng_state(state: dict[str, Any], generator: torch.Generator) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    generator.set_state(state["loader"])


def load_split_rows(path: str | io.BytesIO) -> TensorDataset:
    """A split's ``.npz`` (``x``, ``y``) as the float/long tensors the loop trains on."""
    with np.load(path) as archive:
        x = torch.from_numpy(archive["x"].astype(np.float32))
        y = torch.from_numpy(archive["y"].astype(np.int64))
    return TensorDataset(x, y)


@torch.no_grad()
def evaluate_model(
    model: GraftNet, dataset: TensorDataset, batch_size: int = 1024, objective: str = "classify"
) -> dict[str, float]:
    """Mean loss, and accuracy when the objective has labels to score.

    Batches are slices of the dataset's tensors in order, the batches a non-shuffling
    ``DataLoader`` would give without its per-example indexing and re-stacking (which cost
    about as much as the forward passes of a small model)."""
    model.eval()
    device = next(model.parameters()).device
    inputs, targets = dataset.tensors
    loss_sum, correct, count = 0.0, 0, 0
    for start in range(0, len(inputs), batch_size):
        xb = inputs[start : start + batch_size].to(device)
        yb = targets[start : start + batch_size].to(device)
        logits = model(xb)
        loss_sum += float(objective_loss(model, logits, xb, yb, objective, reduction="sum"))
        if objective == "classify":
            correct += int((logits.argmax(1) == yb).sum())
        count += len(yb)
    scores = {"loss": loss_sum / max(count, 1)}
    if objective == "classify":
        scores["accuracy"] = correct / max(count, 1)
    return scores


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
    inputs = request.open_inputs()
    if request.init_weights_path:
        weights = inputs[request.init_weights_path]
        model.load_state_dict(torch.load(weights, weights_only=True))
    # cuda:<local rank> on a GPU worker, else cpu; checkpoints are read onto the CPU first
    device = ray_torch.get_device()
    model.to(device)
    if world > 1 and spec.model_config.batch_norm.enabled:
        model = sync_batch_norm(model, device, spec.model_config.batch_norm.sync)
    train_set = load_split_rows(inputs[request.train_path])
    val_set = load_split_rows(inputs[request.val_path])
    del inputs
    phases = [PhaseConfig.model_validate(p) for p in request.phases]

    generator = torch.Generator().manual_seed(request.seed)
    state = LoopState()
    saved = None
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as ckpt_dir:
            saved = torch.load(Path(ckpt_dir) / STATE_FILE, weights_only=False, map_location="cpu")
        model.load_state_dict(saved["model"])
        state = LoopState(**saved["loop"])
        _set_rng_state(saved["rng"], generator)
        if state.phase_done:
            state = _next_phase(state)
            saved = None  # optimizer/schedule state belongs to the finished phase

    if rank == 0 and not progress.handlers:
        progress.addHandler(logging.StreamHandler(sys.stderr))
        progress.setLevel(logging.INFO)
        # Ray's worker logging also handles the root logger: propagating prints each line twice
        progress.propagate = False
    _quiet_per_report_logging()
    total_epochs = sum(p.epochs for p in phases)
    labelled = spec.objective == "classify"
    logger = None
    if rank == 0 and request.tracking_uri and request.mlflow_run_id:
        from graft.io.tracking import RunLogger

        logger = RunLogger(request.tracking_uri, request.mlflow_run_id)
        if checkpoint is not None:
            # the run's record of a restart (a lost worker or node, a retried task): where
            # training picked up, so an epoch logged twice has its explanation beside it
            logger.metrics({"resumed_from_epoch": float(state.global_epoch)}, state.global_epoch)
    checkpointer = _Checkpointer(rank)
    early = config.early_stopping
    plan = virtual_plan(config, len(train_set), world)
    if plan is not None and rank == 0:
        progress.info(
            "virtual epochs: %d steps x global batch %d (%d x %d workers) per checkpoint, %d "
            "checkpoints, %d examples",
            plan.steps_per_virtual_epoch,
            plan.global_batch,
            plan.per_worker_batch,
            plan.num_workers,
            plan.num_checkpoints,
            plan.examples_seen,
        )
    base_lr = worker_lr(config, world)
    schedule_config = scaled_schedule(config.schedule, lr_scale_factor(config, world))
    every = config.diagnostics.every_n_steps
    recorder = None
    if every and logger is not None and config.diagnostics.activations:
        recorder = ActivationRecorder(list(model.backbone))

    for phase_index in range(state.phase_index, len(phases)):
        phase = phases[phase_index]
        unfrozen = apply_phase(model, phase)
        lr = base_lr * phase.lr_scale
        trainable = [p for p in model.parameters() if p.requires_grad]
        optimizer = build_optimizer(trainable, config.optimizer, lr)
        cached = (
            isinstance(config, FinetuneConfig)
            and config.cache_bottleneck_features
            and phase.trainable == "head"
        )
        # the module this phase runs per batch: the head alone on cached trunk outputs
        trained: nn.Module = model.head if cached else model
        # examples the trunk ran on for training this epoch: the cost the cache saves
        trunk_examples = len(range(rank, len(train_set), world)) if cached else 0
        loader = DataLoader(
            bottleneck_features(model, train_set, device, rank, world) if cached else train_set,
            batch_size=config.batch_size,
            shuffle=True,
            generator=generator,
            # every virtual-epoch step is one full global batch: the budget is exact
            drop_last=plan is not None or len(train_set) > config.batch_size * world,
        )
        loader = ray_torch.prepare_data_loader(loader, move_to_device=False)
        schedule = build_schedule(
            optimizer,
            schedule_config,
            lr,
            steps_per_epoch=plan.steps_per_virtual_epoch if plan else max(1, len(loader)),
            total_epochs=phase.epochs,
        )
        if saved is not None:
            optimizer.load_state_dict(saved["optimizer"])
            schedule.load_state_dict(saved["schedule"])
            saved = None
        wrapped = ray_torch.prepare_model(trained, move_to_device=False) if world > 1 else trained
        cycling = cycling_batches(loader, state, generator) if plan is not None else None

        while state.epoch_in_phase < phase.epochs:
            if request.fail_at_epoch is not None and state.global_epoch == request.fail_at_epoch:
                marker = Path(request.train_path).parent / f".failed-{request.fail_at_epoch}"
                if not marker.exists():
                    marker.touch()
                    raise RuntimeError(f"injected worker failure at epoch {state.global_epoch}")
            batches: Any
            if cycling is not None and plan is not None:
                batches = itertools.islice(cycling, plan.steps_per_virtual_epoch)
            else:
                sampler: Any = getattr(loader, "sampler", None)
                if hasattr(sampler, "set_epoch"):
                    sampler.set_epoch(state.global_epoch)
                batches = loader
            set_train_mode(model, unfrozen if phase.trainable != "all" else None)
            # running sums stay tensors: a .item() per step would sync and cost a Python call
            loss_sum = torch.zeros((), device=device)
            correct = torch.zeros((), dtype=torch.int64, device=device)
            seen, grad_before, grad_after = 0, 0.0, 0.0
            epoch_steps = 0
            # the reported grad norms are the epoch's last step's: measure only there
            epoch_batches = plan.steps_per_virtual_epoch if plan is not None else len(loader)
            penalized = config.regularization.l1 > 0 or config.regularization.l2 > 0
            epoch_start, epoch_cpu_start = time.perf_counter(), time.thread_time()
            with cyclic_gc_paused():
                for xb, yb in batches:
                    xb, yb = xb.to(device, non_blocking=True), yb.to(device, non_blocking=True)
                    step = state.global_step + 1
                    diagnose = logger is not None and every > 0 and step % every == 0
                    capture: AbstractContextManager[Any] = (
                        recorder.capture()
                        if diagnose and recorder is not None and not cached
                        else nullcontext()
                    )
                    optimizer.zero_grad(set_to_none=True)
                    with capture:
                        logits = wrapped(xb)
                    loss = objective_loss(model, logits, xb, yb, spec.objective)
                    total = (
                        loss + kernel_penalty(model, config.regularization) if penalized else loss
                    )
                    total.backward()  # DDP has all-reduced the gradients when this returns
                    measure = diagnose or epoch_steps + 1 >= epoch_batches
                    before, after = clip_gradients(trainable, config.clip, measure=measure)
                    if measure:
                        grad_before, grad_after = before, after
                    if diagnose:  # the LR and momentum this step uses, before the schedule moves
                        step_lr, step_momentum = schedule.current_lr(), schedule.current_momentum()
                    optimizer.step()
                    if config.regularization.max_norm is not None:
                        apply_max_norm(model, config.regularization.max_norm)
                    if config.regularization.prune_below is not None:
                        prune_below(model, config.regularization.prune_below)
                    schedule.after_batch()
                    state.global_step = step
                    epoch_steps += 1
                    if diagnose and logger is not None:
                        values = step_diagnostics(grad_before, grad_after, step_lr, step_momentum)
                        values["diag.train_loss"] = loss.item()
                        if recorder is not None:
                            values.update(recorder.metrics())
                        logger.metrics(values, step=step)
                    loss_sum += loss.detach() * len(yb)
                    if labelled:
                        correct += (logits.detach().argmax(1) == yb).sum()
                    seen += len(yb)
            # the training steps alone (no validation, checkpoint or report): the throughput
            # figure bench/loop_throughput.py compares with a bare PyTorch loop; the CPU time
            # of this thread over the same steps tells "the loop did more work" from "the
            # machine was busy" (with one torch thread every op runs on this thread)
            epoch_seconds = time.perf_counter() - epoch_start
            epoch_cpu_seconds = time.thread_time() - epoch_cpu_start
            state.examples_seen += _global_sum(seen, world, device)
            val = evaluate_model(model, val_set, objective=spec.objective)
            schedule.after_epoch(val["loss"])
            state.epoch_in_phase += 1
            state.global_epoch += 1
            metrics = {
                "epoch": float(state.global_epoch),
                "phase": float(phase_index),
                "train_loss": float(loss_sum) / max(seen, 1),
                "val_loss": val["loss"],
                "lr": schedule.current_lr(),
                "grad_norm_before_clip": grad_before,
                "grad_norm_after_clip": grad_after,
                "steps": float(state.global_step),
                "epoch_steps": float(epoch_steps),
                "epoch_seconds": epoch_seconds,
                "epoch_cpu_seconds": epoch_cpu_seconds,
                "trunk_examples": float(trunk_examples if cached else seen),
                "examples_seen": float(state.examples_seen),
                "kernel_sparsity": kernel_sparsity(model),
            }
            if labelled:
                metrics["train_accuracy"] = int(correct) / max(seen, 1)
                metrics["val_accuracy"] = val["accuracy"]
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
                    "epoch %d/%d (phase %d: %s) %s lr %.2e%s",
                    state.global_epoch,
                    total_epochs,
                    phase_index,
                    phase.trainable,
                    _scores_line(metrics),
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
            trunk_examples = 0
            if phase_over:
                break
        state = _next_phase(state)
    if recorder is not None:
        recorder.remove()


def save_model_dir(model: GraftNet, spec: ModelSpec, directory: str | Path) -> Path:
    """Write a model folder that :func:`load_checkpoint_model` reads back."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), out / MODEL_FILE)
    spec.save(out / SPEC_FILE)
    return out


def load_checkpoint_model(checkpoint_dir: str | Path) -> tuple[GraftNet, ModelSpec]:
    directory = Path(checkpoint_dir)
    spec = ModelSpec.load(directory / SPEC_FILE)
    model = build_model(spec)
    # map_location: a GPU worker saved CUDA tensors; evaluate/export run on CPU pods
    model.load_state_dict(torch.load(directory / MODEL_FILE, weights_only=True, map_location="cpu"))
    return model, spec
