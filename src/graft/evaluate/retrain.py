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
import torch

from graft.config import PhaseConfig
from graft.nn.models import GraftNet, ModelSpec, build_model


@dataclass(frozen=True)
class RecipeStart:
    """Where one retrain starts: the architecture, its starting weights and the phases it
    trains through (the optimizer and the other finetune settings are the train function's)."""

    spec: ModelSpec
    init_state: dict[str, torch.Tensor]
    phases: list[PhaseConfig]

    def fresh_model(self) -> GraftNet:
        model = build_model(self.spec)
        model.load_state_dict(self.init_state)
        return model


TrainFromStart = Callable[[RecipeStart, np.ndarray, np.ndarray, int], GraftNet]
"""A fresh model trained from the start on (x, y) with a seed (batch order, dropout)."""

ScoreAccuracy = Callable[[GraftNet, np.ndarray, np.ndarray], float]
"""A trained model's accuracy on (x, y)."""


@dataclass(frozen=True)
class Retraining:
    """The finetune recipe as a comparison retrains it: where the recipe starts (the
    pretrained backbone with its seeded new head), how to train and how to score."""

    start: RecipeStart
    train: TrainFromStart
    accuracy: ScoreAccuracy
