"""The ``tune`` block: the search space, the searcher, ASHA and PBT."""

from __future__ import annotations

from typing import Any, Literal

import yaml
from pydantic import Field, model_validator

from graft.config.base import Strict

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
# refused by GraftConfig while tune trials reuse the pretrained backbone (its widths are fixed)
WIDTH_SEARCH_KEY = "model.mobile.width_multiplier"

TuneMetric = Literal["val_accuracy", "val_loss"]


def metric_mode(metric: str) -> Literal["max", "min"]:
    """Whether a search maximises or minimises ``metric`` (a ``tune.metric`` value)."""
    return "max" if metric == "val_accuracy" else "min"


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
    finetune. A trial trains in segments of ``perturbation_interval`` epochs, each a fit (in
    the trial's actor, or on Ray Train: ``trial_runner``); after each segment it reports a
    Tune checkpoint. A trial in the bottom
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
    trial_runner: Literal["auto", "in_trainable", "ray_train"] = Field(
        default="auto",
        description="where a trial trains: in_trainable runs the training loop inside Tune's "
        "trial actor (one worker, no worker group to start: reused actors, ~0 s start-up); "
        "ray_train runs a Ray Train fit per trial (a fresh DDP worker group, 15-25 s to start "
        "on 2 cores); auto picks in_trainable for workers_per_trial=1, else ray_train",
    )
    metric: TuneMetric = "val_accuracy"
    seed: int = 0
    warm_start_top_k: int = Field(
        default=0,
        ge=0,
        description="seed the search with the k best trials of the search that produced the "
        "registered champion (models:/<export.model_name>@champion), read from MLflow and "
        "fitted to tune.space (keys gone dropped, values clipped to the new bounds); they are "
        "the search's first k trials, counted in num_samples. Optuna is also told every trial "
        "of that search with its score, and the searcher draws from a random stream of its own "
        "(not the last search's draws again). 0: off. Not with searcher=grid",
    )
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
        return metric_mode(self.metric)

    @model_validator(mode="after")
    def _searcher_scheduler_and_space_agree(self) -> TuneConfig:
        if self.scheduler == "pbt":
            self._check_pbt_search()
        self._check_lr_finder_dimension()
        if self.searcher == "grid":
            self._check_grid_dimensions()
        self._check_conditions()
        self._check_warm_start()
        if self.trial_runner == "in_trainable" and self.workers_per_trial > 1:
            raise ValueError(
                f"tune.trial_runner=in_trainable trains a trial in its one Tune actor, but "
                f"tune.workers_per_trial={self.workers_per_trial}: set tune.trial_runner=auto "
                "(or ray_train) for DDP trials, or tune.workers_per_trial=1"
            )
        return self

    @property
    def in_trainable(self) -> bool:
        """Whether a trial trains inside its Tune trainable (``trial_runner``)."""
        if self.trial_runner == "auto":
            return self.workers_per_trial == 1
        return self.trial_runner == "in_trainable"

    def _check_pbt_search(self) -> None:
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

    def _check_warm_start(self) -> None:
        if not self.warm_start_top_k:
            return
        if self.searcher == "grid":
            raise ValueError(
                "tune.warm_start_top_k cannot seed tune.searcher=grid: a grid runs every one of "
                "its points anyway, and a seed would take the place of the whole grid. Use "
                "searcher=optuna, hyperopt or random, or set tune.warm_start_top_k=0"
            )
        if self.warm_start_top_k > self.num_samples:
            raise ValueError(
                f"tune.warm_start_top_k={self.warm_start_top_k} seeds more trials than the "
                f"search runs (tune.num_samples={self.num_samples}): the seeds are the search's "
                "first trials; lower tune.warm_start_top_k or raise tune.num_samples"
            )

    def _check_lr_finder_dimension(self) -> None:
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

    def _check_grid_dimensions(self) -> None:
        continuous = [k for k, d in self.space.items() if d.type in ("uniform", "loguniform")]
        if continuous:
            raise ValueError(
                f"tune.searcher=grid needs discrete dimensions, but {continuous} are "
                "continuous; make them 'choice' with explicit values or use another searcher"
            )

    def _check_conditions(self) -> None:
        """Each ``when`` names another, unconditional choice dimension and one of its values."""
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
