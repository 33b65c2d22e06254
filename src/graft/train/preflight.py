""" "Useful overfitting" as a preflight: before paying for a distributed fit, check on one
process that the model can drive the loss on one small batch near zero. If it cannot, the
wiring (labels, loss, architecture, normalization) is broken and the real run would waste
its budget."""

from __future__ import annotations

import copy
import logging

import numpy as np
import torch

from graft.errors import TrainingError
from graft.nn.models import GraftNet
from graft.train.objectives import objective_loss

log = logging.getLogger(__name__)

BATCH = 16
STEPS = 200
REQUIRED_DROP = 0.1  # final loss must be below 10% of the first


def overfit_one_batch(
    model: GraftNet, train_path: str, seed: int, objective: str = "classify"
) -> tuple[float, float]:
    """Return (first loss, last loss); raise TrainingError if the loss does not fall."""
    with np.load(train_path) as archive:
        x = torch.from_numpy(archive["x"][:BATCH].astype(np.float32))
        y = torch.from_numpy(archive["y"][:BATCH].astype(np.int64))
    probe = copy.deepcopy(model)  # the real model's initial weights stay untouched
    torch.manual_seed(seed)
    probe.eval()  # no dropout noise: this checks capacity and wiring, not regularization
    optimizer = torch.optim.Adam(probe.parameters(), lr=3e-3)
    first = last = 0.0
    for step in range(STEPS):
        optimizer.zero_grad()
        loss = objective_loss(probe, probe(x), x, y, objective)
        loss.backward()
        optimizer.step()
        if step == 0:
            first = loss.item()
        last = loss.item()
    log.info("preflight: loss on one batch %.4f -> %.4f in %d steps", first, last, STEPS)
    if not last < max(REQUIRED_DROP * first, 1e-3):
        raise TrainingError(
            f"preflight failed: the model could not overfit one batch of {BATCH} examples "
            f"(loss {first:.4f} -> {last:.4f} in {STEPS} steps); check labels, inputs and "
            "architecture, or set pretrain.preflight_overfit_batch=false"
        )
    return first, last
