"""graft.train's in-process finetune loop, handed to the evaluations that retrain the recipe.

graft.evaluate never imports graft.train: the label-shuffle control and the transfer-vs-scratch
report take a :class:`~graft.evaluate.retrain.Retraining` (where the recipe starts, a train
function and a scorer), which this module builds from a finetune request.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from graft.evaluate.retrain import Retraining
from graft.nn.model_start import ModelStart
from graft.nn.models import GraftNet
from graft.train.in_process import FinetuneStart, train_fresh_model
from graft.train.request import FitRequest
from graft.train.rows import array_rows, evaluate_model


def finetune_retraining(request: FitRequest) -> Retraining:
    """The finetune recipe of ``request`` (its starting weights, phases and settings)."""
    finetune = FinetuneStart.from_request(request)

    def train(start: ModelStart, x: np.ndarray, y: np.ndarray, seed: int) -> GraftNet:
        model, _ = train_fresh_model(replace(finetune, model=start), x, y, seed)
        return model

    return Retraining(finetune.model, train, scored_accuracy)


def scored_accuracy(model: GraftNet, x: np.ndarray, y: np.ndarray) -> float:
    """Accuracy as the training loop scores its validation rows."""
    return evaluate_model(model, array_rows(x, y))["accuracy"]
