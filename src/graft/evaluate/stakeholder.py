"""Binary tasks in the words of the people who live with the errors.

Rates come from the test split's confusion matrix. Expected daily counts scale them to a
production ``daily_volume`` at a production ``prevalence`` (share of positives); without a
prevalence the test split's own is used, without a volume there are no daily counts.
Class 1 is the positive class ("caught"/"missed"), class 0 the negative one ("flagged").
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def _ratio(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator > 0 else 0.0


@dataclass
class DailyCounts:
    volume: int
    positives: int
    caught: int  # true positives a day
    missed: int  # false negatives a day
    flagged_negatives: int  # false positives a day
    cleared: int  # true negatives a day


@dataclass
class StakeholderView:
    positive_name: str
    negative_name: str
    true_positive: int
    false_negative: int
    false_positive: int
    true_negative: int
    false_negative_rate: float
    false_positive_rate: float
    prevalence: float
    prevalence_source: str  # "test split" or "config"
    precision_at_prevalence: float
    daily: DailyCounts | None
    summary: str  # the rates in plain words
    daily_sentence: str | None  # e.g. "200 valid flagged a day, 14 missed, 266 caught"


def stakeholder_view(
    confusion: list[list[int]] | np.ndarray,
    class_names: list[str],
    daily_volume: int | None = None,
    prevalence: float | None = None,
) -> StakeholderView:
    matrix = np.asarray(confusion, dtype=np.int64)
    if matrix.shape != (2, 2) or len(class_names) != 2:
        raise ValueError(f"a binary confusion matrix and two class names are needed, got {matrix}")
    tn, fp = int(matrix[0, 0]), int(matrix[0, 1])
    fn, tp = int(matrix[1, 0]), int(matrix[1, 1])
    fnr = _ratio(fn, tp + fn)
    fpr = _ratio(fp, fp + tn)
    if prevalence is None:
        prevalence_used, source = _ratio(tp + fn, int(matrix.sum())), "test split"
    else:
        prevalence_used, source = float(prevalence), "config"
    recall = 1.0 - fnr if tp + fn > 0 else 0.0
    precision = _ratio(
        recall * prevalence_used, recall * prevalence_used + fpr * (1 - prevalence_used)
    )
    negative, positive = class_names
    summary = (
        f"The model misses {fnr:.1%} of real {positive} cases (false-negative rate) and "
        f"wrongly flags {fpr:.1%} of {negative} cases as {positive} (false-positive rate). "
        f"At a prevalence of {prevalence_used:.2%} ({source}), {precision:.1%} of flagged "
        f"cases are really {positive}."
    )
    daily = None
    sentence = None
    if daily_volume is not None:
        daily = _daily_counts(daily_volume, prevalence_used, recall, fnr, fpr)
        sentence = (
            f"{daily.flagged_negatives} {negative} flagged a day, {daily.missed} missed, "
            f"{daily.caught} caught"
        )
    return StakeholderView(
        positive_name=positive,
        negative_name=negative,
        true_positive=tp,
        false_negative=fn,
        false_positive=fp,
        true_negative=tn,
        false_negative_rate=fnr,
        false_positive_rate=fpr,
        prevalence=prevalence_used,
        prevalence_source=source,
        precision_at_prevalence=precision,
        daily=daily,
        summary=summary,
        daily_sentence=sentence,
    )


def _daily_counts(
    volume: int, prevalence: float, recall: float, fnr: float, fpr: float
) -> DailyCounts:
    """The rates as expected counts in a day of ``volume`` cases at ``prevalence``."""
    positives = volume * prevalence
    negatives = volume - positives
    return DailyCounts(
        volume=int(volume),
        positives=round(positives),
        caught=round(positives * recall),
        missed=round(positives * fnr),
        flagged_negatives=round(negatives * fpr),
        cleared=round(negatives * (1.0 - fpr)),
    )


@dataclass
class ThresholdRow:
    threshold: float
    precision: float  # 0 when nothing is predicted positive
    recall: float
    false_positive_rate: float
    false_negative_rate: float
    true_positive: int
    false_positive: int
    false_negative: int
    true_negative: int


def threshold_sweep(
    y_true: np.ndarray, positive_scores: np.ndarray, thresholds: list[float]
) -> list[ThresholdRow]:
    """Predict positive when the class-1 score is >= threshold; one row per threshold, sorted."""
    positive = np.asarray(y_true) == 1
    rows: list[ThresholdRow] = []
    for threshold in sorted(thresholds):
        flagged = np.asarray(positive_scores) >= threshold
        tp = int((flagged & positive).sum())
        fp = int((flagged & ~positive).sum())
        fn = int((~flagged & positive).sum())
        tn = int((~flagged & ~positive).sum())
        rows.append(
            ThresholdRow(
                threshold=float(threshold),
                precision=_ratio(tp, tp + fp),
                recall=_ratio(tp, tp + fn),
                false_positive_rate=_ratio(fp, fp + tn),
                false_negative_rate=_ratio(fn, tp + fn),
                true_positive=tp,
                false_positive=fp,
                false_negative=fn,
                true_negative=tn,
            )
        )
    return rows
