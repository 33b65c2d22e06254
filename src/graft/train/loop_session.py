"""Where the training loop (graft.train.recipe's ``WorkerFit``) runs, and what that place gives
it: its rank and world size, its device, the training state to resume from, where an epoch's
report and checkpoint go, and the DDP wrapping of its model and loader.

- :class:`RayTrainSession`: one worker of a Ray Train worker group (graft.train.fit).
- :class:`LocalSession`: this process alone, world size 1, no process group: a Tune trial
  that trains inside its own trainable (graft.tune.in_trainable) and a PBT segment. Its
  reports go to a callback, and it resumes from the checkpoint it is given.

Both run the same loop, so a one-worker fit gives the same weights in either: at world size 1
Ray Train's ``prepare_data_loader`` (with ``move_to_device=False``) returns the loader as it
is, the loop never wraps the model in DDP, and the sums across workers are the worker's own.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from torch import nn
from torch.utils.data import DataLoader

from graft.train.model_dir import checkpoint_folder, load_training_state

# what a LocalSession reports to: the epoch's metrics and, on checkpointed epochs, a folder
# with its checkpoint (removed once the call returns: the callee copies what it keeps)
ReportTo = Callable[[dict[str, float], str | None], None]


class LoopSession(Protocol):
    rank: int
    world: int

    def device(self) -> torch.device: ...

    def saved_state(self) -> dict[str, Any] | None:
        """The training state of the checkpoint to resume from; None for a fresh start."""
        ...

    def report(self, metrics: dict[str, float], payload: dict[str, Any] | None) -> None:
        """Report an epoch; ``payload`` (rank 0's full training state) becomes a checkpoint."""
        ...

    def prepare_loader(self, loader: DataLoader[Any]) -> DataLoader[Any]: ...

    def prepare_model(self, module: nn.Module) -> nn.Module:
        """The module wrapped for data-parallel training (called when world > 1 only)."""
        ...


class RayTrainSession:
    """A Ray Train worker's session: Ray Train's context, checkpoints and DDP helpers."""

    def __init__(self) -> None:
        import ray.train

        context = ray.train.get_context()
        self.rank, self.world = context.get_world_rank(), context.get_world_size()

    def device(self) -> torch.device:
        import ray.train.torch as ray_torch

        # cuda:<local rank> on a GPU worker, else cpu
        return ray_torch.get_device()

    def saved_state(self) -> dict[str, Any] | None:
        import ray.train

        return _training_state_of(ray.train.get_checkpoint())

    def report(self, metrics: dict[str, float], payload: dict[str, Any] | None) -> None:
        import ray.train

        if payload is None:  # the other ranks: Ray Train takes rank 0's checkpoint
            ray.train.report(metrics)
            return
        with checkpoint_folder(payload) as folder:
            ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(folder))

    def prepare_loader(self, loader: DataLoader[Any]) -> DataLoader[Any]:
        import ray.train.torch as ray_torch

        # a DistributedSampler over the workers; the loop moves each batch to the device
        prepared: DataLoader[Any] = ray_torch.prepare_data_loader(loader, move_to_device=False)
        return prepared

    def prepare_model(self, module: nn.Module) -> nn.Module:
        import ray.train.torch as ray_torch

        wrapped: nn.Module = ray_torch.prepare_model(module, move_to_device=False)
        return wrapped


@dataclass
class LocalSession:
    """The loop alone in this process (world size 1): ``report_to`` receives each epoch's
    report, ``checkpoint`` (a Ray checkpoint, or None) is where a restarted fit resumes."""

    report_to: ReportTo | None = None
    checkpoint: Any = None
    device_name: str = "cpu"
    rank: int = field(default=0, init=False)
    world: int = field(default=1, init=False)

    def device(self) -> torch.device:
        return torch.device(self.device_name)

    def saved_state(self) -> dict[str, Any] | None:
        return _training_state_of(self.checkpoint)

    def report(self, metrics: dict[str, float], payload: dict[str, Any] | None) -> None:
        if self.report_to is None:
            return
        if payload is None:
            self.report_to(metrics, None)
            return
        with checkpoint_folder(payload) as folder:
            self.report_to(metrics, folder)

    def prepare_loader(self, loader: DataLoader[Any]) -> DataLoader[Any]:
        return loader

    def prepare_model(self, module: nn.Module) -> nn.Module:
        return module


def _training_state_of(checkpoint: Any) -> dict[str, Any] | None:
    if checkpoint is None:
        return None
    with checkpoint.as_directory() as folder:
        return load_training_state(folder)
