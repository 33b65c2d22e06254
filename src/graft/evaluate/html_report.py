"""The evaluation as one self-contained HTML page: tables, embedded plots, the gate's reasons."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from graft.evaluate.calibration import Calibration
from graft.evaluate.confident_errors import ConfidentError
from graft.evaluate.gate import GateDecision
from graft.evaluate.metrics import ClassificationReport
from graft.evaluate.paired import PairedComparison, format_p_value
from graft.evaluate.stakeholder import StakeholderView, ThresholdRow
from graft.evaluate.uncertainty import MCDropoutReport
from graft.io.html_page import embedded_png, escape, html_table, number, page_head

# metrics.json key -> what the row says, for the baseline comparison
BASELINE_ROWS = {
    "baseline_accuracy": "majority class (always predict the most frequent train class)",
    "linear_baseline_accuracy": "linear model (logistic regression on standardized pixels)",
    "champion_accuracy": "current registered champion, same test split",
}


def _baselines(metrics: Mapping[str, float]) -> str:
    accuracy = metrics["test_accuracy"]
    rows: list[list[object]] = [["this model", accuracy, "-"]]
    for key, label in BASELINE_ROWS.items():
        if key in metrics:
            rows.append([label, metrics[key], f"{accuracy - metrics[key]:+.4f}"])
    table = html_table("baselines", ["predictor", "test accuracy", "model minus it"], rows)
    if "train_accuracy_eval" not in metrics:
        return table
    train = metrics["train_accuracy_eval"]
    return table + (
        f"<p id='train-eval'>Accuracy on the train split in eval mode (dropout off): "
        f"{number(train)}; train minus test: {train - accuracy:+.4f}. Compare it with the "
        f"train accuracy logged during training (dropout on) to see the dropout gap.</p>"
    )


# GateDecision.comparisons key -> the row's name, in the order the table lists them
PAIRED_ROWS = {
    "linear": "linear baseline",
    "majority": "majority class",
    "champion": "current champion",
}


def _paired_tests(comparisons: Mapping[str, PairedComparison]) -> str:
    """Model vs linear / majority / champion on the same rows: difference, interval, p,
    verdict; the verdict against the linear baseline also as a sentence."""
    if not comparisons:
        return ""
    rows: list[list[object]] = []
    for key, label in PAIRED_ROWS.items():
        if key in comparisons:
            test = comparisons[key]
            rows.append(
                [
                    label,
                    test.accuracy_b,
                    f"{test.difference:+.4f}",
                    f"[{test.ci_low:+.4f}, {test.ci_high:+.4f}]",
                    format_p_value(test.p_value),
                    test.outcome,
                ]
            )
    first = next(iter(comparisons.values()))
    level = f"{(1 - first.alpha) * 100:g}%"
    parts = [
        "<h2>Paired tests on the same test rows</h2>",
        f"<p>Model minus each predictor on the same {first.rows:,} rows: the difference, its "
        f"{level} paired-bootstrap interval ({first.resamples:,} resamples) and McNemar's exact "
        f"p-value, which decides the verdict at alpha {first.alpha:g}.</p>",
        html_table(
            "paired-tests",
            ["model vs", "its accuracy", "difference", f"{level} CI", "p", "verdict"],
            rows,
        ),
    ]
    linear = comparisons.get("linear")
    if linear is not None:
        verdict = "passed" if linear.a_better else "refused"
        parts.append(
            f"<p id='linear-verdict' class='{verdict}'><strong>The model is "
            f"{escape(linear.verdict('the linear baseline'))}.</strong></p>"
        )
    return "".join(parts)


def _stakeholder(view: StakeholderView, sweep: list[ThresholdRow]) -> str:
    parts = ["<h2>What the errors mean</h2>", f"<p id='plain-words'>{escape(view.summary)}</p>"]
    if view.daily_sentence is not None and view.daily is not None:
        parts.append(
            f"<p id='daily-counts'>At {view.daily.volume:,} cases a day: "
            f"<strong>{escape(view.daily_sentence)}</strong>.</p>"
        )
    else:
        parts.append("<p>Set <code>evaluate.daily_volume</code> to see expected daily counts.</p>")
    parts.append(_error_rates(view))
    parts.append(
        f"<h3>Threshold sweep (flag {escape(view.positive_name)} when score &ge; threshold)</h3>"
    )
    parts.append(_threshold_sweep(sweep))
    return "".join(parts)


def _error_rates(view: StakeholderView) -> str:
    return html_table(
        "error-rates",
        ["", "count on test split", "rate"],
        [
            [f"{view.positive_name} caught (TP)", view.true_positive, 1 - view.false_negative_rate],
            [f"{view.positive_name} missed (FN)", view.false_negative, view.false_negative_rate],
            [f"{view.negative_name} flagged (FP)", view.false_positive, view.false_positive_rate],
            [
                f"{view.negative_name} cleared (TN)",
                view.true_negative,
                1 - view.false_positive_rate,
            ],
        ],
    )


def _threshold_sweep(sweep: list[ThresholdRow]) -> str:
    return html_table(
        "threshold-sweep",
        ["threshold", "precision", "recall", "FPR", "FNR", "TP", "FP", "FN", "TN"],
        [
            [
                r.threshold,
                r.precision,
                r.recall,
                r.false_positive_rate,
                r.false_negative_rate,
                r.true_positive,
                r.false_positive,
                r.false_negative,
                r.true_negative,
            ]
            for r in sweep
        ],
    )


def _mc_dropout(mc: MCDropoutReport) -> str:
    accuracy_text = (
        f"<p id='mc-dropout-summary'>Mean of {mc.samples} stochastic passes (dropout on, batch "
        f"norm in inference mode, seed {mc.seed}): accuracy <strong>{number(mc.accuracy)}"
        f"</strong>, mean std of the predicted class's probability "
        f"<strong>{number(mc.mean_std)}</strong>"
    )
    if mc.mean_std_correct == mc.mean_std_correct and mc.mean_std_wrong == mc.mean_std_wrong:
        accuracy_text += (
            f" ({number(mc.mean_std_correct)} on correct predictions, "
            f"{number(mc.mean_std_wrong)} on errors: a useful uncertainty is higher on errors)"
        )
    accuracy_text += ".</p>"
    if mc.dropout_layers == 0:
        accuracy_text += "<p>The model has no dropout layer: every pass is identical.</p>"
    table = html_table(
        "mc-dropout-latency",
        ["samples", "latency (ms, whole split)", "ms per example", "accuracy"],
        [
            [row.samples, row.latency_ms, row.latency_ms_per_example, row.accuracy]
            for row in mc.by_sample_count
        ],
    )
    return "<h2>Uncertainty (MC dropout)</h2>" + accuracy_text + table


def render_report(
    title: str,
    metrics: Mapping[str, float],
    report: ClassificationReport,
    class_names: list[str],
    calibration: Calibration,
    decision: GateDecision,
    confident_errors: list[ConfidentError],
    reliability_png: Path,
    confusion_png: Path | None = None,
    stakeholder: StakeholderView | None = None,
    sweep: list[ThresholdRow] | None = None,
    mc_dropout: MCDropoutReport | None = None,
) -> str:
    """One self-contained HTML page; the PNGs are embedded as base64 ``<img>``."""
    verdict = "passed" if decision.passed else "refused"
    reasons = "".join(f"<li>{escape(reason)}</li>" for reason in decision.reasons)
    confusion = (
        embedded_png(confusion_png, "confusion matrix") if confusion_png else "<p>not plotted</p>"
    )
    parts = [
        page_head(title),
        f"<h2>Gate: <span id='gate' class='{verdict}'>{verdict}</span></h2>",
        f"<ul id='gate-reasons'>{reasons}</ul>",
        "<h2>Metrics (test split)</h2>",
        html_table("metrics", ["metric", "value"], [[k, float(v)] for k, v in metrics.items()]),
        "<h2>Against common-sense baselines</h2>",
        _baselines(metrics),
        _paired_tests(decision.comparisons),
        "<h2>Per class</h2>",
        _per_class(report, class_names),
        "<h2>Confusion matrix</h2>",
        confusion,
        f"<h2>Calibration</h2><p>Expected calibration error over {len(calibration.bins)} "
        f"equal-width bins: <strong id='ece'>{number(calibration.ece)}</strong> "
        "(0 = confidence matches accuracy).</p>",
        embedded_png(reliability_png, "reliability diagram"),
    ]
    if stakeholder is not None:
        parts.append(_stakeholder(stakeholder, sweep or []))
    if mc_dropout is not None:
        parts.append(_mc_dropout(mc_dropout))
    parts += [
        "<h2>Most confident errors</h2>",
        "<p>Wrong predictions the model was surest of: read these rows first "
        "(mislabelled data or a blind spot).</p>",
        _confident_errors(confident_errors, class_names),
        "</body></html>",
    ]
    return "".join(parts)


def _per_class(report: ClassificationReport, class_names: list[str]) -> str:
    return html_table(
        "per-class",
        ["class", "precision", "recall", "F1", "support"],
        [
            [name, p, r, f, s]
            for name, p, r, f, s in zip(
                class_names, report.precision, report.recall, report.f1, report.support, strict=True
            )
        ],
    )


def _confident_errors(errors: list[ConfidentError], class_names: list[str]) -> str:
    return html_table(
        "confident-errors",
        ["row", "true", "predicted", "confidence"],
        [[e.index, class_names[e.true], class_names[e.predicted], e.confidence] for e in errors],
    )
