"""BatchNorm folding: an eval-mode BN right after a Linear/Conv becomes part of its weights.

In eval mode BN is the affine map ``y = gamma * (x - mean) / sqrt(var + eps) + beta``, so
``BN(W x + b)`` equals ``W' x + b'`` with ``W' = s W`` and ``b' = s (b - mean) + beta``, where
``s = gamma / sqrt(var + eps)`` per output channel. Only a BN placed directly after the layer
folds this way; a BN after the activation (``placement=after_activation``) stays.
"""

from __future__ import annotations

import copy
import itertools

import torch
from torch import nn

_FOLDABLE = (nn.Linear, nn.Conv2d)
_BN_TYPES = (nn.BatchNorm1d, nn.BatchNorm2d)


def fold_linear_batch_norm(
    layer: nn.Linear | nn.Conv2d, bn: nn.modules.batchnorm._BatchNorm
) -> nn.Module:
    """A new layer computing ``bn(layer(x))`` (BN in eval mode), with a bias."""
    if bn.running_mean is None or bn.running_var is None:
        raise ValueError("BatchNorm without running statistics cannot be folded")
    with torch.no_grad():
        scale = torch.rsqrt(bn.running_var.double() + bn.eps)
        if bn.weight is not None:
            scale = scale * bn.weight.double()
        shift = -bn.running_mean.double() * scale
        if bn.bias is not None:
            shift = shift + bn.bias.double()
        weight = layer.weight.double() * scale.reshape(-1, *([1] * (layer.weight.dim() - 1)))
        bias = shift
        if layer.bias is not None:
            bias = bias + layer.bias.double() * scale
        folded: nn.Linear | nn.Conv2d
        if isinstance(layer, nn.Linear):
            folded = nn.Linear(layer.in_features, layer.out_features, bias=True)
        else:
            folded = nn.Conv2d(
                layer.in_channels,
                layer.out_channels,
                layer.kernel_size,  # type: ignore[arg-type]
                stride=layer.stride,  # type: ignore[arg-type]
                padding=layer.padding,  # type: ignore[arg-type]
                dilation=layer.dilation,  # type: ignore[arg-type]
                groups=layer.groups,
                bias=True,
                padding_mode=layer.padding_mode,
            )
        folded.weight.copy_(weight.to(layer.weight.dtype))
        assert folded.bias is not None
        folded.bias.copy_(bias.to(layer.weight.dtype))
    return folded


def _fold_sequential(sequence: nn.Sequential) -> int:
    folded = 0
    names = list(sequence._modules)
    for first, second in itertools.pairwise(names):
        layer, bn = sequence._modules[first], sequence._modules[second]
        if isinstance(layer, _FOLDABLE) and isinstance(bn, _BN_TYPES):
            sequence._modules[first] = fold_linear_batch_norm(layer, bn)
            sequence._modules[second] = nn.Identity()
            folded += 1
    return folded


def fold_batch_norm(model: nn.Module) -> tuple[nn.Module, int]:
    """An eval-mode copy of ``model`` with every foldable BN folded; and how many were.

    ``model`` itself is left untouched (the registry keeps the trainable architecture).
    """
    folded_model = copy.deepcopy(model).eval()
    count = 0
    for module in list(folded_model.modules()):
        if isinstance(module, nn.Sequential):
            count += _fold_sequential(module)
    return folded_model, count


def count_batch_norm(model: nn.Module) -> int:
    return sum(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
