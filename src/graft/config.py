"""The one schema of Graft: every stage's settings and every default live here.

A run's configuration is a preset YAML (``graft/configs/<name>.yaml``) or a user YAML laid over
these defaults, then ``--set a.b=c`` overrides. The resolved model is what stages receive, what
KFP carries as a pipeline parameter (JSON), and what MLflow records.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from graft.errors import ConfigError
from graft.presets import TRAINING_PRESETS

config_logger = logging.getLogger(__name__)

# MLflow's own variable: honoured when the config names no tracking server.
TRACKING_URI_ENV = "MLFLOW_TRACKING_URI"
# URIs of a tracking server, which pods on other machines reach; anything else is a file
REMOTE_TRACKING_SCHEMES = ("http://", "https://", "databricks")


class Strict(BaseModel):
    """Base for every config block: unknown keys are errors, so typos never pass silently."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


# ----------------------------------------------------------------------------- data

SplitStrategy = Literal["stratified", "random", "time", "group", "sequential"]
NearDuplicatePolicy = Literal["drop", "keep_together", "error"]


class TransferTaskConfig(Strict):
    """The book's A/B protocol: task A (source) on most classes, task B (target) on the rest.

    ``target_classes`` empty means no class split: source and target are the same task.
    """

    target_classes: list[int] = Field(
        default_factory=list, description="original labels forming the target task B"
    )
    target_train_size: int | None = Field(
        default=None, ge=2, description="labelled target examples for finetuning (None = all)"
    )


class DataConfig(Strict):
    source: str = Field(
        default="builtin:fashion_mnist",
        description="builtin:digits | builtin:fashion_mnist | a local .npz/.parquet path | s3://",
    )
    label_column: str = "label"
    max_rows: int | None = Field(default=None, ge=10, description="stratified subsample cap")
    val_fraction: float = Field(default=0.1, gt=0.0, lt=0.5)
    test_fraction: float = Field(default=0.15, gt=0.0, lt=0.5)
    split: SplitStrategy = Field(
        default="stratified",
        description="stratified | random | time (by time_column, oldest rows train) | group "
        "(by group_column, an entity never spans two splits) | sequential (file order cut)",
    )
    time_column: str | None = Field(
        default=None,
        description="Parquet column of timestamps (an .npz declares one with a 't' array)",
    )
    time_gap: float = Field(
        default=0.0,
        ge=0.0,
        description="split: time embargo between consecutive splits, in the time column's "
        "units (seconds for datetime columns); rows inside the gap are dropped",
    )
    allow_shuffled_time: bool = Field(
        default=False,
        description="permit a random/stratified split of data that declares a time column",
    )
    group_column: str | None = Field(
        default=None,
        description="Parquet column of entity ids (an .npz declares them with a 'groups' array)",
    )
    normalize: Literal["standardize", "minmax", "divide_by_255", "none"] = Field(
        default="standardize", description="input scaling, fitted on the train split only"
    )
    missing_values: Literal["error", "fill_median"] = Field(
        default="error",
        description="tabular NaNs: refuse them, or fill with the train median and add a "
        "0/1 indicator column per column that has gaps in train",
    )
    near_duplicate_threshold: float = Field(
        default=0.99,
        gt=0.0,
        le=1.0,
        description="similarity (cosine that also requires equal length) of train-standardized "
        "features at or above which a val/test row counts as a near duplicate of an earlier "
        "split's row; tables with fewer than 8 features are not checked",
    )
    near_duplicate_policy: NearDuplicatePolicy = Field(
        default="drop",
        description="drop the val/test copy | keep_together (move it to train) | error",
    )
    leakage_threshold: float = Field(
        default=0.98,
        gt=0.5,
        le=1.0,
        description="val balanced accuracy of a one-feature classifier that flags leakage",
    )
    leakage_policy: Literal["warn", "error"] = "warn"
    max_imbalance_ratio: float = Field(
        default=9.0, gt=1.0, description="largest/smallest class count that triggers a warning"
    )
    transfer: TransferTaskConfig = Field(default_factory=TransferTaskConfig)

    @model_validator(mode="after")
    def _split_settings_agree(self) -> DataConfig:
        if self.split in ("time", "group") and self.near_duplicate_policy == "keep_together":
            raise ValueError(
                f"near_duplicate_policy 'keep_together' moves rows into train, which breaks a "
                f"'{self.split}' split; use 'drop' or 'error'"
            )
        if self.time_gap and self.split != "time":
            raise ValueError("data.time_gap applies only to split: time")
        return self


# ----------------------------------------------------------------------------- model

InitScheme = Literal[
    "auto",
    "glorot_uniform",
    "glorot_normal",
    "he_uniform",
    "he_normal",
    "he_avg_uniform",
    "lecun_uniform",
    "lecun_normal",
    "torch_default",
]
ActivationName = Literal[
    "relu",
    "leaky_relu",
    "rrelu",
    "prelu",
    "elu",
    "selu",
    "gelu",
    "gelu_tanh",
    "gelu_sigmoid",
    "silu",
    "swish",
    "mish",
    "tanh",
    "sigmoid",
]


class ActivationConfig(Strict):
    name: ActivationName = "relu"
    negative_slope: float = Field(default=0.2, description="leaky_relu slope (paper's best)")
    rrelu_lower: float = 1.0 / 8.0
    rrelu_upper: float = 1.0 / 3.0
    prelu_init: float = 0.25
    elu_alpha: float = 1.0
    swish_beta: float = 1.0
    swish_beta_trainable: bool = False


class BatchNormConfig(Strict):
    enabled: bool = False
    placement: Literal["before_activation", "after_activation"] = "before_activation"
    ema_decay: float = Field(
        default=0.99, gt=0.0, lt=1.0, description="Keras meaning: weight on the OLD average"
    )
    eps: float = Field(default=1e-3, gt=0.0)
    sync: bool = Field(default=True, description="SyncBatchNorm when training with >1 worker")


class DropoutConfig(Strict):
    kind: Literal["standard", "alpha"] = "standard"
    rate: float = Field(default=0.0, ge=0.0, lt=1.0, description="hidden-layer dropout")
    input_rate: float = Field(default=0.0, ge=0.0, lt=1.0, description="dropout on the input")


_SELF_NORMALIZING_FIX = (
    "the self-normalizing recipe is SELU + LeCun init + standardized inputs + a plain MLP, no "
    "batch norm, no L1/L2, no max-norm, alpha dropout only (training_preset=self_normalizing); "
    "otherwise use another activation (training_preset=default_shallow or default_deep)"
)


class ModelConfig(Strict):
    family: Literal["mlp", "cnn"] = "mlp"
    hidden_sizes: list[Annotated[int, Field(gt=0)]] = Field(default_factory=lambda: [300, 100])
    conv_channels: list[Annotated[int, Field(gt=0)]] = Field(
        default_factory=lambda: [32, 64], description="cnn only: channels per conv block"
    )
    activation: ActivationConfig = Field(default_factory=ActivationConfig)
    init: InitScheme = "auto"
    batch_norm: BatchNormConfig = Field(default_factory=BatchNormConfig)
    dropout: DropoutConfig = Field(default_factory=DropoutConfig)

    @model_validator(mode="after")
    def _self_normalizing_recipe_holds(self) -> ModelConfig:
        """SELU self-normalizes only under the book's recipe (T6); refuse what breaks it.

        Alpha dropout without SELU is allowed with a warning: it still regularizes (Keras
        accepts it), but it is built to preserve SELU's fixed point, and refusing it would make
        a search over ``model.activation.name`` fail for every non-SELU trial.
        """
        uses_dropout = self.dropout.rate > 0 or self.dropout.input_rate > 0
        if self.activation.name == "selu":
            if self.batch_norm.enabled:
                raise ValueError(
                    "model.activation.name=selu with model.batch_norm.enabled=true: batch norm "
                    f"breaks self-normalization; {_SELF_NORMALIZING_FIX}"
                )
            if uses_dropout and self.dropout.kind == "standard":
                raise ValueError(
                    "model.activation.name=selu with standard dropout (model.dropout.rate="
                    f"{self.dropout.rate}, input_rate={self.dropout.input_rate}) breaks "
                    f"self-normalization; set model.dropout.kind=alpha. {_SELF_NORMALIZING_FIX}"
                )
            if self.init not in ("auto", "lecun_normal", "lecun_uniform"):
                config_logger.warning(
                    "model.activation.name=selu with model.init=%s: SELU self-normalizes only "
                    "with LeCun init; use model.init=lecun_normal (or auto)",
                    self.init,
                )
        elif self.dropout.kind == "alpha" and uses_dropout:
            config_logger.warning(
                "model.dropout.kind=alpha with model.activation.name=%s: alpha dropout is built "
                "to keep SELU's mean and variance; with other activations use "
                "model.dropout.kind=standard",
                self.activation.name,
            )
        return self


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


class TrainConfig(Strict):
    objective: Objective = Field(
        default="classify",
        description="pretrain only: autoencoder learns the backbone as an MLP encoder by "
        "reconstructing the standardized inputs (no labels used); finetune reuses the encoder",
    )
    epochs: int = Field(default=5, ge=1)
    batch_size: int = Field(default=64, ge=1, description="per worker")
    num_workers: int = Field(default=2, ge=1, description="Ray Train DDP workers")
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
    scale_lr_with_workers: bool = Field(
        default=False,
        description="linear scaling rule: LR (and 1cycle peak, piecewise values) x num_workers, "
        "the reference batch being one worker's batch_size",
    )

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


# ----------------------------------------------------------------------------- tune


class SearchDimension(Strict):
    type: Literal["uniform", "loguniform", "int", "choice"]
    low: float | None = None
    high: float | None = None
    values: list[Any] | None = None
    when: str | None = Field(
        default=None,
        description='conditional key: "<choice key> == <value>"; the key is searched only '
        "in trials where that choice dimension took that value (else the config value is kept)",
    )

    @model_validator(mode="after")
    def _bounds_match_type(self) -> SearchDimension:
        if self.type == "choice":
            if not self.values:
                raise ValueError("a 'choice' dimension needs a non-empty 'values' list")
        elif self.low is None or self.high is None or self.low >= self.high:
            raise ValueError(f"a '{self.type}' dimension needs low < high")
        elif self.type == "loguniform" and self.low <= 0:
            raise ValueError("a 'loguniform' dimension needs low > 0")
        if self.when is not None:
            self.condition()  # raises on a malformed condition
        return self

    def condition(self) -> tuple[str, Any] | None:
        """``when`` parsed: (parent key, value); the value as YAML reads it (3 -> int)."""
        if self.when is None:
            return None
        key, sep, text = self.when.partition("==")
        if not sep or not key.strip() or not text.strip():
            raise ValueError(
                f"'when: {self.when}' is not a condition; write '<choice key> == <value>', "
                "e.g. 'when: finetune.optimizer.name == sgd'"
            )
        return key.strip(), yaml.safe_load(text.strip())

    def is_active(self, params: dict[str, Any]) -> bool:
        """Whether this dimension applies to a trial whose sampled values are ``params``."""
        condition = self.condition()
        if condition is None:
            return True
        key, value = condition
        return key in params and params[key] == value


LR_SEARCH_KEY = "finetune.optimizer.lr"


class LRFinderPreStep(Strict):
    """Before the search, sweep the LR once (the book's LR finder, in-process, over the
    finetune's first phase) and narrow ``tune.space['finetune.optimizer.lr']`` to a window
    around the suggested LR, so trials are not spent on LRs that diverge or barely move.
    Skipped when the space does not search the LR."""

    enabled: bool = False
    min_lr: float = Field(default=1e-5, gt=0)
    max_lr: float = Field(default=1.0, gt=0)
    num_steps: int = Field(default=100, ge=2, description="mini-batches in the sweep")
    window_decades: float = Field(
        default=1.0, gt=0, description="width of the narrowed range, centred on the suggestion"
    )

    @model_validator(mode="after")
    def _sweep_goes_up(self) -> LRFinderPreStep:
        if self.min_lr >= self.max_lr:
            raise ValueError("tune.lr_finder needs min_lr < max_lr")
        return self


class TPEConfig(Strict):
    """tune.searcher=optuna: Optuna's TPE sampler. The first ``startup_trials`` are random;
    from then on TPE proposes where good trials cluster. ``multivariate`` models the keys
    jointly (the best LR depends on the optimizer), and ``constant_liar`` makes a suggestion
    made while other trials still run treat those as bad results for now, so concurrent
    trials do not all land on the same point."""

    startup_trials: int = Field(
        default=3, ge=1, description="random trials before TPE models the results"
    )
    multivariate: bool = True
    constant_liar: bool = True


class PBTConfig(Strict):
    """tune.scheduler=pbt: Population Based Training (Jaderberg et al., 2017) over the
    finetune. A trial trains in segments of ``perturbation_interval`` epochs, each a Ray Train
    fit; after each segment it reports a Tune checkpoint. A trial in the bottom
    ``quantile_fraction`` of the population then restarts from a top trial's checkpoint with
    that trial's hyperparameters perturbed (every ``tune.space`` key: continuous and int keys
    x0.8 or x1.2 and clipped to their bounds, choice keys moved to a neighbouring value, each
    key resampled instead with ``resample_probability``).

    The whole population trains side by side (``tune.max_concurrent >= tune.num_samples``):
    a Ray Train V2 trial's workers are invisible to Tune's resource accounting, so Tune cannot
    pause part of a larger population to share the cluster, and a trial started after the
    others finished could never copy them.

    Simplifications, by design: a segment warm-starts only the model WEIGHTS (from the trial's
    own or the donor's checkpoint), with a fresh optimizer whose ``finetune.schedule`` spans
    the segment's share of each phase (a decaying schedule restarts every segment; the default
    constant one is unaffected). Segments follow the finetune's phases: a segment that crosses
    a phase boundary trains the rest of one phase, then the start of the next. PBT trials run
    without early stopping and without ``restore_best`` (PBT replaces bad trials itself, and
    a segment's reported metric must describe the weights it hands on), and without the
    per-step ``finetune.diagnostics``. A trial's MLflow run keeps its first hyperparameters as
    params, logs the ones each segment trained under as ``pbt.<key>`` metrics per epoch, and
    is tagged ``graft.pbt.restored_from`` after an exploit; the search hands on the best
    trial's last hyperparameters and final model."""

    perturbation_interval: int = Field(
        default=2,
        ge=1,
        description="epochs per segment: a trial may be perturbed (exploit + explore) after "
        "every this many epochs; must be below the finetune's total epochs",
    )
    quantile_fraction: float = Field(
        default=0.25,
        gt=0.0,
        le=0.5,
        description="bottom fraction of trials that copy a top-fraction trial at a perturbation",
    )
    resample_probability: float = Field(
        default=0.25,
        ge=0.0,
        le=1.0,
        description="chance that an explored key is resampled from tune.space, not perturbed",
    )
    synch: bool = Field(
        default=False,
        description="synchronous PBT: every trial waits at each perturbation point until the "
        "whole population got there, then the bottom quantile copies the top (exploits are "
        "decided on the whole population; workers idle while stragglers catch up)",
    )


class TuneConfig(Strict):
    enabled: bool = True
    num_samples: int = Field(
        default=6, ge=1, description="trials; with searcher=grid, repeats of the whole grid"
    )
    max_concurrent: int = Field(
        default=2,
        ge=1,
        description="trials training at once; pbt needs the whole population at once "
        "(>= num_samples)",
    )
    searcher: Literal["optuna", "hyperopt", "random", "grid"] = "optuna"
    scheduler: Literal["asha", "hyperband", "median", "pbt", "fifo"] = Field(
        default="asha",
        description="pbt needs searcher=random and unconditional tune.space keys (tune.pbt)",
    )
    # 2, not Ray's 1: after one epoch a transfer finetune has trained only its head, and the
    # fast starters there are not the configurations that end best (replayed on the default
    # task's recorded curves, bench/tune_replay.py: grace 1 cut the configurations that reach
    # 0.95 and spent 2.2x random search's epochs to find one; grace 2 spent 0.84x)
    grace_period: int = Field(
        default=2,
        ge=1,
        description="asha/hyperband/median: epochs before a first cut (1 judges a trial by "
        "its first epoch, which favours configurations that start fast over ones that end best)",
    )
    reduction_factor: float = Field(default=3.0, gt=1.0)
    hyperband_brackets: int = Field(
        default=3, ge=1, description="hyperband: brackets of asynchronous successive halving"
    )
    median_min_samples: int = Field(
        default=3, ge=1, description="median: trials reporting at an epoch before any is cut"
    )
    time_budget_s: float | None = Field(
        default=None,
        gt=0,
        description="wall-clock budget of the whole search; running trials stop when it ends",
    )
    epoch_budget: int | None = Field(
        default=None,
        ge=1,
        description="compute budget of the whole search in trial-epochs (every trial's epochs "
        "added up): once spent, running trials stop and no new one starts; num_samples still "
        "caps the trials. Unlike time_budget_s it means the same on any hardware",
    )
    workers_per_trial: int = Field(default=1, ge=1)
    metric: Literal["val_accuracy", "val_loss"] = "val_accuracy"
    seed: int = 0
    tpe: TPEConfig = Field(default_factory=TPEConfig)
    lr_finder: LRFinderPreStep = Field(default_factory=LRFinderPreStep)
    pbt: PBTConfig = Field(default_factory=PBTConfig)
    space: dict[str, SearchDimension] = Field(
        default_factory=lambda: {
            LR_SEARCH_KEY: SearchDimension(type="loguniform", low=1e-4, high=3e-2),
            "model.dropout.rate": SearchDimension(type="uniform", low=0.0, high=0.5),
        },
        description="dotted config key -> dimension; keys are validated against the schema",
    )

    @property
    def mode(self) -> Literal["max", "min"]:
        return "max" if self.metric == "val_accuracy" else "min"

    @model_validator(mode="after")
    def _searcher_scheduler_and_space_agree(self) -> TuneConfig:
        if self.scheduler == "pbt":
            if self.searcher != "random":
                raise ValueError(
                    f"tune.scheduler=pbt cannot run with tune.searcher={self.searcher}: PBT "
                    "draws the initial population itself and then evolves it, so a model-based "
                    "searcher has nothing to suggest; set tune.searcher=random"
                )
            conditional = [k for k, d in self.space.items() if d.when is not None]
            if conditional:
                raise ValueError(
                    f"tune.scheduler=pbt cannot mutate the conditional tune.space keys "
                    f"{conditional}: a perturbation may switch their condition on or off "
                    "mid-trial; drop their 'when' or use asha/hyperband/median"
                )
            if self.num_samples < 2:
                raise ValueError("tune.scheduler=pbt needs a population: set num_samples >= 2")
            if self.epoch_budget is not None:
                raise ValueError(
                    "tune.epoch_budget cannot bound a PBT search: its population trains side by "
                    "side to the finetune's last epoch, so its compute is already num_samples x "
                    "the finetune's epochs; drop tune.epoch_budget or lower tune.num_samples"
                )
            if self.max_concurrent < self.num_samples:
                raise ValueError(
                    f"tune.scheduler=pbt trains its population side by side, but "
                    f"tune.max_concurrent={self.max_concurrent} < tune.num_samples="
                    f"{self.num_samples}: a trial that starts after others finished can never "
                    f"copy them. Set tune.max_concurrent={self.num_samples} (the cluster must "
                    "fit that many trials of tune.workers_per_trial x finetune.resources) or "
                    "lower tune.num_samples"
                )
        lr_dim = self.space.get(LR_SEARCH_KEY)
        if (
            self.lr_finder.enabled
            and lr_dim is not None
            and (lr_dim.type != "loguniform" or lr_dim.when is not None)
        ):
            raise ValueError(
                f"tune.lr_finder narrows tune.space['{LR_SEARCH_KEY}'], which must be an "
                "unconditional 'loguniform' dimension (or leave the LR out of the space: "
                "then there is nothing to narrow and the pre-step is skipped)"
            )
        if self.searcher == "grid":
            continuous = [k for k, d in self.space.items() if d.type in ("uniform", "loguniform")]
            if continuous:
                raise ValueError(
                    f"tune.searcher=grid needs discrete dimensions, but {continuous} are "
                    "continuous; make them 'choice' with explicit values or use another searcher"
                )
        for key, dim in self.space.items():
            condition = dim.condition()
            if condition is None:
                continue
            parent_key, value = condition
            parent = self.space.get(parent_key)
            if parent is None or parent.type != "choice" or parent_key == key:
                raise ValueError(
                    f"tune.space['{key}'].when refers to '{parent_key}', which is not another "
                    "'choice' dimension of tune.space"
                )
            if value not in (parent.values or []):
                raise ValueError(
                    f"tune.space['{key}'].when compares '{parent_key}' with {value!r}, which is "
                    f"not one of its values {parent.values}"
                )
            if parent.when is not None:
                raise ValueError(
                    f"tune.space['{key}'].when refers to '{parent_key}', which is conditional "
                    "itself; only one level of conditions is supported"
                )
        return self


# ----------------------------------------------------------------------------- evaluate/export


class MCDropoutConfig(Strict):
    """Monte Carlo dropout at evaluation: average many stochastic passes (dropout on, BN in
    inference mode) for an accuracy and a per-example uncertainty."""

    enabled: bool = False
    samples: int = Field(default=100, ge=1, description="stochastic passes averaged")
    seed: int | None = Field(default=None, description="torch seed of the passes; None = seed")
    latency_sample_counts: list[Annotated[int, Field(ge=1)]] = Field(
        default_factory=lambda: [1, 10],
        description="sample counts whose latency is measured besides `samples`",
    )


ProtocolName = Literal["holdout", "kfold", "iterated_kfold", "auto"]


class ProtocolConfig(Strict):
    """How the transfer-finetune stage estimates accuracy on its small target task.

    ``holdout`` (the default) is the pipeline's own train/val split and costs nothing extra.
    Any other protocol additionally trains a fresh model per fold, in process, on the pooled
    target train+val rows (never test) and logs ``cv_mean_val_accuracy`` ± ``cv_std_...``.
    ``auto`` probes how much the holdout score moves with the shuffle and picks K-fold when
    holdout is unreliable (graft.evaluate.protocols).
    """

    name: ProtocolName = Field(
        default="holdout",
        description="holdout | kfold | iterated_kfold (K-fold repeated with a fresh shuffle "
        "each time) | auto (the split-stability probe picks holdout or auto_picks)",
    )
    folds: int = Field(default=5, ge=2, description="k of K-fold and iterated K-fold")
    repeats: int = Field(
        default=3, ge=1, description="iterated_kfold: P shuffled K-fold passes (P x k models)"
    )
    auto_picks: Literal["kfold", "iterated_kfold"] = Field(
        default="kfold", description="auto: the protocol run when holdout is unreliable"
    )
    probe_splits: int = Field(
        default=5, ge=2, description="auto: seeded holdout re-splits the stability probe scores"
    )
    probe_max_std: float = Field(
        default=0.01,
        gt=0.0,
        lt=1.0,
        description="auto: std of the probe's holdout accuracies above which holdout is unreliable",
    )
    min_val_rows: int = Field(
        default=1000,
        ge=1,
        description="auto: a holdout validation set smaller than this is unreliable whatever "
        "the probe's std",
    )
    max_models: int = Field(
        default=50,
        ge=1,
        description="cost guard: most models one protocol may train (folds x repeats for "
        "iterated K-fold)",
    )

    def models_to_train(self, protocol: str) -> int:
        """Fits of ``protocol`` under these settings (the probe's fits not counted)."""
        return {"holdout": 1, "kfold": self.folds, "iterated_kfold": self.folds * self.repeats}[
            protocol
        ]

    @model_validator(mode="after")
    def _protocol_settings_make_sense(self) -> ProtocolConfig:
        iterated = self.name == "iterated_kfold" or (
            self.name == "auto" and self.auto_picks == "iterated_kfold"
        )
        if self.name == "iterated_kfold" and self.repeats < 2:
            raise ValueError(
                "evaluate.protocol.name=iterated_kfold with repeats=1 is plain K-fold; set "
                "evaluate.protocol.repeats >= 2 or name=kfold"
            )
        worst = self.models_to_train("iterated_kfold" if iterated else "kfold")
        if self.name != "holdout" and worst > self.max_models:
            raise ValueError(
                f"evaluate.protocol trains up to {worst} models (folds={self.folds}"
                + (f" x repeats={self.repeats}" if iterated else "")
                + f") > max_models={self.max_models}; lower folds/repeats or raise "
                "evaluate.protocol.max_models"
            )
        return self


class LabelShuffleControl(Strict):
    """Train the same finetune recipe on permuted target labels: what "learning" looks like
    when there is no signal. The gate then asks the real model to beat it by ``margin``."""

    enabled: bool = False
    margin: float = Field(
        default=0.05, ge=0.0, description="accuracy points above the control required"
    )
    seed: int = 0


class TransferReportConfig(Strict):
    """The book's A/B protocol as a report: transfer vs the same net from scratch, per seed."""

    enabled: bool = False
    seeds: int = Field(default=5, ge=1, description="seeds per arm (the book: one is anecdote)")


class EvaluateConfig(Strict):
    baseline_margin: float = Field(
        default=0.0, ge=0.0, description="accuracy points above the majority baseline required"
    )
    champion_margin: float = Field(
        default=0.0, description="accuracy above the current champion required to promote"
    )
    n_bins: int = Field(
        default=10, ge=1, description="equal-width confidence bins for ECE and the reliability plot"
    )
    daily_volume: int | None = Field(
        default=None,
        gt=0,
        description="cases scored per day (binary tasks); None = no expected daily counts",
    )
    prevalence: float | None = Field(
        default=None,
        gt=0.0,
        lt=1.0,
        description="share of positives in production (binary); None = the test split's own",
    )
    sweep_thresholds: list[Annotated[float, Field(ge=0.0, le=1.0)]] = Field(
        default_factory=lambda: [round(0.1 * step, 1) for step in range(1, 10)],
        min_length=1,
        description="positive-score thresholds of the binary threshold sweep table",
    )
    confident_errors: int = Field(
        default=10, ge=0, description="how many most-confident wrong predictions to list"
    )
    linear_baseline_max_iter: int = Field(
        default=100, ge=1, description="LogisticRegression iterations of the linear baseline"
    )
    linear_baseline_max_rows: int = Field(
        default=20_000, ge=1, description="train rows (seeded sample) the linear baseline fits on"
    )
    mc_dropout: MCDropoutConfig = Field(default_factory=MCDropoutConfig)
    max_calibration_error: float | None = Field(
        default=None,
        gt=0.0,
        le=1.0,
        description="gate: refuse a model whose expected calibration error (ECE) exceeds this",
    )
    label_shuffle_control: LabelShuffleControl = Field(default_factory=LabelShuffleControl)
    transfer_report: TransferReportConfig = Field(default_factory=TransferReportConfig)
    allow_repeat_test: bool = Field(
        default=False,
        description="score a model already scored on this test split again (tagged as a "
        "repeat); off, the second look is refused",
    )
    protocol: ProtocolConfig = Field(default_factory=ProtocolConfig)


class ExportConfig(Strict):
    model_name: str = Field(default="graft-classifier", pattern=r"^[A-Za-z0-9][\w.-]*$")
    onnx_opset: int = Field(default=18, ge=13, description="pinned ONNX opset of every graph")
    parity_atol: float = Field(
        default=1e-4, gt=0.0, description="largest fp32 logit difference TorchScript/ONNX may show"
    )
    fold_batch_norm: bool = Field(
        default=True,
        description="fold each BN placed right after a Linear/Conv into it in the served files",
    )
    fold_atol: float = Field(
        default=1e-5,
        gt=0.0,
        description="largest logit difference BN folding may introduce, per unit of the "
        "largest |logit| (when above 1)",
    )
    int8: bool = Field(default=True, description="dynamic int8 quantized TorchScript variant")
    fp16: bool = Field(default=True, description="float16 ONNX variant (GPU serving)")
    latency_batch_sizes: list[Annotated[int, Field(ge=1)]] = Field(
        default_factory=lambda: [1, 64], description="batch sizes of the latency figures"
    )
    latency_runs: int = Field(
        default=20, ge=1, description="timed calls per latency figure (the median is reported)"
    )
    intended_use: str = Field(
        default="Classifying inputs drawn from the same distribution as the training data's "
        "target task; a decision aid whose errors a person can catch, not an unattended "
        "decision maker.",
        description="model card: what the model is for",
    )
    limitations: list[str] = Field(
        default_factory=lambda: [
            "Measured on one held-out test split of the training data; accuracy on data "
            "from another source, period or population is unknown.",
            "Probabilities are only as calibrated as the reported ECE says.",
            "The quantized and float16 variants trade the reported accuracy delta for speed "
            "and size.",
        ],
        description="model card: known limits",
    )


# ----------------------------------------------------------------------------- runtime


class TrackingConfig(Strict):
    tracking_uri: str | None = Field(
        default=None,
        description="MLflow server URL or sqlite URI; None = MLFLOW_TRACKING_URI where the "
        "stage runs, else <work_dir>/mlflow.db (refused in a pipeline pod: it would vanish "
        "with the pod)",
    )
    experiment_name: str = "graft"
    artifact_location: str | None = Field(
        default=None,
        description="where a new experiment keeps run artifacts and registered model files, "
        "e.g. s3://bucket/mlflow (credentials from the AWS_* environment, on a cluster the "
        "cluster.s3_secret Secret); None = the tracking server's default",
    )


StageName = Literal["data-prep", "pretrain", "transfer-finetune", "tune", "evaluate", "export"]


class TolerationConfig(Strict):
    key: str | None = None
    operator: Literal["Equal", "Exists"] = "Equal"
    value: str | None = None
    effect: Literal["NoExecute", "NoSchedule", "PreferNoSchedule"] | None = None


class StageResources(Strict):
    """Kubernetes settings of one pipeline task (the local runner ignores them)."""

    cpu_request: str | None = None
    cpu_limit: str | None = None
    memory_request: str | None = None
    memory_limit: str | None = None
    accelerator_type: str | None = Field(
        default=None, description="e.g. nvidia.com/gpu; needs accelerator_count >= 1"
    )
    accelerator_count: int = Field(default=0, ge=0)
    node_selector: dict[str, str] = Field(default_factory=dict)
    tolerations: list[TolerationConfig] = Field(default_factory=list)
    retries: int = Field(default=0, ge=0, description="KFP task retries (pods lost, OOM)")

    @model_validator(mode="after")
    def _accelerator_pair(self) -> StageResources:
        if (self.accelerator_type is None) != (self.accelerator_count == 0):
            raise ValueError("set accelerator_type and accelerator_count together")
        return self


class LightStageResources(StageResources):
    cpu_request: str | None = "1"
    cpu_limit: str | None = "2"
    memory_request: str | None = "2Gi"
    memory_limit: str | None = "4Gi"


class TrainingStageResources(StageResources):
    cpu_request: str | None = "2"
    cpu_limit: str | None = "4"
    memory_request: str | None = "8Gi"
    memory_limit: str | None = "16Gi"
    retries: int = Field(default=2, ge=0, description="a retried task resumes from checkpoint")


class ClusterStages(Strict):
    """One block per task. Each block's defaults are its class's, so overriding one key
    (``cluster.stages.pretrain.accelerator_count=1``) keeps the others."""

    data_prep: LightStageResources = Field(default_factory=LightStageResources)
    pretrain: TrainingStageResources = Field(default_factory=TrainingStageResources)
    transfer_finetune: TrainingStageResources = Field(default_factory=TrainingStageResources)
    tune: TrainingStageResources = Field(default_factory=TrainingStageResources)
    evaluate: LightStageResources = Field(default_factory=LightStageResources)
    export: LightStageResources = Field(default_factory=LightStageResources)

    def for_stage(self, stage: StageName) -> StageResources:
        resources: StageResources = getattr(self, stage.replace("-", "_"))
        return resources


# A Secret's name (DNS-1123 subdomain) and a memory quantity, as the API server checks them:
# a typo fails at `graft compile`, not when a pod is created.
_K8S_NAME = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_K8S_QUANTITY = re.compile(r"[0-9]+(\.[0-9]+)?(Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E)?")


# cluster.shm_size is mounted under this volume name in pipeline and RayJob pods alike
SHM_VOLUME = ("dshm", "/dev/shm")
# Every pipeline pod and RayJob pod carries it: the chart's NetworkPolicy lets only pods with
# this label reach the MLflow server.
PIPELINE_POD_LABEL = ("graft.dev/pipeline", "true")
# The image of the compiled pipeline and of RayJobs unless `--image` or ray.rayjob.image names
# another.
DEFAULT_IMAGE = "ghcr.io/graft-ml/graft:0.1.0-cpu"


class ClusterConfig(Strict):
    """How the compiled pipeline runs on Kubernetes; read at `graft compile` time."""

    s3_secret: str | None = Field(
        default="graft-s3",
        description="Kubernetes Secret with the S3 keys, in the namespace the pipeline's pods "
        "run in; required by every pod once the config names an s3:// location (a missing "
        "Secret stops the pod instead of running it without keys). None = no Secret: the pods "
        "use their own identity (IRSA, Workload Identity)",
    )
    s3_secret_keys: dict[str, str] = Field(
        default_factory=lambda: {
            "AWS_ACCESS_KEY_ID": "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY": "AWS_SECRET_ACCESS_KEY",
        },
        description="secret key -> environment variable in every pipeline pod",
    )
    stages: ClusterStages = Field(default_factory=ClusterStages)
    service_account: str | None = Field(
        default=None,
        description="Kubernetes ServiceAccount the runs `graft submit` and `graft schedule` "
        "create run as (None = KFP's default, pipeline-runner); with ray.mode=rayjob the "
        "pipeline's pods create RayJobs, so name one the chart's Role is bound to "
        "(graft-pipeline)",
    )
    image_pull_secrets: list[str] = Field(
        default_factory=list,
        description="Kubernetes Secrets (type dockerconfigjson) with which every pipeline pod "
        "and every RayJob pod pulls its image from a private registry",
    )
    shm_size: str | None = Field(
        default="2Gi",
        description="size of a memory-backed emptyDir mounted at /dev/shm in every pipeline "
        "and RayJob pod: Ray's object store and the DataLoader workers share memory there, "
        "and a container's own /dev/shm is 64 MiB. It counts against the pod's memory limit "
        "(None = the container's default /dev/shm)",
    )

    @model_validator(mode="after")
    def _kubernetes_names_and_quantities(self) -> ClusterConfig:
        for name in self.image_pull_secrets:
            if not _K8S_NAME.fullmatch(name):
                raise ValueError(
                    f"cluster.image_pull_secrets: '{name}' is not a Kubernetes Secret name "
                    "(lowercase letters, digits, '-' and '.'); use the name `kubectl get "
                    "secrets` shows"
                )
        if self.shm_size is not None and not _K8S_QUANTITY.fullmatch(self.shm_size):
            raise ValueError(
                f"cluster.shm_size '{self.shm_size}' is not a Kubernetes quantity; write e.g. "
                "2Gi or 512Mi, or null to keep the container's default /dev/shm"
            )
        return self


class RayJobConfig(Strict):
    """A KubeRay RayJob that runs one training stage on a cluster of its own (`graft rayjob`).

    Its worker pods take the stage's block of ``cluster.stages`` (requests, limits,
    accelerator, node selector, tolerations) and one pod per Ray Train worker; this block holds
    the rest.
    """

    image: str | None = Field(
        default=None,
        description="image of the Ray head, workers and submitter (None = the image "
        "`graft compile` puts in the pipeline)",
    )
    namespace: str | None = Field(
        default=None, description="metadata.namespace (None = kubectl's current namespace)"
    )
    ray_version: str = Field(
        default="2.60.0", description="rayClusterSpec.rayVersion: the Ray inside the image"
    )
    head_cpu: str = Field(
        default="1", description="head pod CPU, request = limit (the stage's driver runs there)"
    )
    head_memory: str = "4Gi"
    submitter_cpu: str = Field(default="500m", description="the `ray job submit` pod's CPU")
    submitter_memory: str = "512Mi"
    shutdown_after_job_finishes: bool = Field(
        default=True, description="delete the RayCluster when the job ends"
    )
    ttl_seconds_after_finished: int = Field(
        default=600,
        ge=0,
        description="seconds a finished job's cluster is kept (logs, dashboard) before deletion",
    )
    active_deadline_seconds: int | None = Field(
        default=7200, gt=0, description="fail the RayJob after this long (None = no deadline)"
    )
    backoff_limit: int = Field(
        default=0, ge=0, description="retries of a failed RayJob, each on a fresh cluster"
    )
    delete_when_done: Literal["on_success", "always", "never"] = Field(
        default="on_success",
        description="ray.mode=rayjob: delete the RayJob object after it ends (its cluster goes "
        "with shutdown_after_job_finishes either way); on_success keeps a failed one, its "
        "submitter pod and log, for `kubectl describe` and `kubectl logs`",
    )
    poll_s: float = Field(
        default=5.0, gt=0, description="ray.mode=rayjob: seconds between status and log polls"
    )


class RayConfig(Strict):
    """Where the training stages (pretrain, transfer-finetune, tune) get Ray.

    ``local`` starts Ray inside the stage's process. ``address`` uses an existing cluster: with
    ``submit: job`` the stage itself runs on the cluster as a Ray job submitted through the
    Jobs API (its log streams into the caller's, a retry of the same pipeline run re-attaches
    to the job instead of starting a second one, and a failed job fails the caller); with
    ``submit: driver`` the stage runs in this process and joins the cluster with
    ``ray.init(address)``. ``rayjob`` creates a KubeRay RayJob per stage (a Ray cluster of its
    own) through the Kubernetes API, follows its submitter's log, waits for its end and
    cleans it up; ``graft rayjob`` prints the same RayJob for ``kubectl apply``.
    """

    mode: Literal["local", "address", "rayjob"] = "local"
    address: str | None = Field(
        default=None,
        description="address mode: ray://host:10001 or auto (None = RAY_ADDRESS, else auto); "
        "with submit=job it also locates the dashboard when dashboard_address is unset",
    )
    submit: Literal["job", "driver"] = Field(
        default="job",
        description="address mode: run each training stage on the cluster as a Ray job (job) "
        "or here as a Ray driver (driver)",
    )
    dashboard_address: str | None = Field(
        default=None,
        description="submit=job: the Jobs API, http://<head>:8265 (None = derived from "
        "address); RAY_API_SERVER_ADDRESS or RAY_ADDRESS override it, as everywhere in Ray",
    )
    job_timeout_s: float | None = Field(
        default=None,
        gt=0,
        description="submit=job: stop a job still running after this long and fail the stage",
    )
    job_log_tail_lines: int = Field(
        default=40, ge=1, description="submit=job: lines of a failed job's log in the error"
    )
    staging_uri: str | None = Field(
        default=None,
        description="s3://bucket/prefix through which a stage that runs on the cluster "
        "(submit=job, mode=rayjob) gets its input folders and returns its output folder: the "
        "caller uploads them, the job downloads them and uploads its output, the caller "
        "downloads that. Required by mode=rayjob; None with submit=job passes the folders as "
        "they are, so the cluster must see the caller's filesystem",
    )
    storage_uri: str | None = Field(
        default=None,
        description="where Ray Train keeps checkpoints and run state: s3://bucket/prefix or a "
        "folder every node mounts. None = <staging_uri>/ray when staging_uri is set, else "
        "<work_dir>/ray on the driver's machine, which a multi-node cluster cannot use (its "
        "workers' checkpoints would stay on their own nodes): that is refused when joining one",
    )
    num_cpus: int | None = Field(default=None, ge=1, description="local mode CPU count")
    rayjob: RayJobConfig = Field(default_factory=RayJobConfig)

    @property
    def shared_train_storage(self) -> str | None:
        """The storage every node of a cluster reaches, if the config names one."""
        if self.storage_uri:
            return self.storage_uri
        return f"{self.staging_uri.rstrip('/')}/ray" if self.staging_uri else None

    @model_validator(mode="after")
    def _shared_locations_are_valid(self) -> RayConfig:
        if self.storage_uri is not None and not (
            self.storage_uri.startswith("s3://") or self.storage_uri.startswith("/")
        ):
            raise ValueError(
                f"ray.storage_uri '{self.storage_uri}' must be s3://bucket/prefix or an "
                "absolute path that every node mounts"
            )
        if self.staging_uri is not None and not self.staging_uri.startswith("s3://"):
            raise ValueError(
                f"ray.staging_uri '{self.staging_uri}' must be an s3://bucket/prefix that both "
                "this process and the cluster's pods can read and write"
            )
        if self.mode == "rayjob" and self.staging_uri is None:
            raise ValueError(
                "ray.mode=rayjob needs ray.staging_uri=s3://bucket/prefix: a RayJob's pods "
                "share no folder with this process, so inputs and the trained model travel "
                "through S3"
            )
        return self

    @model_validator(mode="after")
    def _dashboard_is_http(self) -> RayConfig:
        if self.dashboard_address and not self.dashboard_address.startswith(
            ("http://", "https://")
        ):
            raise ValueError(
                f"ray.dashboard_address '{self.dashboard_address}' must be the Jobs API's HTTP "
                "address, e.g. http://ray-head:8265; a ray:// client address goes in ray.address"
            )
        return self

    @property
    def submits_jobs(self) -> bool:
        """Whether a training stage runs on the cluster as a Ray job instead of here."""
        return self.mode == "address" and self.submit == "job"

    @property
    def runs_stages_elsewhere(self) -> bool:
        """Whether a training stage runs away from this process (a Ray job or a RayJob)."""
        return self.submits_jobs or self.mode == "rayjob"


class GraftConfig(Strict):
    name: str = "graft"
    seed: int = 42
    work_dir: str = Field(default="work", description="run outputs, Ray storage, local MLflow")
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    pretrain: TrainConfig = Field(default_factory=TrainConfig)
    finetune: FinetuneConfig = Field(default_factory=FinetuneConfig)
    tune: TuneConfig = Field(default_factory=TuneConfig)
    evaluate: EvaluateConfig = Field(default_factory=EvaluateConfig)
    export: ExportConfig = Field(default_factory=ExportConfig)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)
    ray: RayConfig = Field(default_factory=RayConfig)
    cluster: ClusterConfig = Field(default_factory=ClusterConfig)
    training_preset: str | None = Field(
        default=None,
        description="a recipe of the book's guideline tables applied by load_config under the "
        "user's keys: " + ", ".join(TRAINING_PRESETS),
    )

    @model_validator(mode="after")
    def _search_space_names_real_keys(self) -> GraftConfig:
        for key in self.tune.space:
            _check_dotted_key(self, key)
        return self

    @model_validator(mode="after")
    def _pbt_segments_fit_the_finetune(self) -> GraftConfig:
        if self.tune.scheduler != "pbt":
            return self
        epochs = sum(p.epochs for p in self.finetune.phases)
        interval = self.tune.pbt.perturbation_interval
        if interval >= epochs:
            raise ValueError(
                f"tune.pbt.perturbation_interval={interval} is not below the finetune's {epochs} "
                "epochs (the sum of finetune.phases): no trial would ever be perturbed; lower "
                "the interval or add epochs"
            )
        return self

    @model_validator(mode="after")
    def _training_recipe_is_consistent(self) -> GraftConfig:
        if self.training_preset is not None and self.training_preset not in TRAINING_PRESETS:
            raise ValueError(_unknown_training_preset(self.training_preset))
        if self.pretrain.objective == "autoencoder":
            if self.model.family != "mlp":
                raise ValueError(
                    "pretrain.objective=autoencoder mirrors the dense backbone in its decoder: "
                    "it needs model.family=mlp"
                )
            if self.pretrain.early_stopping.monitor != "val_loss":
                raise ValueError(
                    "pretrain.objective=autoencoder has no accuracy to monitor: set "
                    "pretrain.early_stopping.monitor=val_loss (the reconstruction error)"
                )
        if self.model.activation.name == "selu":
            for stage, train in (("pretrain", self.pretrain), ("finetune", self.finetune)):
                reg = train.regularization
                if reg.l1 > 0 or reg.l2 > 0 or reg.max_norm is not None:
                    sparse = (
                        " (for a sparse model the book's exception 1 applies: "
                        "training_preset=default_shallow with L1)"
                        if reg.l1 > 0
                        else ""
                    )
                    raise ValueError(
                        f"model.activation.name=selu with {stage}.regularization (l1={reg.l1}, "
                        f"l2={reg.l2}, max_norm={reg.max_norm}) breaks self-normalization"
                        f"{sparse}; {_SELF_NORMALIZING_FIX}"
                    )
            searched = self.tune.space.get("model.dropout.rate")
            if (
                self.tune.enabled
                and self.model.dropout.kind == "standard"
                and searched is not None
                and _may_be_positive(searched)
            ):
                raise ValueError(
                    "model.activation.name=selu while tune.space searches model.dropout.rate "
                    "with standard dropout: those trials would break self-normalization; set "
                    "model.dropout.kind=alpha, drop the key from tune.space or set "
                    "tune.enabled=false"
                )
        return self

    # -- derived paths -------------------------------------------------------------------
    @property
    def work_path(self) -> Path:
        return Path(self.work_dir)

    def resolved_tracking_uri(self, environ: Mapping[str, str] | None = None) -> str:
        """tracking.tracking_uri, else MLFLOW_TRACKING_URI, else a SQLite file in work_dir.

        The environment is read where the stage runs, not where the config was written: on a
        cluster the pods get the server's address from their environment (the chart's NOTES
        tell users to export it), so a pipeline compiled elsewhere still logs there.
        """
        if self.tracking.tracking_uri:
            return self.tracking.tracking_uri
        from_env = (os.environ if environ is None else environ).get(TRACKING_URI_ENV, "")
        if from_env.strip():
            return from_env.strip()
        return f"sqlite:///{(self.work_path / 'mlflow.db').resolve()}"

    def tracks_to_a_server(self, environ: Mapping[str, str] | None = None) -> bool:
        """Whether runs go to a tracking server rather than a file on this machine."""
        return self.resolved_tracking_uri(environ).startswith(REMOTE_TRACKING_SCHEMES)

    def s3_locations(self) -> list[str]:
        """The dotted keys of every ``s3://`` location this config names: the pods that run
        it need S3 keys."""
        found: list[str] = []

        def walk(node: Any, path: str) -> None:
            if isinstance(node, dict):
                for key, value in node.items():
                    walk(value, f"{path}.{key}" if path else str(key))
            elif isinstance(node, list):
                for index, value in enumerate(node):
                    walk(value, f"{path}[{index}]")
            elif isinstance(node, str) and node.startswith("s3://"):
                found.append(path)

        walk(self.model_dump(mode="json"), "")
        return found

    def to_json(self) -> str:
        return self.model_dump_json()


def _may_be_positive(dimension: SearchDimension) -> bool:
    if dimension.type == "choice":
        return any(isinstance(v, int | float) and v > 0 for v in dimension.values or [])
    return (dimension.high or 0.0) > 0


def _unknown_training_preset(name: object) -> str:
    return f"unknown training_preset '{name}'; choose one of {', '.join(TRAINING_PRESETS)}"


def _check_dotted_key(config: BaseModel, key: str) -> None:
    node: Any = config
    for part in key.split("."):
        if not isinstance(node, BaseModel) or part not in type(node).model_fields:
            raise ValueError(f"tune.space key '{key}' is not a config key ('{part}' unknown)")
        node = getattr(node, part)


# ----------------------------------------------------------------------------- loading

PRESETS = ("default", "tiny")
DEFAULT_PRESET = "default"


def preset_path(name: str) -> Path:
    if name not in PRESETS:
        raise ConfigError(f"unknown preset '{name}'; choose one of {', '.join(PRESETS)}")
    return Path(str(resources.files("graft.configs").joinpath(f"{name}.yaml")))


def _read_yaml(path: Path) -> dict[str, Any]:
    if not path.exists():
        raise ConfigError(f"config file {path} does not exist; pass an existing YAML file")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping at the top level")
    return data


def _deep_merge(base: dict[str, Any], overlay: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in overlay.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def parse_override(text: str) -> tuple[list[str], Any]:
    """``a.b=c`` -> (["a", "b"], c) with c parsed as YAML (numbers, lists, booleans)."""
    if "=" not in text:
        raise ConfigError(f"override '{text}' must look like key.path=value")
    key, raw = text.split("=", 1)
    if not key.strip():
        raise ConfigError(f"override '{text}' has an empty key")
    try:
        value = yaml.safe_load(raw) if raw else ""
    except yaml.YAMLError:
        value = raw
    return key.strip().split("."), value


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    result = json.loads(json.dumps(data))
    for text in overrides:
        path, value = parse_override(text)
        node = result
        for part in path[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"override '{text}': '{part}' is a value, not a section")
            node = child
        node[path[-1]] = value
    return result


def validate_config(data: dict[str, Any]) -> GraftConfig:
    try:
        return GraftConfig.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '<root>'}: {err['msg']}"
            for err in exc.errors()
        )
        raise ConfigError(f"invalid config: {problems}") from None


def training_preset_data(name: str) -> dict[str, Any]:
    """The partial config of training preset ``name`` (a deep copy: safe to mutate)."""
    if name not in TRAINING_PRESETS:
        raise ConfigError(_unknown_training_preset(name))
    data: dict[str, Any] = json.loads(json.dumps(TRAINING_PRESETS[name]))
    return data


def load_config(
    path: str | Path | None = None,
    preset: str | None = None,
    overrides: list[str] | None = None,
) -> GraftConfig:
    """Schema defaults < preset YAML < ``training_preset`` < user YAML < ``--set`` overrides.

    ``training_preset`` may come from the preset, the user YAML or ``--set``; once known, its
    partial config is laid over the preset and the user YAML and overrides are laid over it
    again, so every key the user wrote explicitly wins over the recipe.
    """
    base = _read_yaml(preset_path(preset or DEFAULT_PRESET))
    user = _read_yaml(Path(path)) if path is not None else {}
    data = apply_overrides(_deep_merge(base, user), overrides or [])
    name = data.get("training_preset")
    if name is not None:
        if not isinstance(name, str) or name not in TRAINING_PRESETS:
            raise ConfigError(_unknown_training_preset(name))
        recipe = training_preset_data(name)
        data = apply_overrides(_deep_merge(_deep_merge(base, recipe), user), overrides or [])
        config = validate_config(data)
        config_logger.info(
            "training preset %s applied under explicit keys; resolved model %s, pretrain "
            "optimizer %s, schedule %s",
            name,
            config.model.model_dump(mode="json"),
            config.pretrain.optimizer.model_dump(mode="json"),
            config.pretrain.schedule.name,
        )
        return config
    return validate_config(data)


def config_from_json(text: str) -> GraftConfig:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"config parameter is not valid JSON: {exc}") from None
    return validate_config(data)


def with_overrides(config: GraftConfig, overrides: dict[str, Any]) -> GraftConfig:
    """A copy of ``config`` with dotted-key overrides (tune trials use this)."""
    data = config.model_dump(mode="json")
    texts = [f"{key}={json.dumps(value)}" for key, value in overrides.items()]
    return validate_config(apply_overrides(data, texts))
