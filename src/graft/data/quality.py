"""Data-quality findings a person must see before training: leakage, constant columns,
missing values, class imbalance. Each returns numbers for the report; the caller decides
which are errors (``DataConfig.leakage_policy``)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from graft.errors import DatasetError

MAX_LEAKAGE_FEATURES = 4096  # one cheap 1-D classifier per column; images are skipped


@dataclass
class LeakageFinding:
    feature: str
    val_balanced_accuracy: float


@dataclass
class ImbalanceFinding:
    counts: dict[str, int]
    minority_share: float
    ratio: float  # largest / smallest class count
    imbalanced: bool
    suggestion: str


@dataclass
class QualityReport:
    missing_values: dict[str, int] = field(default_factory=dict)  # column -> NaN count
    constant_columns: list[str] = field(default_factory=list)
    leakage: list[LeakageFinding] = field(default_factory=list)
    leakage_checked: bool = False
    # which rows the leakage check scored when not the whole train and val splits (a streamed
    # table's seeded sample), or why it did not run; empty: the whole splits, or image data
    leakage_scope: str = ""
    imbalance: ImbalanceFinding | None = None
    warnings: list[str] = field(default_factory=list)


def column_names(num_columns: int, feature_names: list[str] | None) -> list[str]:
    return list(feature_names) if feature_names else [f"x{i}" for i in range(num_columns)]


def missing_per_column(x: np.ndarray, names: list[str]) -> dict[str, int]:
    counts = np.isnan(x.reshape(len(x), -1)).sum(axis=0)
    return {names[i]: int(c) for i, c in enumerate(counts) if c}


def constant_columns(x: np.ndarray, names: list[str]) -> list[str]:
    """Columns with one value on every row (NaNs ignored): they carry no information."""
    flat = x.reshape(len(x), -1)
    with np.errstate(invalid="ignore"):
        spread = np.nanmax(flat, axis=0) - np.nanmin(flat, axis=0)
    return [names[i] for i in np.flatnonzero(~(spread > 0))]


def _balanced_accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    recalls = [float((y_pred[y_true == c] == c).mean()) for c in np.unique(y_true)]
    return float(np.mean(recalls))


def single_feature_scores(
    x_train: np.ndarray, y_train: np.ndarray, x_val: np.ndarray, y_val: np.ndarray
) -> np.ndarray:
    """Val balanced accuracy of a one-feature classifier per column.

    The classifier is nearest-neighbour on that one feature: each distinct train value votes
    its majority label, a val row takes the label of the closest train value. A score near 1
    means the feature alone gives the label away (target leakage); an ordinary informative
    feature scores well below, since one noisy neighbour decides.
    """
    classes = np.unique(y_train)
    train_codes = np.searchsorted(classes, y_train)
    scores = np.zeros(x_train.shape[1])
    for column in range(x_train.shape[1]):
        values, inverse = np.unique(x_train[:, column], return_inverse=True)
        votes = np.zeros((len(values), len(classes)), dtype=np.int64)
        np.add.at(votes, (inverse, train_codes), 1)
        value_label = classes[votes.argmax(axis=1)]
        query = x_val[:, column]
        right = np.clip(np.searchsorted(values, query), 0, len(values) - 1)
        left = np.clip(right - 1, 0, len(values) - 1)
        nearest = np.where(
            np.abs(query - values[left]) <= np.abs(values[right] - query), left, right
        )
        scores[column] = _balanced_accuracy(y_val, value_label[nearest])
    return scores


def leakage_findings(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_val: np.ndarray,
    y_val: np.ndarray,
    names: list[str],
    threshold: float,
) -> list[LeakageFinding]:
    scores = single_feature_scores(x_train, y_train, x_val, y_val)
    return [
        LeakageFinding(names[i], round(float(scores[i]), 4))
        for i in np.argsort(-scores, kind="stable")
        if scores[i] >= threshold
    ]


def apply_leakage_policy(report: QualityReport, threshold: float, policy: str) -> None:
    """``report``'s leakage findings as warnings (``data.leakage_policy: warn``), or the first
    as a :class:`DatasetError` (``error``)."""
    scope = f" [{report.leakage_scope}]" if report.leakage_scope else ""
    for finding in report.leakage:
        message = (
            f"feature '{finding.feature}' alone predicts the label (val balanced accuracy "
            f"{finding.val_balanced_accuracy:.3f} >= {threshold}{scope}): is it available at "
            "prediction time, or derived from the label?"
        )
        if policy == "error":
            raise DatasetError(
                message + " Drop the column, or set data.leakage_policy=warn if it is legitimate"
            )
        report.warnings.append("leakage: " + message)


def imbalance_finding(y: np.ndarray, class_names: list[str], max_ratio: float) -> ImbalanceFinding:
    labels, counts = np.unique(y, return_counts=True)
    ratio = float(counts.max() / counts.min())
    imbalanced = ratio >= max_ratio
    if not imbalanced:
        suggestion = "classes are roughly balanced: accuracy and ROC AUC are meaningful"
    elif len(labels) == 2:
        suggestion = (
            "imbalanced binary task: accuracy rewards always predicting the majority; "
            "use F1 / precision-recall / PR-AUC"
        )
    else:
        suggestion = (
            "imbalanced classes: accuracy rewards the majority classes; "
            "use macro-F1 / balanced accuracy / per-class recall"
        )
    return ImbalanceFinding(
        counts={class_names[int(c)]: int(n) for c, n in zip(labels, counts, strict=True)},
        minority_share=round(float(counts.min() / counts.sum()), 4),
        ratio=round(ratio, 3),
        imbalanced=imbalanced,
        suggestion=suggestion,
    )
