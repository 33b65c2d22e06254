"""The label-shuffle control: the finetune recipe trained on permuted target labels.

Permuting the labels keeps every input and the class frequencies and destroys the relation
between them, so whatever the control scores is what the recipe reaches without signal
(the majority class, or memorized noise). A real model that does not beat it by a margin
learned nothing the data can vouch for. Trained in process (graft.train.fold_fit): one small
model on the target task, from the same starting weights the real finetune used.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import TensorDataset

from graft.train.fold_fit import FinetuneStart, train_fresh_model
from graft.train.loop import evaluate_model


def label_shuffle_control(
    start: FinetuneStart,
    train: tuple[np.ndarray, np.ndarray],
    scored: tuple[np.ndarray, np.ndarray],
    seed: int,
) -> float:
    """Accuracy on ``scored`` of the recipe trained on ``train`` with permuted labels."""
    x, y = train
    permuted = np.random.default_rng(seed).permutation(y)
    model, _ = train_fresh_model(start, x, permuted, seed)
    data = TensorDataset(
        torch.from_numpy(np.asarray(scored[0], dtype=np.float32)),
        torch.from_numpy(np.asarray(scored[1], dtype=np.int64)),
    )
    return evaluate_model(model, data)["accuracy"]
