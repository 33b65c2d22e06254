"""What the comparisons that retrain the finetune recipe receive from training.

The label-shuffle control and the transfer-vs-scratch report train fresh models, but
evaluate never imports graft.train: the stage that runs them (graft.stages.evaluate) hands
them graft.train's in-process finetune loop as a function, and they describe only where each
of their models starts.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from graft.nn.model_start import ModelStart
from graft.nn.models import GraftNet

TrainFromStart = Callable[[ModelStart, np.ndarray, np.ndarray, int], GraftNet]
"""A fresh model trained from the start on (x, y) with a seed (batch order, dropout)."""

ScoreAccuracy = Callable[[GraftNet, np.ndarray, np.ndarray], float]
"""A trained model's accuracy on (x, y)."""


@dataclass(frozen=True)
class Retraining:
    """The finetune recipe as a comparison retrains it: where the recipe starts (the
    pretrained backbone with its seeded new head), how to train and how to score."""

    start: ModelStart
    train: TrainFromStart
    accuracy: ScoreAccuracy
