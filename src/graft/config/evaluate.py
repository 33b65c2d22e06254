"""The ``evaluate`` block: protocols, MC dropout, controls and the gate."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from graft.config.base import Strict

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
    require_significant: bool = Field(
        default=True,
        description="gate: refuse a challenger whose gain over the champion is not significant "
        "at significance_alpha (McNemar's exact test on the same test rows)",
    )
    require_significant_over_linear: bool = Field(
        default=False,
        description="gate: also refuse a model that does not beat the linear baseline "
        "significantly; off, the verdict is reported only",
    )
    significance_alpha: float = Field(
        default=0.05,
        gt=0.0,
        lt=1.0,
        description="level of the paired tests; their intervals are at 1 - alpha",
    )
    bootstrap_resamples: int = Field(
        default=2000, ge=100, description="resamples of the paired bootstrap (seeded by seed)"
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

    @model_validator(mode="after")
    def _champion_rules_agree(self) -> EvaluateConfig:
        if self.require_significant and self.champion_margin < 0:
            raise ValueError(
                f"evaluate.champion_margin={self.champion_margin} lets a worse challenger "
                "through, but evaluate.require_significant asks for a significant gain over "
                "the champion; set evaluate.require_significant=false or a margin >= 0"
            )
        return self
