"""Everything the evaluation reports beyond accuracy, computed from predictions, written as files.

Files (in the evaluation dir, logged to MLflow with it): ``reliability_diagram.png``,
``calibration.json``, ``confident_errors.json``, ``report.html``, for binary tasks
``stakeholder.json``, ``threshold_sweep.csv`` and ``roc_curve.json``, and with MC dropout on
``mc_dropout.json``.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from graft.config import EvaluateConfig
from graft.evaluate.calibration import Calibration, top_label_calibration
from graft.evaluate.confident_errors import ConfidentError, most_confident_errors
from graft.evaluate.gate import GateDecision
from graft.evaluate.html_report import render_report
from graft.evaluate.metrics import ClassificationReport, RocCurve, roc_curve
from graft.evaluate.plots import plot_reliability
from graft.evaluate.stakeholder import (
    StakeholderView,
    ThresholdRow,
    stakeholder_view,
    threshold_sweep,
)
from graft.evaluate.uncertainty import MCDropoutReport

REPORT_FILE = "report.html"
ROC_FILE = "roc_curve.json"


@dataclass
class EvaluationSummary:
    class_names: list[str]
    report: ClassificationReport
    calibration: Calibration
    confident_errors: list[ConfidentError]
    stakeholder: StakeholderView | None = None  # binary tasks only
    sweep: list[ThresholdRow] = field(default_factory=list)  # binary tasks only
    roc: RocCurve | None = None  # binary tasks with both classes in the test split
    mc_dropout: MCDropoutReport | None = None  # evaluate.mc_dropout.enabled only

    @property
    def metrics(self) -> dict[str, float]:
        """Scalar metrics to log next to test accuracy."""
        values = {"test_ece": self.calibration.ece}
        if self.stakeholder is not None:
            values["test_false_negative_rate"] = self.stakeholder.false_negative_rate
            values["test_false_positive_rate"] = self.stakeholder.false_positive_rate
        if self.roc is not None:
            values["test_roc_auc"] = self.roc.auc
        if self.mc_dropout is not None:
            values.update(self.mc_dropout.metrics)
        return values


def summarize(
    config: EvaluateConfig,
    y_true: np.ndarray,
    probabilities: np.ndarray,
    class_names: list[str],
    report: ClassificationReport,
) -> EvaluationSummary:
    summary = EvaluationSummary(
        class_names=class_names,
        report=report,
        calibration=top_label_calibration(y_true, probabilities, config.n_bins),
        confident_errors=most_confident_errors(y_true, probabilities, config.confident_errors),
    )
    if len(class_names) == 2:
        summary.stakeholder = stakeholder_view(
            report.confusion, class_names, config.daily_volume, config.prevalence
        )
        summary.sweep = threshold_sweep(y_true, probabilities[:, 1], config.sweep_thresholds)
        summary.roc = roc_curve(y_true, probabilities[:, 1])
    return summary


def write_summary(
    summary: EvaluationSummary,
    metrics: Mapping[str, float],
    decision: GateDecision,
    out: Path,
    title: str = "Graft evaluation",
) -> Path:
    """Write the summary's files into ``out``; embeds ``out/confusion_matrix.png`` if present.

    Returns the path of ``report.html``.
    """
    reliability = plot_reliability(summary.calibration, out / "reliability_diagram.png")
    (out / "calibration.json").write_text(json.dumps(asdict(summary.calibration), indent=2))
    (out / "confident_errors.json").write_text(
        json.dumps([asdict(e) for e in summary.confident_errors], indent=2)
    )
    if summary.stakeholder is not None:
        (out / "stakeholder.json").write_text(json.dumps(asdict(summary.stakeholder), indent=2))
        with (out / "threshold_sweep.csv").open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(asdict(summary.sweep[0])))
            writer.writeheader()
            writer.writerows(asdict(row) for row in summary.sweep)
    if summary.roc is not None:
        (out / ROC_FILE).write_text(json.dumps(asdict(summary.roc), indent=2))
    if summary.mc_dropout is not None:
        # NaN (no wrong predictions, say) is not JSON: written as null
        mc = {
            k: None if isinstance(v, float) and math.isnan(v) else v
            for k, v in asdict(summary.mc_dropout).items()
        }
        (out / "mc_dropout.json").write_text(json.dumps(mc, indent=2))
    confusion = out / "confusion_matrix.png"
    page = render_report(
        title=title,
        metrics=metrics,
        report=summary.report,
        class_names=summary.class_names,
        calibration=summary.calibration,
        decision=decision,
        confident_errors=summary.confident_errors,
        reliability_png=reliability,
        confusion_png=confusion if confusion.exists() else None,
        stakeholder=summary.stakeholder,
        sweep=summary.sweep,
        mc_dropout=summary.mc_dropout,
    )
    path = out / REPORT_FILE
    path.write_text(page, encoding="utf-8")
    return path
