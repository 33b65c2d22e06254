"""Where a fit stands (phase, epoch, step, data position, early stopping) and the RNG
streams a resumed run restores: both go into every checkpoint."""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from graft.errors import TrainingError


@dataclass
class LoopState:
    phase_index: int = 0
    epoch_in_phase: int = 0  # epochs completed in the current phase
    global_epoch: int = 0  # epochs completed overall
    phase_done: bool = False
    best_metric: float | None = None
    best_state: dict[str, torch.Tensor] | None = None
    wait: int = 0
    history: list[dict[str, float]] = field(default_factory=list)
    global_step: int = 0  # optimizer steps overall
    examples_seen: int = 0  # training examples over all workers
    data_pass: int = 0  # virtual epochs: the cycling loader's pass (the sampler's epoch)
    batch_in_pass: int = 0  # virtual epochs: batches of the pass already drawn
    pass_rng: Any = None  # virtual epochs: the loader generator's state when the pass began


def next_phase(state: LoopState) -> LoopState:
    return LoopState(
        phase_index=state.phase_index + 1,
        global_epoch=state.global_epoch,
        history=state.history,
        global_step=state.global_step,
        examples_seen=state.examples_seen,
        # a phase builds a new loader: it starts a fresh pass
        data_pass=state.data_pass + (1 if state.batch_in_pass else 0),
    )


def cycling_batches(
    loader: DataLoader[Any], state: LoopState, generator: torch.Generator
) -> Iterator[Any]:
    """Batches from ``loader``, pass after pass without end, the position kept in ``state``.

    A state restored from a checkpoint mid-pass replays the pass's shuffle (the sampler's
    epoch, or the loader generator's state when the pass began) and skips the batches already
    drawn, so the resumed run sees the batches the uninterrupted one saw.
    """
    resuming = state.batch_in_pass > 0
    while True:
        sampler: Any = getattr(loader, "sampler", None)
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(state.data_pass)
        if resuming:
            generator.set_state(state.pass_rng)
        else:
            state.pass_rng = generator.get_state()
        skip = state.batch_in_pass if resuming else 0
        resuming = False
        drawn = False
        for index, batch in enumerate(loader):
            drawn = True
            if index < skip:
                continue
            state.batch_in_pass = index + 1
            yield batch
        if not drawn:
            raise TrainingError(
                "the training loader yields no batch; use a batch_size x num_workers no "
                "larger than the training split"
            )
        state.data_pass += 1
        state.batch_in_pass = 0


def training_state(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    schedule_state: dict[str, Any],
    state: LoopState,
    generator: torch.Generator,
    spec_json: str,
) -> dict[str, Any]:
    """What a checkpoint holds for a resumed fit to continue exactly: weights, optimizer and
    schedule state, where the fit stands, the RNG streams and the architecture."""
    return {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "schedule": schedule_state,
        "loop": asdict(state),
        "rng": rng_state(generator),
        "spec_json": spec_json,
    }


def rng_state(generator: torch.Generator) -> dict[str, Any]:
    """Every RNG stream a resumed fit restores, as tensors and plain values only: a
    checkpoint is read back with ``torch.load(weights_only=True)``, which unpickles no other
    type (numpy's state tuple holds an ndarray, so its parts are stored one by one)."""
    name, keys, position, has_gauss, cached_gaussian = np.random.get_state(legacy=True)
    return {
        "python": random.getstate(),
        "numpy": {
            "name": str(name),
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "position": int(position),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached_gaussian),
        },
        "torch": torch.get_rng_state(),
        "loader": generator.get_state(),
    }


def set_rng_state(state: dict[str, Any], generator: torch.Generator) -> None:
    random.setstate(state["python"])
    saved = state["numpy"]
    np.random.set_state(
        (
            saved["name"],
            saved["keys"].numpy().astype(np.uint32),
            saved["position"],
            saved["has_gauss"],
            saved["cached_gaussian"],
        )
    )
    torch.set_rng_state(state["torch"])
    generator.set_state(state["loader"])
