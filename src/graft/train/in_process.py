"""Training in process (no Ray), on the optimizer step the distributed recipe takes.

Folds: train a fresh transfer-finetune model on one fold's rows.

Cross-validation of the finetune stage trains one model per fold on a few hundred target rows,
where starting a Ray Train run per fold would cost more than the training. Each fold gets a
new model built from the finetune request's spec and loaded with the request's starting
weights (the pretrained backbone copy with its seeded new head, or the champion's weights on a
warm start): the weights the distributed fit starts from, never a previous fold's.

It is the distributed recipe, simplified: the same phases (trainable set, ``lr_scale``,
epochs), optimizer and optimizer step (graft.train.step: the objective's loss, L1/L2, gradient
clipping, max-norm, pruning), on one process with ``finetune.batch_size`` rows per step. No
LR schedule and no early stopping: stopping on the fold's validation rows would pick the epoch
that scores best on them and bias the fold's score upward. With
``budget.mode=virtual_epochs`` a phase's epochs count passes over the fold's rows.

"Useful overfitting" as a preflight: before paying for a distributed fit, check on one
process that the model can drive the loss on one small batch near zero. If it cannot, the
wiring (labels, loss, architecture, normalization) is broken and the real run would waste
its budget.
"""

from __future__ import annotations

import copy
import hashlib
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from graft.config import FinetuneConfig
from graft.config.train import (
    PREFLIGHT_BATCH,
    PREFLIGHT_LR,
    PREFLIGHT_REQUIRED_DROP,
    PREFLIGHT_STEPS,
)
from graft.data.folds import FoldData
from graft.data.streaming_manifest import MANIFEST_SUFFIX
from graft.data.streaming_read import load_streamed_split
from graft.errors import TrainingError
from graft.nn.model_start import ModelStart
from graft.nn.models import GraftNet, ModelSpec
from graft.nn.transfer import apply_phase, set_train_mode
from graft.train.optimizers import build_optimizer
from graft.train.request import FitRequest
from graft.train.rows import array_rows, evaluate_model
from graft.train.step import StepRules, StepTarget, objective_of, train_step

log = logging.getLogger(__name__)


def state_sha(model: nn.Module) -> str:
    """A short digest of every tensor of ``model``'s state (weights and buffers)."""
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


@dataclass(frozen=True)
class FinetuneStart:
    """What every fold starts from: the model's start and the finetune settings."""

    model: ModelStart
    config: FinetuneConfig

    @classmethod
    def from_request(cls, request: FitRequest) -> FinetuneStart:
        if request.init_weights_path is None:
            raise ValueError("a finetune request carries its starting weights; this one has none")
        config = request.finetune
        if config is None:
            raise ValueError("fold training needs a finetune request, not a pretrain one")
        model = ModelStart(
            spec=ModelSpec.from_json(request.spec_json),
            init_state=torch.load(request.init_weights_path, weights_only=True),
            phases=list(request.phases),
        )
        return cls(model, config)


def train_fresh_model(
    start: FinetuneStart, x: np.ndarray, y: np.ndarray, seed: int
) -> tuple[GraftNet, str]:
    """A new model from ``start``, trained on (x, y) through the phases; returns it and the
    digest of the weights it started from."""
    model = start.model.fresh_model()
    init_sha = state_sha(model)
    config = start.config
    torch.manual_seed(seed)  # dropout masks
    generator = torch.Generator().manual_seed(seed)  # batch order
    batch_loss = objective_of(model, start.model.spec.objective)
    xs, ys = array_rows(x, y).tensors
    for phase in start.model.phases:
        unfrozen = apply_phase(model, phase)
        trainable = [p for p in model.parameters() if p.requires_grad]
        optimizer = build_optimizer(
            trainable, config.optimizer, config.optimizer.lr * phase.lr_scale
        )
        target = StepTarget(model, model, optimizer, trainable, batch_loss, StepRules.of(config))
        for _ in range(phase.epochs):
            set_train_mode(model, unfrozen if phase.trainable != "all" else None)
            for rows in torch.randperm(len(xs), generator=generator).split(config.batch_size):
                if len(rows) < 2 and len(xs) >= 2:
                    continue  # a 1-row batch breaks BatchNorm's training statistics
                train_step(target, xs[rows], ys[rows])
    model.eval()
    return model, init_sha


@dataclass
class FinetuneFoldTrainer:
    """The ``train_and_score`` of graft.evaluate.protocols for the finetune model: validation
    accuracy of a fresh model per call; ``records`` keeps each fold's audit trail."""

    start: FinetuneStart
    records: list[dict[str, Any]] = field(default_factory=list)

    def __call__(self, data: FoldData) -> float:
        model, init_sha = train_fresh_model(self.start, data.x_train, data.y_train, data.seed)
        val = evaluate_model(model, array_rows(data.x_val, data.y_val))
        self.records.append(
            {
                "repeat": data.fold.repeat,
                "fold": data.fold.index,
                "val_accuracy": val["accuracy"],
                "val_loss": val["loss"],
                "init_sha": init_sha,
                "final_sha": state_sha(model),
            }
        )
        return val["accuracy"]


def overfit_one_batch(
    model: GraftNet, train_path: str, seed: int, objective: str = "classify"
) -> tuple[float, float]:
    """Return (first loss, last loss); raise TrainingError if the loss does not fall."""
    if train_path.endswith(MANIFEST_SUFFIX):  # data.loader: streaming: decode one batch
        listed = Path(train_path)
        x, y = array_rows(
            *load_streamed_split(listed, listed.parent.parent, PREFLIGHT_BATCH)
        ).tensors
    else:
        with np.load(train_path) as archive:  # converts one batch, not the whole split
            x, y = array_rows(
                archive["x"][:PREFLIGHT_BATCH], archive["y"][:PREFLIGHT_BATCH]
            ).tensors
    probe = copy.deepcopy(model)  # the real model's initial weights stay untouched
    torch.manual_seed(seed)
    probe.eval()  # no dropout noise: this checks capacity and wiring, not regularization
    optimizer = torch.optim.Adam(probe.parameters(), lr=PREFLIGHT_LR)
    trainable = list(probe.parameters())
    # no penalty, clipping or constraint: this checks that the loss can fall at all
    target = StepTarget(probe, probe, optimizer, trainable, objective_of(probe, objective))
    first = last = 0.0
    for step in range(PREFLIGHT_STEPS):
        loss = train_step(target, x, y).loss
        if step == 0:
            first = loss.item()
        last = loss.item()
    log.info("preflight: loss on one batch %.4f -> %.4f in %d steps", first, last, PREFLIGHT_STEPS)
    if not last < max(PREFLIGHT_REQUIRED_DROP * first, 1e-3):
        raise TrainingError(
            f"preflight failed: the model could not overfit one batch of {PREFLIGHT_BATCH} "
            f"examples (loss {first:.4f} -> {last:.4f} in {PREFLIGHT_STEPS} steps); check "
            "labels, inputs and architecture, or set pretrain.preflight_overfit_batch=false"
        )
    return first, last
