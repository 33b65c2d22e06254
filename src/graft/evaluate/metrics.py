"""Classification metrics, computed from predictions so they can be checked by hand."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class ClassificationReport:
    accuracy: float
    loss: float
    confusion: list[list[int]]  # rows: true class, columns: predicted class
    precision: list[float] = field(default_factory=list)
    recall: list[float] = field(default_factory=list)
    f1: list[float] = field(default_factory=list)
    support: list[int] = field(default_factory=list)

    @property
    def macro_f1(self) -> float:
        return float(np.mean(self.f1)) if self.f1 else 0.0


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> np.ndarray:
    matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(matrix, (y_true, y_pred), 1)
    return matrix


def classification_report(
    y_true: np.ndarray, probabilities: np.ndarray, num_classes: int
) -> ClassificationReport:
    """Accuracy, mean cross-entropy and per-class precision/recall/F1 (0 where undefined)."""
    y_pred = probabilities.argmax(axis=1)
    matrix = confusion_matrix(y_true, y_pred, num_classes)
    true_positive = np.diag(matrix).astype(float)
    predicted = matrix.sum(axis=0).astype(float)
    actual = matrix.sum(axis=1).astype(float)
    precision = np.divide(
        true_positive, predicted, out=np.zeros_like(true_positive), where=predicted > 0
    )
    recall = np.divide(true_positive, actual, out=np.zeros_like(true_positive), where=actual > 0)
    denominator = precision + recall
    f1 = np.divide(
        2 * precision * recall, denominator, out=np.zeros_like(denominator), where=denominator > 0
    )
    picked = probabilities[np.arange(len(y_true)), y_true]
    loss = float(-np.log(np.clip(picked, 1e-12, 1.0)).mean())
    return ClassificationReport(
        accuracy=float((y_pred == y_true).mean()),
        loss=loss,
        confusion=matrix.tolist(),
        precision=precision.tolist(),
        recall=recall.tolist(),
        f1=f1.tolist(),
        support=actual.astype(int).tolist(),
    )


def majority_baseline(y_train: np.ndarray, y_test: np.ndarray) -> tuple[int, float]:
    """The common-sense baseline: always predict the most frequent training class."""
    majority = int(np.bincount(y_train).argmax())
    return majority, float((y_test == majority).mean())


# The curve a KFP ClassificationMetrics artifact holds lives in KFP's metadata store and is
# drawn point by point in the UI: a few hundred points draw it smoothly at any test-set size.
ROC_MAX_POINTS = 201


@dataclass
class RocCurve:
    """A binary task's ROC: class 1 is flagged when its probability is >= the threshold.

    The first point's threshold is above every score (nothing flagged: 0, 0), the last one's
    the lowest score (everything flagged: 1, 1). ``auc`` is the area under the full curve,
    also when the points are thinned to ``ROC_MAX_POINTS``."""

    false_positive_rate: list[float]
    true_positive_rate: list[float]
    thresholds: list[float]
    auc: float


def roc_curve(
    y_true: np.ndarray, positive_scores: np.ndarray, max_points: int = ROC_MAX_POINTS
) -> RocCurve | None:
    """The ROC of scores for class 1 against 0/1 labels; None when the labels hold one class
    (a rate has no denominator)."""
    y = np.asarray(y_true).astype(bool)
    scores = np.asarray(positive_scores, dtype=np.float64)
    positives, negatives = int(y.sum()), int((~y).sum())
    if positives == 0 or negatives == 0:
        return None
    order = np.argsort(-scores, kind="stable")
    ranked, hits = scores[order], y[order]
    # one point per distinct score: rows tied on a score are flagged together
    last_of_tie = np.r_[np.flatnonzero(np.diff(ranked)), len(ranked) - 1]
    tpr = np.r_[0.0, np.cumsum(hits)[last_of_tie] / positives]
    fpr = np.r_[0.0, np.cumsum(~hits)[last_of_tie] / negatives]
    thresholds = np.r_[np.nextafter(ranked[0], np.inf), ranked[last_of_tie]]
    auc = float(np.trapezoid(tpr, fpr))
    if len(fpr) > max_points:
        keep = np.unique(np.linspace(0, len(fpr) - 1, max_points).round().astype(int))
        fpr, tpr, thresholds = fpr[keep], tpr[keep], thresholds[keep]
    return RocCurve(fpr.tolist(), tpr.tolist(), thresholds.tolist(), auc)
