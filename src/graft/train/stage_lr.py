"""The LR finder on a training stage's own starting model and data.

``graft lr-find pretrain|transfer-finetune`` and the tune stage's pre-step
(:mod:`graft.tune.lr_range`) both sweep exactly the model a stage's fit would start from: the
source model freshly initialized with the config's seed for pretrain; the transferred target
model with the first phase's trainable layers for transfer-finetune. The sweep runs in process
(no Ray: about a hundred mini-batches), and the finder restores everything it touched. The
first phase's ``lr_scale`` is undone, so the suggestion is in units of the stage's
``optimizer.lr``: the key to set.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from torch.utils.data import DataLoader, TensorDataset

from graft.config import GraftConfig, PhaseConfig
from graft.data.streaming_read import load_streamed_split
from graft.errors import ConfigError
from graft.nn.models import ModelSpec, build_model
from graft.nn.transfer import apply_phase
from graft.train.lr_finder import LRFinderResult, find_lr, plot_lr_finder
from graft.train.request import FitRequest
from graft.train.rows import array_rows, load_split_rows
from graft.train.stage_requests import finetune_request, pretrain_request

SweptStage = Literal["pretrain", "transfer-finetune"]


@dataclass(frozen=True)
class StageSweep:
    """One sweep, and its suggestion in units of the stage's ``optimizer.lr``."""

    stage: str
    result: LRFinderResult
    lr_scale: float  # the first phase's multiplier on optimizer.lr during the sweep

    @property
    def suggested_lr(self) -> float:
        return self.result.suggested_lr / self.lr_scale

    @property
    def best_lr(self) -> float:
        return self.result.best_lr / self.lr_scale

    @property
    def lr_key(self) -> str:
        return "pretrain.optimizer.lr" if self.stage == "pretrain" else "finetune.optimizer.lr"


def sweep_stage(
    config: GraftConfig,
    stage: SweptStage,
    dataset_dir: str,
    scratch_dir: Path,
    pretrained_dir: str = "",
    *,
    min_lr: float,
    max_lr: float,
    num_steps: int,
) -> StageSweep:
    """Sweep the LR on ``stage``'s starting model (see the module doc)."""
    if stage == "pretrain":
        request = pretrain_request(config, dataset_dir, None)
        train_config = config.pretrain
    elif stage == "transfer-finetune":
        if not pretrained_dir:
            raise ConfigError("the LR finder for transfer-finetune needs the pretrained model")
        request = finetune_request(config, dataset_dir, pretrained_dir, scratch_dir, None)
        train_config = config.finetune
    else:
        raise ConfigError(f"the LR finder sweeps pretrain or transfer-finetune, not '{stage}'")
    model, phase = _starting_model(request, config.seed)
    loader = DataLoader(
        _sweep_rows(request, dataset_dir, train_config.batch_size * num_steps),
        batch_size=train_config.batch_size,
        shuffle=True,
        generator=torch.Generator().manual_seed(config.seed),
    )
    torch.manual_seed(config.seed)
    result = find_lr(
        model,
        loader,
        torch.nn.functional.cross_entropy,
        train_config.optimizer,
        min_lr,
        max_lr,
        num_steps,
    )
    return StageSweep(stage, result, phase.lr_scale)


def _sweep_rows(request: FitRequest, dataset_dir: str, needed: int) -> TensorDataset:
    """The train rows the sweep steps through: the split's arrays, or, for a streamed
    dataset, the first ``needed`` rows of its manifest (listed in a seeded random order),
    decoded into memory."""
    if request.stream is None:
        return load_split_rows(request.train_path)
    x, y = load_streamed_split(request.train_path, dataset_dir, limit=needed)
    return array_rows(x, y)


def write_sweep(sweep: StageSweep, output_dir: Path) -> tuple[Path, Path]:
    """The sweep's plot and JSON (LRs, losses, suggestion) in ``output_dir``."""
    output_dir.mkdir(parents=True, exist_ok=True)
    plot = plot_lr_finder(sweep.result, output_dir / "lr_finder.png")
    summary = output_dir / "lr_finder.json"
    summary.write_text(
        json.dumps(
            {
                "stage": sweep.stage,
                "lr_key": sweep.lr_key,
                "suggested_lr": sweep.suggested_lr,
                "best_lr": sweep.best_lr,
                "lr_scale": sweep.lr_scale,
                "diverged_lr": sweep.result.diverged_lr,
                "lrs": sweep.result.lrs,
                "losses": sweep.result.losses,
            },
            indent=2,
        )
    )
    return plot, summary


def _starting_model(request: FitRequest, seed: int) -> tuple[torch.nn.Module, PhaseConfig]:
    spec = ModelSpec.from_json(request.spec_json)
    if spec.objective != "classify":
        raise ConfigError(
            f"the LR finder sweeps a classification loss; pretrain.objective={spec.objective} "
            "has none to sweep: set pretrain.optimizer.lr by hand, or find it with "
            "pretrain.objective=classify"
        )
    torch.manual_seed(seed)
    model = build_model(spec)
    if request.init_weights_path is not None:
        model.load_state_dict(torch.load(request.init_weights_path, weights_only=True))
    phase = request.phases[0]
    apply_phase(model, phase)
    return model, phase
