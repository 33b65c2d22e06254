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
