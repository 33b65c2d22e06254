"""The training recipe Ray Train runs on every DDP worker: setup, phases, epochs, checkpoints.

A fit is a list of phases, each with its own trainable set and learning rate (pretrain: one
phase training everything). A phase change rebuilds the optimizer and re-wraps DDP, since both
capture the trainable set. Every epoch checkpoints the full training state; a restarted run
continues from the latest one: same phase, epoch, LR sequence and RNG streams.

With ``budget.mode = virtual_epochs`` an "epoch" (report, checkpoint, early-stopping check) is
``steps_per_virtual_epoch`` steps from a loader cycling pass after pass (graft.train.budget);
the position inside the pass is checkpointed, so a resumed run draws the same batches.
``scale_lr_with_workers`` applies the linear scaling rule; ``diagnostics.every_n_steps`` logs
per-step diagnostics from rank 0. Each optimizer step is graft.train.step's.
"""

from __future__ import annotations

import copy
import itertools
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from graft.config import FinetuneConfig, PhaseConfig
from graft.nn.models import ModelSpec, build_model
from graft.nn.transfer import apply_phase, set_train_mode
from graft.train.augment import augmented_batches, epoch_generator
from graft.train.budget import lr_scale_factor, scaled_schedule, virtual_plan, worker_lr
from graft.train.diagnostics import ActivationRecorder
from graft.train.epoch import EpochTotals, StepDiagnostics, train_epoch_steps
from graft.train.fault_injection import inject_test_failure
from graft.train.loop_session import LoopSession, RayTrainSession
from graft.train.loop_state import (
    LoopState,
    cycling_batches,
    next_phase,
    set_rng_state,
    training_state,
)
from graft.train.optimizers import build_optimizer
from graft.train.regularizers import kernel_sparsity
from graft.train.request import FitRequest, LocalInputs, ShippedInputs
from graft.train.rows import evaluate_model, load_split_rows, shuffled_batches
from graft.train.schedules import LRSchedule, build_schedule
from graft.train.step import StepRules, StepTarget, objective_of
from graft.train.stream_data import StreamedSplit, WorkerStreams
from graft.train.workers import (
    bottleneck_features,
    channels_last_on_cpu,
    global_sum,
    quiet_per_report_logging,
    seed_everything,
    show_progress_on_rank_zero,
    sync_batch_norm,
    worker_torch_threads,
)

if TYPE_CHECKING:
    from graft.io.tracking import RunLogger

progress = logging.getLogger("graft.progress")


def worker_payload(request: FitRequest, inputs: ShippedInputs) -> dict[str, Any]:
    """What TorchTrainer hands every worker: the request as its JSON, and its input files."""
    return {"request_json": request.model_dump_json(), "inputs": inputs}


def train_loop_per_worker(payload: dict[str, Any]) -> None:
    request = FitRequest.model_validate_json(payload["request_json"])
    WorkerFit(request, payload["inputs"]).run()


def _improved(metric: float, best: float | None, monitor: str, min_delta: float) -> bool:
    if best is None:
        return True
    if monitor == "val_loss":
        return metric < best - min_delta
    return metric > best + min_delta


def _scores_line(metrics: dict[str, float]) -> str:
    keys = ("train_loss", "train_accuracy", "val_loss", "val_accuracy")
    short = {"train_accuracy": "train_acc", "val_accuracy": "val_acc"}
    return " ".join(f"{short.get(k, k)} {metrics[k]:.4f}" for k in keys if k in metrics)


@dataclass
class PhaseRun:
    """One phase's optimizer, schedule, loader and step target (rebuilt per phase)."""

    index: int
    phase: PhaseConfig
    unfrozen: Any
    target: StepTarget
    schedule: LRSchedule
    loader: DataLoader[Any] | StreamedSplit
    cycling: Iterator[Any] | None
    cached: bool
    trunk_examples: int  # examples the trunk ran on for training this epoch (the cache's cost)


class WorkerFit:
    """One worker's share of a fit: the setup, then phase after phase, epoch after epoch."""

    def __init__(
        self,
        request: FitRequest,
        inputs: ShippedInputs | LocalInputs,
        session: LoopSession | None = None,
    ) -> None:
        # a Ray Train worker's by default; a LocalSession trains in this process alone
        self.session = session = session or RayTrainSession()
        self.request = request
        self.config = config = request.train_config
        self.rank, self.world = session.rank, session.world
        worker_torch_threads()
        seed_everything(request.seed, config.deterministic)
        self.spec = spec = ModelSpec.from_json(request.spec_json)
        self.model = build_model(spec)
        files = inputs.open()
        if request.init_weights_path:
            weights = files[request.init_weights_path]
            self.model.load_state_dict(torch.load(weights, weights_only=True))
        # checkpoints are read onto the CPU first
        self.device = session.device()
        self.model.to(self.device)
        channels_last_on_cpu(self.model, self.device)
        if self.world > 1 and spec.model_config.batch_norm.enabled:
            self.model = sync_batch_norm(self.model, self.device, spec.model_config.batch_norm.sync)
        # data.loader: streaming reads Ray Data shards; else the splits are loaded whole
        self.streams = WorkerStreams.of(request, self.world)
        if self.streams is None:
            self.train_set = load_split_rows(files[request.train_path])
            self.val_set = load_split_rows(files[request.val_path])
        del files
        self.generator = torch.Generator().manual_seed(request.seed)
        self.state = LoopState()
        self.saved: dict[str, Any] | None = None
        resumed = self._restore_checkpoint()
        show_progress_on_rank_zero(self.rank)
        quiet_per_report_logging()
        self.total_epochs = sum(p.epochs for p in request.phases)
        self.labelled = spec.objective == "classify"
        self.logger = self._run_logger(resumed)
        train_rows = len(self.train_set) if self.streams is None else self.streams.train_rows
        self.plan = virtual_plan(config, train_rows, self.world)
        self._log_plan()
        self.base_lr = worker_lr(config, self.world)
        self.schedule_config = scaled_schedule(config.schedule, lr_scale_factor(config, self.world))
        self.diagnostics = self._step_diagnostics()

    def _restore_checkpoint(self) -> bool:
        """Continue from the session's latest checkpoint, if this is a restart."""
        saved = self.session.saved_state()
        if saved is None:
            return False
        self.model.load_state_dict(saved["model"])
        self.state = LoopState(**saved["loop"])
        set_rng_state(saved["rng"], self.generator)
        self.saved = saved
        if self.state.phase_done:
            self.state = next_phase(self.state)
            self.saved = None  # optimizer/schedule state belongs to the finished phase
        return True

    def _run_logger(self, resumed: bool) -> RunLogger | None:
        request = self.request
        if self.rank != 0 or not request.tracking_uri or not request.mlflow_run_id:
            return None
        from graft.io import tracking

        logger = tracking.RunLogger(request.tracking_uri, request.mlflow_run_id)
        if resumed:
            # the run's record of a restart (a lost worker or node, a retried task): where
            # training picked up, so an epoch logged twice has its explanation beside it
            epoch = self.state.global_epoch
            logger.metrics({"resumed_from_epoch": float(epoch)}, epoch)
        return logger

    def _log_plan(self) -> None:
        plan = self.plan
        if plan is None or self.rank != 0:
            return
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

    def _step_diagnostics(self) -> StepDiagnostics | None:
        if self.logger is None:
            return None
        settings = self.config.diagnostics
        recorder = None
        if settings.every_n_steps and settings.activations:
            recorder = ActivationRecorder(list(self.model.backbone))
        return StepDiagnostics(self.logger, settings.every_n_steps, recorder)

    def run(self) -> None:
        for index in range(self.state.phase_index, len(self.request.phases)):
            run = self._start_phase(index)
            while self.state.epoch_in_phase < run.phase.epochs:
                inject_test_failure(
                    self.request.fail_at_epoch,
                    self.state.global_epoch,
                    Path(self.request.train_path).parent,
                )
                if self._run_epoch(run):
                    break
            self.state = next_phase(self.state)
        if self.diagnostics is not None and self.diagnostics.recorder is not None:
            self.diagnostics.recorder.remove()

    def _start_phase(self, index: int) -> PhaseRun:
        """The phase's trainable set, optimizer, loader, schedule and DDP wrapper."""
        config, model, plan = self.config, self.model, self.plan
        phase = self.request.phases[index]
        unfrozen = apply_phase(model, phase)
        lr = self.base_lr * phase.lr_scale
        trainable = [p for p in model.parameters() if p.requires_grad]
        optimizer = build_optimizer(trainable, config.optimizer, lr)
        cached = (
            isinstance(config, FinetuneConfig)
            and config.cache_bottleneck_features
            and phase.trainable == "head"
            and self.streams is None  # a stream is never held whole, so nothing is cached
        )
        # the module this phase runs per batch: the head alone on cached trunk outputs
        trained: nn.Module = model.head if cached else model
        loader = self.streams.train if self.streams is not None else self._memory_loader(cached)
        schedule = build_schedule(
            optimizer,
            self.schedule_config,
            lr,
            steps_per_epoch=plan.steps_per_virtual_epoch if plan else max(1, len(loader)),
            total_epochs=phase.epochs,
        )
        if self.saved is not None:
            optimizer.load_state_dict(self.saved["optimizer"])
            schedule.load_state_dict(self.saved["schedule"])
            self.saved = None
        wrapped = self.session.prepare_model(trained) if self.world > 1 else trained
        objective = objective_of(model, self.spec.objective)
        target = StepTarget(model, wrapped, optimizer, trainable, objective, StepRules.of(config))
        if self.diagnostics is not None:
            self.diagnostics.capture_forward = not cached
        return PhaseRun(
            index=index,
            phase=phase,
            unfrozen=unfrozen,
            target=target,
            schedule=schedule,
            loader=loader,
            cycling=cycling_batches(loader, self.state, self.generator)
            if plan and isinstance(loader, DataLoader)
            else None,
            cached=cached,
            trunk_examples=len(range(self.rank, len(self.train_set), self.world)) if cached else 0,
        )

    def _memory_loader(self, cached: bool) -> DataLoader[Any]:
        """The in-memory split's loader (of the trunk's outputs when ``cached``)."""
        rows = self.train_set
        trained = (
            bottleneck_features(self.model, rows, self.device, self.rank, self.world)
            if cached
            else rows
        )
        # every virtual-epoch step is one full global batch: the budget is exact
        drop_last = self.plan is not None or len(rows) > self.config.batch_size * self.world
        if self.world == 1:  # the same batches, gathered a batch at a time
            return shuffled_batches(trained, self.config.batch_size, self.generator, drop_last)
        loader = DataLoader(
            trained,
            batch_size=self.config.batch_size,
            shuffle=True,
            generator=self.generator,
            drop_last=drop_last,
        )
        return self.session.prepare_loader(loader)

    def _run_epoch(self, run: PhaseRun) -> bool:
        """Train, validate, report and checkpoint one epoch; True when the phase is over."""
        state, plan = self.state, self.plan
        batches: Any
        if run.cycling is not None and plan is not None:
            batches = itertools.islice(run.cycling, plan.steps_per_virtual_epoch)
        else:
            # a DataLoader's sampler, or a stream (which reseeds its shuffle buffer)
            sampler: Any = getattr(run.loader, "sampler", run.loader)
            if hasattr(sampler, "set_epoch"):
                sampler.set_epoch(state.global_epoch)
            batches = run.loader
        augment = self.request.augment
        if augment is not None and not run.cached:  # cached trunk outputs are not images
            draws = epoch_generator(self.request.seed, self.rank, state.global_epoch)
            batches = augmented_batches(batches, augment, draws)
        set_train_mode(self.model, run.unfrozen if run.phase.trainable != "all" else None)
        epoch_start, epoch_cpu_start = time.perf_counter(), time.thread_time()
        totals = train_epoch_steps(
            run.target,
            run.schedule,
            batches,
            state,
            self.device,
            epoch_batches=plan.steps_per_virtual_epoch if plan is not None else len(run.loader),
            labelled=self.labelled,
            diagnostics=self.diagnostics,
        )
        # the training steps alone (no validation, checkpoint or report): the throughput
        # figure bench/loop_throughput.py compares with a bare PyTorch loop; the CPU time
        # of this thread over the same steps tells "the loop did more work" from "the
        # machine was busy" (with one torch thread every op runs on this thread)
        timing = (time.perf_counter() - epoch_start, time.thread_time() - epoch_cpu_start)
        state.examples_seen += global_sum(totals.seen, self.world, self.device)
        # validation batches of the training batch's size, as Keras' validation_batch_size
        # defaults: a batch that trains fits in memory, and larger batches run a CNN's
        # forward pass slower on CPU (1,024 rows took 1.9x as long per row as 64-128 on the
        # default CNN: bench/loop_throughput.py, docs/benchmarks.md)
        val = (
            evaluate_model(
                self.model,
                self.val_set,
                batch_size=self.config.batch_size,
                objective=self.spec.objective,
            )
            if self.streams is None
            else self.streams.evaluate(self.model, self.spec.objective, self.device)
        )
        run.schedule.after_epoch(val["loss"])
        state.epoch_in_phase += 1
        state.global_epoch += 1
        metrics = self._epoch_metrics(run, totals, val, timing)
        stop, phase_over = self._early_stopping(metrics, run.phase)
        state.history.append(metrics)
        self._log_epoch(run, metrics, stop)
        self._checkpoint(run, metrics, stop, phase_over)
        run.trunk_examples = 0
        return phase_over

    def _epoch_metrics(
        self,
        run: PhaseRun,
        totals: EpochTotals,
        val: dict[str, float],
        timing: tuple[float, float],
    ) -> dict[str, float]:
        state, seen = self.state, totals.seen
        metrics = {
            "epoch": float(state.global_epoch),
            "phase": float(run.index),
            "train_loss": float(totals.loss_sum) / max(seen, 1),
            "val_loss": val["loss"],
            "lr": run.schedule.current_lr(),
            "grad_norm_before_clip": totals.grad_before,
            "grad_norm_after_clip": totals.grad_after,
            "steps": float(state.global_step),
            "epoch_steps": float(totals.steps),
            "epoch_seconds": timing[0],
            "epoch_cpu_seconds": timing[1],
            "trunk_examples": float(run.trunk_examples if run.cached else seen),
            "examples_seen": float(state.examples_seen),
            "kernel_sparsity": kernel_sparsity(self.model),
        }
        if self.labelled:
            metrics["train_accuracy"] = int(totals.correct) / max(seen, 1)
            metrics["val_accuracy"] = val["accuracy"]
        return metrics

    def _early_stopping(self, metrics: dict[str, float], phase: PhaseConfig) -> tuple[bool, bool]:
        """Track the best epoch; (stop early, phase over). A phase that ends restores its
        best weights when ``early_stopping.restore_best`` says so."""
        early, state = self.config.early_stopping, self.state
        monitored = metrics[early.monitor]
        if _improved(monitored, state.best_metric, early.monitor, early.min_delta):
            state.best_metric, state.wait = monitored, 0
            if early.restore_best:
                state.best_state = copy.deepcopy(self.model.state_dict())
        else:
            state.wait += 1
        stop = early.enabled and state.wait >= early.patience
        phase_over = stop or state.epoch_in_phase >= phase.epochs
        if phase_over and early.restore_best and state.best_state is not None:
            self.model.load_state_dict(state.best_state)
        state.phase_done = phase_over
        return stop, phase_over

    def _log_epoch(self, run: PhaseRun, metrics: dict[str, float], stop: bool) -> None:
        if self.rank == 0:
            progress.info(
                "epoch %d/%d (phase %d: %s) %s lr %.2e%s",
                self.state.global_epoch,
                self.total_epochs,
                run.index,
                run.phase.trainable,
                _scores_line(metrics),
                metrics["lr"],
                " (early stop)" if stop else "",
            )
        if self.logger is not None:
            self.logger.metrics(metrics, step=self.state.global_epoch)

    def _checkpoint(
        self, run: PhaseRun, metrics: dict[str, float], stop: bool, phase_over: bool
    ) -> None:
        payload = None
        if self.rank == 0:
            payload = training_state(
                self.model,
                run.target.optimizer,
                run.schedule.state_dict(),
                self.state,
                self.generator,
                self.request.spec_json,
            )
        # fit_complete tells a scheduler's cut (no final report) from a finished fit
        fit_complete = phase_over and run.index == len(self.request.phases) - 1
        self.session.report(
            {**metrics, "stopped_early": float(stop), "fit_complete": float(fit_complete)},
            payload,
        )
