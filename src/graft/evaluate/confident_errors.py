"""The predictions a model got wrong while being most sure of itself: the first ones to read."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class ConfidentError:
    index: int  # row in the evaluated split
    true: int
    predicted: int
    confidence: float  # probability given to the (wrong) predicted class


def most_confident_errors(
    y_true: np.ndarray, probabilities: np.ndarray, limit: int
) -> list[ConfidentError]:
    """Wrong predictions ordered by confidence, highest first; ties keep row order."""
    predicted = probabilities.argmax(axis=1)
    confidence = probabilities.max(axis=1)
    wrong = np.flatnonzero(predicted != y_true)
    order = wrong[np.argsort(-confidence[wrong], kind="stable")][: max(limit, 0)]
    return [
        ConfidentError(
            index=int(i),
            true=int(y_true[i]),
            predicted=int(predicted[i]),
            confidence=float(confidence[i]),
        )
        for i in order
    ]
