"""Monte Carlo dropout: average many stochastic passes of a trained dropout model.

Keras' ``model(x, training=True)`` and PyTorch's ``model.train()`` both also flip batch norm into
training mode, which normalizes with batch statistics and overwrites the running averages learned
during training. Here the model is put in ``eval()`` and only the dropout modules are switched
back to training mode, so BN (and anything else mode-dependent) behaves exactly as at inference.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

# Every dropout flavour, including alpha dropout for SELU nets and the channel-wise variants.
DROPOUT_LAYERS: tuple[type[nn.Module], ...] = (
    nn.Dropout,
    nn.Dropout1d,
    nn.Dropout2d,
    nn.Dropout3d,
    nn.AlphaDropout,
    nn.FeatureAlphaDropout,
)


@contextmanager
def mc_dropout_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Within the block, ``model`` is in eval mode except its dropout modules, which sample.

    Every submodule's previous ``training`` flag is restored on exit, even if the block raises, so
    calling this on a model mid-training does not leave it in eval mode.
    """
    previous = {module: module.training for module in model.modules()}
    try:
        model.eval()
        for module in model.modules():
            if isinstance(module, DROPOUT_LAYERS):
                module.train()
        yield model
    finally:
        for module, was_training in previous.items():
            module.training = was_training


def mc_predict(
    model: nn.Module, x: torch.Tensor, samples: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Return the mean and std over ``samples`` stochastic passes of softmax(model(x)).

    ``model`` must return logits of shape [N, C]; both outputs have that shape. The std is the
    population std (no Bessel correction), so it is exactly 0 for a model without dropout and
    defined for ``samples == 1``. Draws use the global torch RNG: seed it for reproducibility.
    """
    if samples < 1:
        raise ValueError(f"samples must be >= 1, got {samples}")
    with torch.no_grad(), mc_dropout_mode(model):
        probabilities = torch.stack(
            [torch.softmax(model(x), dim=-1) for _ in range(samples)]
        )  # [S, N, C]
    mean = probabilities.mean(dim=0)
    std = probabilities.std(dim=0, correction=0)
    return mean, std
