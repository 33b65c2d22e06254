"""The ``pretrain`` and ``finetune`` blocks: optimizer, schedule, regularisation, budgets."""

from __future__ import annotations

import logging
from typing import Literal

from pydantic import Field, model_validator

from graft.config.base import Strict

config_logger = logging.getLogger(__name__)

# The preflight ("useful overfitting", graft.train.in_process): Adam at this LR on the first
# PREFLIGHT_BATCH training rows for PREFLIGHT_STEPS steps must bring the loss below
# PREFLIGHT_REQUIRED_DROP x its first value, else the wiring is broken.
PREFLIGHT_BATCH = 16
PREFLIGHT_STEPS = 200
PREFLIGHT_LR = 3e-3
PREFLIGHT_REQUIRED_DROP = 0.1
# Ray Train V2 retries controller errors (a worker group that cannot start) forever by
# default: a starved trial would hang the whole tune stage. A fit gives up after this many.
TRAIN_CONTROLLER_FAILURE_LIMIT = 2

# ----------------------------------------------------------------------------- training

OptimizerName = Literal[
    "sgd", "momentum", "nag", "adagrad", "rmsprop", "adam", "adamax", "nadam", "adamw"
]


class OptimizerConfig(Strict):
    name: OptimizerName = "adamw"
    lr: float = Field(default=1e-3, gt=0.0)
    momentum: float = Field(default=0.9, ge=0.0, lt=1.0)
    rho: float = Field(
        default=0.9, gt=0.0, lt=1.0, description="RMSProp decay (book 0.9; torch alpha 0.99)"
    )
    beta1: float = Field(default=0.9, gt=0.0, lt=1.0)
    beta2: float = Field(default=0.999, gt=0.0, lt=1.0)
    eps: float = Field(default=1e-7, gt=0.0, description="Keras epsilon")
    weight_decay: float = Field(default=0.0, ge=0.0, description="decoupled decay (adamw)")

    @model_validator(mode="after")
    def _knobs_the_optimizer_uses(self) -> OptimizerConfig:
        if self.weight_decay > 0 and self.name != "adamw":
            raise ValueError(
                f"optimizer.weight_decay={self.weight_decay} is only applied by 'adamw' "
                f"(decoupled decay); with '{self.name}' use optimizer.name=adamw, or set "
                "optimizer.weight_decay=0 and use regularization.l2 for an L2 penalty on the "
                "kernels"
            )
        if self.name in ("momentum", "nag") and self.momentum <= 0:
            raise ValueError(
                f"optimizer '{self.name}' needs optimizer.momentum > 0 (got {self.momentum}); "
                "set it (the book uses 0.9) or use optimizer.name=sgd"
            )
        return self


class ScheduleConfig(Strict):
    name: Literal["constant", "power", "exponential", "piecewise", "plateau", "one_cycle"] = (
        "constant"
    )
    granularity: Literal["epoch", "step"] = "epoch"
    decay_steps: float = Field(default=10.0, gt=0.0, description="s in power/exponential")
    power: float = Field(default=1.0, gt=0.0, description="c in lr0/(1+t/s)^c")
    boundaries: list[int] = Field(default_factory=list, description="piecewise boundaries")
    values: list[float] = Field(default_factory=list, description="piecewise lrs")
    plateau_factor: float = Field(default=0.5, gt=0.0, lt=1.0)
    plateau_patience: int = Field(default=5, ge=1, description="epochs WITHOUT improvement")
    one_cycle_max_lr: float | None = Field(default=None, description="None = optimizer.lr")
    one_cycle_start_div: float = 10.0
    one_cycle_final_div: float = 1000.0
    one_cycle_momentum: tuple[float, float] = Field(
        default=(0.95, 0.85), description="(high, low): momentum/beta1 at the ends, at the peak"
    )

    @model_validator(mode="after")
    def _schedule_tables_are_consistent(self) -> ScheduleConfig:
        if self.name == "piecewise":
            if len(self.values) != len(self.boundaries) + 1:
                raise ValueError(
                    "schedule.values needs one more entry than schedule.boundaries (got "
                    f"{len(self.values)} values for {len(self.boundaries)} boundaries); e.g. "
                    "boundaries [5, 15] with values [0.01, 0.005, 0.001]"
                )
            if any(v <= 0 for v in self.values):
                raise ValueError(f"schedule.values must all be > 0, got {self.values}")
            increasing = all(
                b1 < b2 for b1, b2 in zip(self.boundaries, self.boundaries[1:], strict=False)
            )
            if any(b <= 0 for b in self.boundaries) or not increasing:
                raise ValueError(
                    "schedule.boundaries must be positive and strictly increasing, got "
                    f"{self.boundaries}; e.g. [5, 15]"
                )
        high, low = self.one_cycle_momentum
        if not (0.0 <= low <= high < 1.0):
            raise ValueError(
                f"schedule.one_cycle_momentum must be (high, low) with 0 <= low <= high < 1, got "
                f"{list(self.one_cycle_momentum)}; the book uses [0.95, 0.85]"
            )
        if self.one_cycle_max_lr is not None and self.one_cycle_max_lr <= 0:
            raise ValueError(
                f"schedule.one_cycle_max_lr must be > 0 (got {self.one_cycle_max_lr}); set it "
                "from the LR finder's suggestion, or null to use optimizer.lr"
            )
        return self


class ClipConfig(Strict):
    mode: Literal["none", "value", "norm_per_param", "global_norm"] = "none"
    threshold: float = Field(default=1.0, gt=0.0)


class RegularizationConfig(Strict):
    l1: float = Field(default=0.0, ge=0.0, description="penalty l1*sum|w| on kernels only")
    l2: float = Field(default=0.0, ge=0.0, description="penalty l2*sum w^2 on kernels only")
    max_norm: float | None = Field(default=None, gt=0.0, description="per-neuron row norm cap")
    prune_below: float | None = Field(
        default=None,
        gt=0.0,
        description="after every step, zero the kernel weights with |w| below this (sparsity)",
    )


class EarlyStoppingConfig(Strict):
    enabled: bool = True
    monitor: Literal["val_loss", "val_accuracy"] = "val_loss"
    patience: int = Field(default=3, ge=1)
    min_delta: float = Field(default=0.0, ge=0.0)
    restore_best: bool = True


class CheckpointConfig(Strict):
    num_to_keep: int = Field(default=2, ge=1)
    max_failures: int = Field(default=2, ge=0, description="worker-group restarts from ckpt")


class DiagnosticsConfig(Strict):
    """Training diagnostics logged to MLflow by rank 0 (graft.train.diagnostics)."""

    every_n_steps: int = Field(
        default=0,
        ge=0,
        description="log per-block activation mean/std, dead-ReLU fraction, gradient norms "
        "before/after clipping, LR and momentum every N optimizer steps (0 = off)",
    )
    activations: bool = Field(
        default=True, description="include per-block activation stats (forward hooks)"
    )


class BudgetConfig(Strict):
    """How long a fit trains: whole epochs, or a fixed example budget cut into virtual epochs
    (ML Design Patterns' checkpoint pattern; graft.train.budget has the arithmetic)."""

    mode: Literal["epochs", "virtual_epochs"] = Field(
        default="epochs",
        description="epochs: `epochs` passes over the data | virtual_epochs: stop_point x "
        "num_examples examples in num_checkpoints virtual epochs (then `epochs` is ignored; a "
        "finetune's phase epochs count virtual epochs and must sum to num_checkpoints)",
    )
    stop_point: float = Field(
        default=1.0, gt=0.0, description="passes over the training data the run is worth"
    )
    num_checkpoints: int = Field(
        default=5, ge=1, description="virtual epochs: report + checkpoint + early-stop check"
    )


class WorkerResources(Strict):
    """What one Ray Train worker reserves. ``gpus > 0`` trains on CUDA with NCCL (one process
    per GPU); fractions pack several workers on a GPU or CPU."""

    cpus: float = Field(default=1.0, gt=0)
    gpus: float = Field(default=0.0, ge=0)

    def ray_resources(self, cpu_discount: float = 0.0) -> dict[str, float]:
        """Ray's ``resources_per_worker``; ``cpu_discount`` is CPU the caller holds already
        (a tune trial's own actor), taken off so a trial costs exactly what it says."""
        resources = {"CPU": max(self.cpus - cpu_discount, self.cpus / 100)}
        if self.gpus:
            resources["GPU"] = self.gpus
        return resources


Objective = Literal["classify", "autoencoder"]
Precision = Literal["fp32", "bf16", "fp16"]


class TrainConfig(Strict):
    objective: Objective = Field(
        default="classify",
        description="pretrain only: autoencoder learns the backbone as an MLP encoder by "
        "reconstructing the standardized inputs (no labels used); finetune reuses the encoder",
    )
    epochs: int = Field(default=5, ge=1)
    batch_size: int = Field(default=64, ge=1, description="per worker")
    num_workers: int = Field(default=2, ge=1, description="Ray Train DDP workers")
    runner: Literal["auto", "in_process", "ray_train"] = Field(
        default="auto",
        description="where the stage's fit trains: in_process runs the training loop in the "
        "stage's own process (one worker, no Ray to join and no worker process to start; the "
        "same loop, seeds and checkpoints, so the same weights; a failure restarts it from "
        "its checkpoint up to checkpoint.max_failures times) | ray_train runs a Ray Train "
        "fit of num_workers DDP workers (10-25 s to start on 2 cores) | auto picks in_process "
        "for one CPU worker with data.loader=memory on local storage in a stage that runs "
        "here (not sent to a cluster by ray.submit=job or ray.mode=rayjob), else ray_train",
    )
    resources: WorkerResources = Field(
        default_factory=WorkerResources,
        description="per worker; a tune trial is a finetune fit, so finetune.resources x "
        "tune.workers_per_trial is what one trial reserves",
    )
    deterministic: bool = True
    optimizer: OptimizerConfig = Field(default_factory=OptimizerConfig)
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig)
    clip: ClipConfig = Field(default_factory=ClipConfig)
    regularization: RegularizationConfig = Field(default_factory=RegularizationConfig)
    early_stopping: EarlyStoppingConfig = Field(default_factory=EarlyStoppingConfig)
    checkpoint: CheckpointConfig = Field(default_factory=CheckpointConfig)
    preflight_overfit_batch: bool = Field(
        default=True, description="overfit one batch on one process before the distributed fit"
    )
    budget: BudgetConfig = Field(default_factory=BudgetConfig)
    diagnostics: DiagnosticsConfig = Field(default_factory=DiagnosticsConfig)
    precision: Precision = Field(
        default="fp32",
        description="the training step's forward and loss under torch.autocast (weights, "
        "evaluation and export stay fp32); bf16 runs on CPU and GPU, fp16 needs CUDA "
        "(resources.gpus > 0) and trains with a GradScaler",
    )
    scale_lr_with_workers: bool = Field(
        default=False,
        description="linear scaling rule: LR (and 1cycle peak, piecewise values) x num_workers, "
        "the reference batch being one worker's batch_size",
    )

    @model_validator(mode="after")
    def _in_process_is_one_worker(self) -> TrainConfig:
        if self.runner == "in_process" and (self.num_workers > 1 or self.resources.gpus > 0):
            raise ValueError(
                f"runner=in_process trains one CPU worker in the stage's process, but "
                f"num_workers={self.num_workers} and resources.gpus={self.resources.gpus:g}: "
                "set runner=auto (or ray_train) for DDP or GPU fits, or num_workers=1 and "
                "resources.gpus=0"
            )
        return self

    @model_validator(mode="after")
    def _fp16_has_a_gpu(self) -> TrainConfig:
        if self.precision == "fp16" and self.resources.gpus == 0:
            raise ValueError(
                "precision=fp16 needs CUDA (autocast fp16 is GPU-only in practice) but "
                "resources.gpus=0 trains on CPU; use precision=bf16 on CPU, or set "
                "resources.gpus >= 1"
            )
        return self

    @model_validator(mode="after")
    def _plateau_can_act_before_early_stopping(self) -> TrainConfig:
        stopping = self.early_stopping
        if (
            self.schedule.name == "plateau"
            and stopping.enabled
            and stopping.monitor == "val_loss"
            and self.schedule.plateau_patience >= stopping.patience
        ):
            config_logger.warning(
                "schedule.plateau_patience=%d >= early_stopping.patience=%d: early stopping ends "
                "the run before the plateau schedule ever lowers the LR; set "
                "schedule.plateau_patience below early_stopping.patience",
                self.schedule.plateau_patience,
                stopping.patience,
            )
        return self


Trainable = Literal["head", "top_k", "all"]


class PhaseConfig(Strict):
    trainable: Trainable
    epochs: int = Field(ge=1)
    lr_scale: float = Field(
        default=1.0, gt=0.0, description="phase LR = lr_scale * finetune.optimizer.lr"
    )
    top_k: int = Field(default=1, ge=1, description="backbone blocks unfrozen when top_k")


class FinetuneConfig(TrainConfig):
    reuse_blocks: int | None = Field(
        default=None, ge=1, description="reuse the first k backbone blocks (None = all)"
    )
    phases: list[PhaseConfig] = Field(
        default_factory=lambda: [
            PhaseConfig(trainable="head", epochs=4),
            PhaseConfig(trainable="all", epochs=6, lr_scale=0.1),
        ]
    )
    warm_start_from_champion: bool = Field(
        default=False,
        description="start from models:/<export.model_name>@champion when one exists and its "
        "architecture matches (the retraining loop); else from the pretrained backbone",
    )
    cache_bottleneck_features: bool = Field(
        default=False,
        description="head-only phases: run the frozen trunk once per training example (in "
        "inference mode, so frozen dropout is off) and train the head on the cached features",
    )

    @model_validator(mode="after")
    def _phases_drive_epochs(self) -> FinetuneConfig:
        if not self.phases:
            raise ValueError("finetune.phases needs at least one phase")
        if self.objective != "classify":
            raise ValueError(
                "finetune.objective must be classify: the target task has labels; "
                "autoencoder is a pretrain objective"
            )
        return self
