"""Training objectives: classification, or reconstruction for autoencoder pretraining."""

from __future__ import annotations

import torch
from torch import nn

from graft.nn.models import GraftNet


def objective_loss(
    model: GraftNet,
    output: torch.Tensor,
    xb: torch.Tensor,
    yb: torch.Tensor,
    objective: str,
    reduction: str = "mean",
) -> torch.Tensor:
    """Cross-entropy on the labels, or an autoencoder's mean squared reconstruction error
    per input feature (``reduction="sum"`` sums it over the batch's examples)."""
    if objective == "autoencoder":
        error = nn.functional.mse_loss(output, model.reconstruction_target(xb), reduction="none")
        per_example = error.mean(dim=1)
        return per_example.sum() if reduction == "sum" else per_example.mean()
    return nn.functional.cross_entropy(output, yb, reduction=reduction)
