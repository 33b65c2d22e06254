"""Weight regularizers of the book: L1/L2 loss penalties and the max-norm constraint.

Both act on *kernels* only -- the weights of Linear and Conv layers -- as Keras'
``kernel_regularizer``/``kernel_constraint`` do. Biases and BatchNorm's gamma are left alone:
penalizing them does not reduce a model's capacity to overfit, and shrinking gamma fights the
normalization. This is also why L2 is a loss term here and not torch's ``weight_decay``, which
would decay every parameter.

Frozen kernels (``requires_grad=False``) are skipped by both: a penalty on them has no
gradient and would only inflate the reported loss, and max-norm must not change weights a
finetuning phase promised to keep bit-identical.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import nn
from torch.nn.modules.conv import _ConvNd, _ConvTransposeNd

from graft.config import RegularizationConfig
from graft.errors import ConfigError


def _trainable_kernels(model: nn.Module) -> Iterator[tuple[nn.Parameter, int]]:
    """Each trainable kernel with the dim that indexes its neurons (output units/channels).

    Linear and Conv weights are [out, in, *kernel]; ConvTranspose weights are
    [in, out/groups, *kernel], so their neurons sit on dim 1.
    """
    for module in model.modules():
        if isinstance(module, nn.Linear | _ConvNd):
            weight = module.weight
            if isinstance(weight, nn.Parameter) and weight.requires_grad:
                yield weight, 1 if isinstance(module, _ConvTransposeNd) else 0


def kernel_penalty(model: nn.Module, cfg: RegularizationConfig) -> torch.Tensor:
    """``l1 * sum|W| + l2 * sum W^2`` over the trainable kernels, to add to the data loss.

    Keras' convention (no factor 1/2): under plain SGD, ``l2`` here equals torch
    ``weight_decay = 2 * l2`` restricted to the kernels. With Adam-family optimizers prefer
    AdamW's decoupled decay (the book: L2 and Adam generalize poorly together).
    """
    # called every step: without a penalty, skip walking the modules
    kernels = [] if cfg.l1 == 0 and cfg.l2 == 0 else [w for w, _ in _trainable_kernels(model)]
    if not kernels:
        reference = next(model.parameters(), None)
        device = reference.device if reference is not None else None
        return torch.zeros((), device=device)
    penalty = torch.zeros((), device=kernels[0].device, dtype=kernels[0].dtype)
    for weight in kernels:
        if cfg.l1:
            penalty = penalty + cfg.l1 * weight.abs().sum()
        if cfg.l2:
            penalty = penalty + cfg.l2 * weight.square().sum()
    return penalty


def apply_max_norm(model: nn.Module, max_norm: float) -> None:
    """Rescale each neuron's incoming weight vector to L2 norm <= ``max_norm``, in place.

    Call after every ``optimizer.step()`` (Keras applies ``kernel_constraint`` after each
    update; it is a constraint, not a loss term). A neuron's vector is a row of a Linear weight
    or the flattened kernel of one output channel; vectors already within the bound stay
    bit-identical (``torch.renorm`` scales them by exactly 1).
    """
    if not max_norm > 0:
        raise ConfigError(f"regularization.max_norm must be > 0, got {max_norm}")
    with torch.no_grad():
        for weight, dim in _trainable_kernels(model):
            weight.copy_(torch.renorm(weight, p=2, dim=dim, maxnorm=max_norm))


def prune_below(model: nn.Module, threshold: float) -> None:
    """Zero every trainable kernel weight with ``|w| < threshold``, in place (magnitude
    pruning, the book's route to a sparse model together with strong L1).

    Call after every ``optimizer.step()`` like max-norm: a pruned weight that an update pushed
    off zero is cut again unless it grew past the threshold. Frozen kernels keep their values.
    """
    if not threshold > 0:
        raise ConfigError(f"regularization.prune_below must be > 0, got {threshold}")
    with torch.no_grad():
        for weight, _ in _trainable_kernels(model):
            weight.masked_fill_(weight.abs() < threshold, 0.0)


def kernel_sparsity(model: nn.Module) -> float:
    """Share of exactly-zero weights over all kernels (frozen ones included)."""
    zeros, total = 0, 0
    for module in model.modules():
        if isinstance(module, nn.Linear | _ConvNd):
            zeros += int((module.weight == 0).sum())
            total += module.weight.numel()
    return zeros / total if total else 0.0
