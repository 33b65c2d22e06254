"""graft.train's in-process finetune loop, handed to the evaluations that retrain the recipe.

graft.evaluate never imports graft.train: the label-shuffle control and the transfer-vs-scratch
report take a :class:`~graft.evaluate.retrain.Retraining` (where the recipe starts, a train
function and a scorer), which this module builds from a finetune request.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch
from torch.utils.data import TensorDataset

from graft.evaluate.retrain import RecipeStart, Retraining
from graft.nn.models import GraftNet
from graft.train.in_process import FinetuneStart, train_fresh_model
from graft.train.request import FitRequest
from graft.train.rows import evaluate_model


def finetune_retraining(request: FitRequest) -> Retraining:
    """The finetune recipe of ``request`` (its starting weights, phases and settings)."""
    finetune = FinetuneStart.from_request(request)

    def train(start: RecipeStart, x: np.ndarray, y: np.ndarray, seed: int) -> GraftNet:
        arm = replace(finetune, spec=start.spec, init_state=start.init_state, phases=start.phases)
        model, _ = train_fresh_model(arm, x, y, seed)
        return model

    start = RecipeStart(finetune.spec, finetune.init_state, finetune.phases)
    return Retraining(start, train, scored_accuracy)


def scored_accuracy(model: GraftNet, x: np.ndarray, y: np.ndarray) -> float:
    """Accuracy as the training loop scores its validation rows."""
    data = TensorDataset(
        torch.from_numpy(np.asarray(x, dtype=np.float32)),
        torch.from_numpy(np.asarray(y, dtype=np.int64)),
    )
    return evaluate_model(model, data)["accuracy"]
