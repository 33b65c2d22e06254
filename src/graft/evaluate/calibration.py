"""Calibration: does a 90%-confident prediction come true 90% of the time?"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class ReliabilityBin:
    lower: float
    upper: float
    count: int
    mean_confidence: float  # 0 for an empty bin
    accuracy: float  # 0 for an empty bin


@dataclass
class Calibration:
    """Expected calibration error over equal-width bins, and the bins behind it."""

    ece: float
    bins: list[ReliabilityBin] = field(default_factory=list)


def calibration(confidences: np.ndarray, correct: np.ndarray, n_bins: int) -> Calibration:
    """ECE = sum over bins of (bin share of examples) * |bin accuracy - bin mean confidence|.

    Bins are equal-width and closed on the right, ``(lower, upper]``; a confidence of exactly 0
    falls in the first bin. ``confidences`` is the probability of the predicted class and
    ``correct`` says whether that prediction was right.
    """
    if n_bins < 1:
        raise ValueError(f"n_bins must be >= 1, got {n_bins}")
    confidences = np.asarray(confidences, dtype=float)
    correct = np.asarray(correct, dtype=bool)
    if confidences.shape != correct.shape or confidences.ndim != 1:
        raise ValueError(
            f"confidences {confidences.shape} and correct {correct.shape} must be equal 1-D shapes"
        )
    # i / n is correctly rounded, so an edge equals the literal (3/10 == 0.3): no off-by-one bins
    edges = np.arange(n_bins + 1) / n_bins
    index = np.clip(np.digitize(confidences, edges, right=True) - 1, 0, n_bins - 1)
    total = len(confidences)
    ece = 0.0
    bins: list[ReliabilityBin] = []
    for b in range(n_bins):
        member = index == b
        count = int(member.sum())
        mean_confidence = float(confidences[member].mean()) if count else 0.0
        accuracy = float(correct[member].mean()) if count else 0.0
        if count:
            ece += count / total * abs(accuracy - mean_confidence)
        bins.append(
            ReliabilityBin(
                lower=float(edges[b]),
                upper=float(edges[b + 1]),
                count=count,
                mean_confidence=mean_confidence,
                accuracy=accuracy,
            )
        )
    return Calibration(ece=float(ece), bins=bins)


def top_label_calibration(
    y_true: np.ndarray, probabilities: np.ndarray, n_bins: int
) -> Calibration:
    """Calibration of the predicted class: confidence = max probability, correct = argmax hit."""
    predicted = probabilities.argmax(axis=1)
    return calibration(probabilities.max(axis=1), predicted == y_true, n_bins)
