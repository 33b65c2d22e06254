"""Every training loop takes graft.train.step's optimizer step: the Ray Train recipe's epoch,
the in-process fold fit, the preflight and the LR finder train identically on the same batches
from the same weights and seed (bit for bit), with penalties, clipping, max-norm and pruning on."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch

from graft.config import FinetuneConfig, ModelConfig, PhaseConfig, TrainConfig
from graft.config.train import PREFLIGHT_BATCH, PREFLIGHT_LR, PREFLIGHT_STEPS
from graft.nn.model_start import ModelStart
from graft.nn.models import GraftNet, ModelSpec, build_model
from graft.nn.transfer import apply_phase, set_train_mode
from graft.train.epoch import train_epoch_steps
from graft.train.in_process import FinetuneStart, overfit_one_batch, train_fresh_model
from graft.train.loop_state import LoopState
from graft.train.lr_finder import find_lr, sweep_lrs
from graft.train.optimizers import build_optimizer
from graft.train.schedules import LRSchedule, build_schedule
from graft.train.step import StepRules, StepTarget, objective_of

FEATURES, CLASSES, ROWS, BATCH = 8, 3, 32, 8
SEED = 11
# every rule a step applies, so that a loop that skips one trains differently
RULES = {
    "regularization": {"l1": 1e-4, "l2": 1e-3, "max_norm": 1.5, "prune_below": 2e-3},
    "clip": {"mode": "global_norm", "threshold": 0.5},
}


def _spec() -> ModelSpec:
    model = ModelConfig.model_validate({"family": "mlp", "hidden_sizes": [16, 8]})
    return ModelSpec(
        model=model.model_dump(mode="json"),
        input_shape=[FEATURES],
        num_classes=CLASSES,
        mean=[0.0] * FEATURES,
        std=[1.0] * FEATURES,
    )


def _rows() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(3)
    x = torch.randn(ROWS, FEATURES, generator=generator)
    return x, torch.randint(0, CLASSES, (ROWS,), generator=generator)


def _fresh() -> GraftNet:
    torch.manual_seed(0)
    return build_model(_spec())


def _recipe_steps(
    model: GraftNet,
    config: TrainConfig,
    optimizer: torch.optim.Optimizer,
    batches: list[tuple[torch.Tensor, torch.Tensor]],
    rules: StepRules,
    schedule: LRSchedule | None = None,
) -> float:
    """The Ray Train recipe's epoch body (one worker, no Ray) over ``batches``; the mean loss.
    The config's schedule (constant) runs unless ``schedule`` is given."""
    trainable = [p for p in model.parameters() if p.requires_grad]
    target = StepTarget(model, model, optimizer, trainable, objective_of(model, "classify"), rules)
    if schedule is None:
        schedule = build_schedule(optimizer, config.schedule, optimizer.param_groups[0]["lr"], 1, 1)
    totals = train_epoch_steps(
        target,
        schedule,
        batches,
        LoopState(),
        torch.device("cpu"),
        epoch_batches=len(batches),
        labelled=True,
    )
    return float(totals.loss_sum) / totals.seen


def _assert_same_weights(a: torch.nn.Module, b: torch.nn.Module) -> None:
    for (name, left), (_, right) in zip(
        a.state_dict().items(), b.state_dict().items(), strict=True
    ):
        assert torch.equal(left, right), name


@pytest.mark.parametrize("epochs", [1, 3])
def test_the_fold_fit_trains_as_the_recipe_does(epochs: int) -> None:
    config = FinetuneConfig.model_validate(
        {"batch_size": BATCH, "phases": [{"trainable": "all", "epochs": epochs}], **RULES}
    )
    start = FinetuneStart(ModelStart(_spec(), _fresh().state_dict(), list(config.phases)), config)
    x, y = _rows()
    folded, _ = train_fresh_model(start, x.numpy(), y.numpy(), SEED)

    model = start.model.fresh_model()
    unfrozen = apply_phase(model, config.phases[0])
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = build_optimizer(trainable, config.optimizer, config.optimizer.lr)
    torch.manual_seed(SEED)  # the fold's dropout masks
    order = torch.Generator().manual_seed(SEED)  # the fold's batch order
    for _ in range(epochs):
        set_train_mode(model, unfrozen if config.phases[0].trainable != "all" else None)
        batches = [
            (x[rows], y[rows]) for rows in torch.randperm(ROWS, generator=order).split(BATCH)
        ]
        _recipe_steps(model, config, optimizer, batches, StepRules.of(config))
    _assert_same_weights(folded, model)
    assert any(float((p == 0).float().mean()) > 0 for p in model.parameters())  # pruned


def test_the_preflight_steps_as_the_recipe_does(tmp_path: Path) -> None:
    x, y = _rows()
    x = x * 3  # separable enough that one batch overfits within the preflight's steps
    path = tmp_path / "train.npz"
    np.savez(path, x=x.numpy(), y=y.numpy())
    model = _fresh()
    first, last = overfit_one_batch(model, str(path), SEED)

    probe = copy.deepcopy(model)
    torch.manual_seed(SEED)
    probe.eval()
    optimizer = torch.optim.Adam(probe.parameters(), lr=PREFLIGHT_LR)
    batch = (x[:PREFLIGHT_BATCH], y[:PREFLIGHT_BATCH])
    config, rules = TrainConfig(), StepRules()  # the preflight applies no penalty or clipping
    assert _recipe_steps(probe, config, optimizer, [batch], rules) == first
    _recipe_steps(probe, config, optimizer, [batch] * (PREFLIGHT_STEPS - 2), rules)
    assert _recipe_steps(probe, config, optimizer, [batch], rules) == last


def test_the_lr_finder_steps_as_the_recipe_does() -> None:
    config = TrainConfig.model_validate({"batch_size": BATCH, **RULES})
    rules = StepRules.of(config)
    x, y = _rows()
    batches = [(x[i : i + BATCH], y[i : i + BATCH]) for i in range(0, ROWS, BATCH)]
    model = _fresh()
    before = copy.deepcopy(model.state_dict())
    torch.manual_seed(SEED)
    sweep = find_lr(
        model,
        batches,
        torch.nn.functional.cross_entropy,
        config.optimizer,
        min_lr=1e-3,
        max_lr=1e-2,
        num_steps=len(batches),
        rules=rules,
    )
    assert len(sweep.losses) == len(batches)
    for name, value in model.state_dict().items():  # the finder put everything back
        assert torch.equal(value, before[name]), name

    reference = _fresh()
    reference.train()
    torch.manual_seed(SEED)
    trainable = [p for p in reference.parameters() if p.requires_grad]
    optimizer = build_optimizer(trainable, config.optimizer, lr=1e-3)
    # one schedule (constant, per epoch: it never moves the LR) for the sweep's LRs set below
    schedule = build_schedule(optimizer, config.schedule, 1e-3, len(batches), 1)
    losses = []
    for lr, batch in zip(sweep_lrs(1e-3, 1e-2, len(batches)), batches, strict=True):
        for group in optimizer.param_groups:
            group["lr"] = lr
        losses.append(_recipe_steps(reference, config, optimizer, [batch], rules, schedule))
    assert sweep.losses == losses


def test_the_phase_rule_is_one_for_every_loop() -> None:
    """Guard for the test above: a phase that trains everything puts the model in train mode
    in the recipe and the fold fit alike."""
    model = _fresh()
    unfrozen = apply_phase(model, PhaseConfig(trainable="all", epochs=1))
    model.eval()
    set_train_mode(model, None)
    assert model.training and unfrozen
