"""Hidden-layer activations built from :class:`graft.config.ActivationConfig`.

Every hyperparameter is passed to PyTorch explicitly, because PyTorch's defaults differ from the
book's (LeakyReLU slope 0.01 vs the paper's 0.2; Keras 0.3). The activation's *family* also picks
the weight initialization when ``model.init`` is ``auto`` (see :mod:`graft.nn.init`).
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from graft.config import ActivationConfig, ActivationName

InitFamily = Literal["glorot", "he", "lecun"]

# The book's init table (Hands-On ML ch. 11): Glorot for saturating or linear outputs, He for the
# ReLU-like family (they halve the variance on average, so the weights must double it), LeCun for
# SELU (its fixed point needs Var(W) = 1/fan_in exactly). "none" and "softmax" are not hidden
# activations in the schema but name the linear and output layers, which follow Glorot.
GAIN_FAMILY: dict[str, InitFamily] = {
    "none": "glorot",
    "tanh": "glorot",
    "sigmoid": "glorot",
    "softmax": "glorot",
    "relu": "he",
    "leaky_relu": "he",
    "rrelu": "he",
    "prelu": "he",
    "elu": "he",
    "gelu": "he",
    "gelu_tanh": "he",
    "gelu_sigmoid": "he",
    "silu": "he",
    "swish": "he",
    "mish": "he",
    "selu": "lecun",
}

# 1.702 makes z * sigmoid(1.702 z) the closest sigmoid fit to z * Phi(z) (Hendrycks & Gimpel).
GELU_SIGMOID_COEFFICIENT = 1.702


def activation_family(name: ActivationName | Literal["none", "softmax"]) -> InitFamily:
    """Return the init family (glorot / he / lecun) that keeps signal variance for ``name``."""
    try:
        return GAIN_FAMILY[name]
    except KeyError:
        known = ", ".join(sorted(GAIN_FAMILY))
        raise ValueError(f"unknown activation {name!r}; expected one of: {known}") from None


class GELUSigmoid(nn.Module):
    """GELU's cheap approximation z * sigmoid(1.702 z).

    PyTorch only ships the exact and tanh forms; the book's sigmoid form is within 0.021 of exact
    GELU on [-5, 5] and costs one sigmoid.
    """

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return z * torch.sigmoid(GELU_SIGMOID_COEFFICIENT * z)


class Swish(nn.Module):
    """Generalized Swish_beta(z) = z * sigmoid(beta z); SiLU is beta = 1.

    A trainable beta is an ``nn.Parameter`` (it appears in ``parameters()`` and the optimizer
    updates it, like PReLU's slope). A fixed beta is a buffer so it still moves with ``.to()`` and
    is saved in the state dict, yet no optimizer ever sees it.
    """

    beta: torch.Tensor

    def __init__(self, beta: float, trainable: bool) -> None:
        super().__init__()
        value = torch.tensor(float(beta))
        if trainable:
            self.beta = nn.Parameter(value)
        else:
            self.register_buffer("beta", value)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return z * torch.sigmoid(self.beta * z)

    def extra_repr(self) -> str:
        return f"beta={float(self.beta):g}, trainable={isinstance(self.beta, nn.Parameter)}"


def build_activation(cfg: ActivationConfig) -> nn.Module:
    """Build a fresh activation module for ``cfg.name`` with every hyperparameter explicit.

    A new module per call matters for the stateful ones (PReLU, trainable Swish): each layer must
    own its own slope/beta rather than share one tensor.
    """
    name = cfg.name
    if name == "relu":
        return nn.ReLU()
    if name == "leaky_relu":
        return nn.LeakyReLU(negative_slope=cfg.negative_slope)
    if name == "rrelu":
        return nn.RReLU(lower=cfg.rrelu_lower, upper=cfg.rrelu_upper)
    if name == "prelu":
        return nn.PReLU(num_parameters=1, init=cfg.prelu_init)
    if name == "elu":
        return nn.ELU(alpha=cfg.elu_alpha)
    if name == "selu":
        return nn.SELU()
    if name == "gelu":
        return nn.GELU(approximate="none")
    if name == "gelu_tanh":
        return nn.GELU(approximate="tanh")
    if name == "gelu_sigmoid":
        return GELUSigmoid()
    if name == "silu":
        return nn.SiLU()
    if name == "swish":
        return Swish(beta=cfg.swish_beta, trainable=cfg.swish_beta_trainable)
    if name == "mish":
        return nn.Mish()
    if name == "tanh":
        return nn.Tanh()
    if name == "sigmoid":
        return nn.Sigmoid()
    raise ValueError(f"unknown activation {name!r}")  # unreachable for a validated config
