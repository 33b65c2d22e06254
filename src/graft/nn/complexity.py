"""A model's size and cost: parameters and multiply-accumulates (MACs) for one input row.

MACs are counted with forward hooks on every ``Conv2d`` and ``Linear`` (the layers that hold
nearly all the arithmetic of Graft's families); one FLOP count is ``2 x MACs``. A conv's
MACs are ``out_h x out_w x out_channels x (in_channels / groups) x k_h x k_w``, so a
depthwise conv (``groups = in_channels``) costs ``1 / in_channels`` of a full one.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class ModelComplexity:
    parameters: int
    macs: int  # multiply-accumulates for one input row

    @property
    def flops(self) -> int:
        return 2 * self.macs


def layer_macs(layer: nn.Module, output: torch.Tensor) -> int:
    """MACs of one ``Conv2d``/``Linear`` call for one row (``output`` has a batch dimension)."""
    if isinstance(layer, nn.Conv2d):
        kernel_h, kernel_w = layer.kernel_size
        per_output = (layer.in_channels // layer.groups) * kernel_h * kernel_w
        return int(output[0].numel()) * per_output
    if isinstance(layer, nn.Linear):
        return int(output[0].numel()) * layer.in_features
    return 0


def model_complexity(model: nn.Module, input_shape: list[int] | tuple[int, ...]) -> ModelComplexity:
    """Parameters and MACs of ``model`` on one zero row of ``input_shape`` (eval mode, no
    gradients; the model's train/eval mode is restored)."""
    total = [0]

    def count(module: nn.Module, _inputs: object, output: torch.Tensor) -> None:
        total[0] += layer_macs(module, output)

    hooks = [
        module.register_forward_hook(count)
        for module in model.modules()
        if isinstance(module, nn.Conv2d | nn.Linear)
    ]
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros(1, *input_shape))
    finally:
        for hook in hooks:
            hook.remove()
        model.train(was_training)
    parameters = sum(p.numel() for p in model.parameters())
    return ModelComplexity(parameters=parameters, macs=total[0])
