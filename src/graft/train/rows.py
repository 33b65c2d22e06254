"""A split's rows as the training loops read them, and a model's loss and accuracy on them."""

from __future__ import annotations

import io

import numpy as np
import torch
from torch.utils.data import TensorDataset

from graft.nn.models import GraftNet
from graft.train.objectives import objective_loss


def array_rows(x: np.ndarray, y: np.ndarray) -> TensorDataset:
    """Rows (``x``, ``y``) as the float/long tensors the loops train on."""
    return TensorDataset(
        torch.from_numpy(np.asarray(x, dtype=np.float32)),
        torch.from_numpy(np.asarray(y, dtype=np.int64)),
    )


def load_split_rows(path: str | io.BytesIO) -> TensorDataset:
    """A split's ``.npz`` (``x``, ``y``) as the float/long tensors the loop trains on."""
    with np.load(path) as archive:
        return array_rows(archive["x"], archive["y"])


@torch.no_grad()
def evaluate_model(
    model: GraftNet, dataset: TensorDataset, batch_size: int = 1024, objective: str = "classify"
) -> dict[str, float]:
    """Mean loss, and accuracy when the objective has labels to score.

    Batches are slices of the dataset's tensors in order, the batches a non-shuffling
    ``DataLoader`` would give without its per-example indexing and re-stacking (which cost
    about as much as the forward passes of a small model)."""
    model.eval()
    device = next(model.parameters()).device
    inputs, targets = dataset.tensors
    loss_sum, correct, count = 0.0, 0, 0
    for start in range(0, len(inputs), batch_size):
        xb = inputs[start : start + batch_size].to(device)
        yb = targets[start : start + batch_size].to(device)
        logits = model(xb)
        loss_sum += float(objective_loss(model, logits, xb, yb, objective, reduction="sum"))
        if objective == "classify":
            correct += int((logits.argmax(1) == yb).sum())
        count += len(yb)
    scores = {"loss": loss_sum / max(count, 1)}
    if objective == "classify":
        scores["accuracy"] = correct / max(count, 1)
    return scores
