"""A split's rows as the training loops read them, and a model's loss and accuracy on them."""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import torch
from torch.utils.data import BatchSampler, DataLoader, Dataset, RandomSampler, TensorDataset

from graft.nn.models import GraftNet
from graft.train.objectives import objective_loss


def array_rows(x: np.ndarray, y: np.ndarray) -> TensorDataset:
    """Rows (``x``, ``y``) as the float/long tensors the loops train on."""
    return TensorDataset(
        torch.from_numpy(np.asarray(x, dtype=np.float32)),
        torch.from_numpy(np.asarray(y, dtype=np.int64)),
    )


class _GatheredBatches(Dataset[tuple[torch.Tensor, ...]]):
    """A TensorDataset read a batch at a time: ``dataset[indices]`` gathers the rows with one
    ``index_select`` per tensor."""

    def __init__(self, rows: TensorDataset) -> None:
        self.tensors = rows.tensors

    def __len__(self) -> int:
        return len(self.tensors[0])

    def __getitem__(self, indices: list[int]) -> tuple[torch.Tensor, ...]:
        picked = torch.as_tensor(indices)
        return tuple(tensor.index_select(0, picked) for tensor in self.tensors)


def shuffled_batches(
    rows: TensorDataset, batch_size: int, generator: torch.Generator, drop_last: bool
) -> DataLoader[Any]:
    """The batches of ``DataLoader(rows, batch_size, shuffle=True, generator=generator,
    drop_last=drop_last)``, tensor for tensor, from the same draws of ``generator``, each
    gathered in one indexing op instead of ``batch_size`` row reads and a ``torch.stack``
    (about 0.15 ms of a 1 ms MLP step on these CPUs: bench/loop_throughput.py).

    One process only: under DDP, Ray Train's ``prepare_data_loader`` replaces a loader's
    sampler with a ``DistributedSampler`` over rows, which a batch sampler cannot take."""
    sampler = BatchSampler(RandomSampler(rows, generator=generator), batch_size, drop_last)
    # batch_size=None: each of the sampler's index lists is fetched as one item; the loader
    # still draws its base seed from ``generator`` as a shuffling DataLoader does
    return DataLoader(_GatheredBatches(rows), batch_size=None, sampler=sampler, generator=generator)


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
