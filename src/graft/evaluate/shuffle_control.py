"""The label-shuffle control: the finetune recipe trained on permuted target labels.

Permuting the labels keeps every input and the class frequencies and destroys the relation
between them, so whatever the control scores is what the recipe reaches without signal
(the majority class, or memorized noise). A real model that does not beat it by a margin
learned nothing the data can vouch for. Trained in process by the train function the stage
passes (:class:`graft.evaluate.retrain.Retraining`): one small model on the target task, from
the same starting weights the real finetune used.
"""

from __future__ import annotations

import numpy as np

from graft.evaluate.retrain import Retraining


def label_shuffle_control(
    retraining: Retraining,
    train: tuple[np.ndarray, np.ndarray],
    scored: tuple[np.ndarray, np.ndarray],
    seed: int,
) -> float:
    """Accuracy on ``scored`` of the recipe trained on ``train`` with permuted labels."""
    x, y = train
    permuted = np.random.default_rng(seed).permutation(y)
    model = retraining.train(retraining.start, x, permuted, seed)
    return retraining.accuracy(model, *scored)
