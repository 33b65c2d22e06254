"""Training diagnostics: what each backbone block outputs, and which ReLU units are dead.

Forward hooks on the backbone blocks record, on the steps the loop asks for, each block's
output mean and standard deviation (population std, numpy's default) and, for blocks whose
activation is of the ReLU family, the *dead fraction*: the share of units that are never active
(output <= 0, i.e. exactly 0 for ReLU) for any example of the batch. A unit of a conv block is a
channel (all positions of the feature map). Between captures the hooks return at once, so
they cost a Python call per block and nothing else.

The loop adds the step's gradient global norm before/after clipping, LR and momentum
(:func:`step_diagnostics`) and rank 0 logs the lot to MLflow with ``step = global step``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

# Activations whose "dead" state (never positive on any input) stops or starves gradient flow.
RELU_FAMILY: tuple[type[nn.Module], ...] = (
    nn.ReLU,
    nn.ReLU6,
    nn.LeakyReLU,
    nn.RReLU,
    nn.PReLU,
)


@dataclass(frozen=True)
class ActivationStats:
    mean: float
    std: float
    dead_fraction: float | None = None  # None: the block has no ReLU-family activation


def activation_stats(output: torch.Tensor) -> tuple[float, float]:
    """Mean and population std (ddof 0, as ``numpy.std``) over every element of ``output``."""
    values = output.detach().double()
    return float(values.mean()), float(values.std(correction=0))


def dead_fraction(activation_output: torch.Tensor) -> float:
    """Share of units whose output is <= 0 for every example of the batch.

    ``activation_output`` is [N, features] or [N, channels, ...]; for the latter a channel is a
    unit and is dead when it is <= 0 at every position of every example.
    """
    if activation_output.dim() < 2:
        raise ValueError(
            "dead_fraction needs a batch of shape [N, units, ...], got "
            f"{tuple(activation_output.shape)}"
        )
    values = activation_output.detach()
    per_unit = values.transpose(0, 1).reshape(values.shape[1], -1)  # [units, N * positions]
    dead = (per_unit <= 0).all(dim=1)
    return float(dead.double().mean())


def _first_relu(block: nn.Module) -> nn.Module | None:
    if isinstance(block, RELU_FAMILY):
        return block
    for module in block.modules():
        if isinstance(module, RELU_FAMILY):
            return module
    return None


class ActivationRecorder:
    """Forward hooks on ``blocks`` that record :class:`ActivationStats` inside :meth:`capture`.

    Use ``with recorder.capture(): model(x)``, then read :attr:`stats` (one entry per block, in
    order); call :meth:`remove` when done with the model.
    """

    def __init__(self, blocks: Sequence[nn.Module]) -> None:
        self._active = False
        self._outputs: dict[int, tuple[float, float]] = {}
        self._dead: dict[int, float] = {}
        self._relu_blocks: set[int] = set()
        self._handles: list[RemovableHandle] = []
        self.num_blocks = len(blocks)
        for index, block in enumerate(blocks):
            self._handles.append(block.register_forward_hook(self._block_hook(index)))
            relu = _first_relu(block)
            if relu is not None:
                self._relu_blocks.add(index)
                self._handles.append(relu.register_forward_hook(self._relu_hook(index)))

    def _block_hook(self, index: int) -> Callable[[nn.Module, Any, torch.Tensor], None]:
        def hook(module: nn.Module, inputs: Any, output: torch.Tensor) -> None:
            if self._active:
                self._outputs[index] = activation_stats(output)

        return hook

    def _relu_hook(self, index: int) -> Callable[[nn.Module, Any, torch.Tensor], None]:
        def hook(module: nn.Module, inputs: Any, output: torch.Tensor) -> None:
            if self._active:
                self._dead[index] = dead_fraction(output)

        return hook

    @contextmanager
    def capture(self) -> Iterator[None]:
        """Record the stats of the forward passes run inside the block (the last one wins)."""
        self._outputs.clear()
        self._dead.clear()
        self._active = True
        try:
            yield
        finally:
            self._active = False

    @property
    def stats(self) -> list[ActivationStats]:
        return [
            ActivationStats(mean, std, self._dead.get(index))
            for index, (mean, std) in sorted(self._outputs.items())
        ]

    def metrics(self, prefix: str = "diag.") -> dict[str, float]:
        """Flat MLflow metric names: ``diag.block0.activation_mean`` and so on."""
        values: dict[str, float] = {}
        for index, stat in enumerate(self.stats):
            values[f"{prefix}block{index}.activation_mean"] = stat.mean
            values[f"{prefix}block{index}.activation_std"] = stat.std
            if stat.dead_fraction is not None:
                values[f"{prefix}block{index}.dead_relu_fraction"] = stat.dead_fraction
        return values

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()


def step_diagnostics(
    grad_norm_before_clip: float,
    grad_norm_after_clip: float,
    lr: float,
    momentum: float | None,
    prefix: str = "diag.",
) -> dict[str, float]:
    """The per-step scalars beside the activation stats (momentum only when the optimizer has
    one: SGD's momentum or the Adam family's beta1)."""
    values = {
        f"{prefix}grad_norm_before_clip": grad_norm_before_clip,
        f"{prefix}grad_norm_after_clip": grad_norm_after_clip,
        f"{prefix}lr": lr,
    }
    if momentum is not None:
        values[f"{prefix}momentum"] = momentum
    return values
