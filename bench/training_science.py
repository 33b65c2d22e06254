"""Training science: the book's chapter-11 experiments on Fashion-MNIST, over several seeds.

Every run is built from Graft's own pieces: the config schema (``load_config`` on the default
preset plus overrides), data-prep (``prepare_dataset``: the A/B task, task A = the 8 classes
other than T-shirt/top and Pullover, task B = those two with 200 labelled training images),
the model builder, the optimizer and schedule builders, ``transfer_spec``/``transfer_model``
and the phase freezing of ``graft.nn.transfer``. Training runs in this process (no Ray), on a
fixed epoch budget (no early stopping), so what is measured is Graft's implementation of each
technique, not Ray's scheduling.

Groups (``--groups``):

* optimizers: SGD, momentum, NAG, AdaGrad, RMSProp, Adam, AdaMax, Nadam, AdamW on task A with
  the default MLP (100-100-100 ReLU, He init), all at the same LR (the book compares them at
  lr 1e-3).
* schedules: momentum SGD with a constant LR, performance scheduling (plateau) from the same
  LR, and 1cycle peaking at ``--one-cycle-peak`` x that LR, at the same epoch budget.
* selu_depth: a ``--depth``-layer dense net (100 units each, no batch norm; default depth 100,
  the book's example): SELU + LeCun init vs ReLU + He init, both on standardized inputs,
  momentum SGD at lr 1e-3.
* transfer: pretrain on task A, then finetune on task B's 200 images with the default
  preset's phases (head only, then everything at a tenth of the LR) vs the same network trained
  from scratch on task B for as many epochs; with the dense backbone and with the CNN backbone.

Each seed re-draws the row subset, the split, task B's 200 images, the initial weights and the
shuffling; within a seed every arm sees the same data and (where the shapes allow) the same
initial weights, so arms are compared seed by seed. Accuracy is on the sealed test split.
"Clearly beats" below means the mean paired gain exceeds twice its standard error.

    python bench/training_science.py                          # all groups, 5 seeds
    python bench/training_science.py --groups transfer --seeds 10
    python bench/training_science.py --quick --groups optimizers   # smoke run (~30 s)
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from graft.config import GraftConfig, PhaseConfig, TrainConfig, load_config
from graft.data.holdout import default_holdout_dir, load_holdout
from graft.data.manifest import DataManifest
from graft.data.prepare import load_split, prepare_dataset
from graft.nn.models import GraftNet, ModelSpec, build_model
from graft.nn.transfer import apply_phase, set_train_mode, transfer_model, transfer_spec
from graft.train.optimizers import build_optimizer
from graft.train.request import phases_for
from graft.train.rows import evaluate_model
from graft.train.schedules import build_schedule
from graft.train.stage_requests import source_model_spec
from graft.train.workers import seed_everything

GROUPS = ("optimizers", "schedules", "selu_depth", "transfer")
OPTIMIZERS = ("sgd", "momentum", "nag", "adagrad", "rmsprop", "adam", "adamax", "nadam", "adamw")
# The book (ch. 11) recommends against AdaGrad for deep nets (it stops too early), so the
# "adaptive methods converge fast" claim is checked on the other adaptive ones.
FAST_ADAPTIVE = ("rmsprop", "adam", "adamax", "nadam", "adamw")
ADAMW_DECAY = 1e-5
# A fixed budget: no early stopping, every arm trains all its epochs.
NO_EARLY_STOP = "{}.early_stopping.enabled=false"


@dataclass
class Settings:
    rows: int
    epochs: int
    seeds: int
    depth: int
    pretrain_epochs: int
    threads: int
    one_cycle_peak: float

    def describe(self, group: str) -> str:
        if group == "transfer":
            phases = " + ".join(
                f"{p.trainable} {p.epochs}" for p in bench_config([]).finetune.phases
            )
            epochs = f"{self.pretrain_epochs} epochs on A, {phases} epochs on B"
        else:
            epochs = f"{self.epochs} epochs"
        return (
            f"Fashion-MNIST {self.rows} rows, {epochs}, {self.seeds} seeds, "
            f"{self.threads} thread(s)"
        )


QUICK = {"rows": 2000, "epochs": 2, "seeds": 2, "depth": 10, "pretrain_epochs": 2}
# depth 100 is the book's deep SELU example (100 dense layers of 100 units)
DEFAULTS = {"rows": 10000, "epochs": 10, "seeds": 5, "depth": 100, "pretrain_epochs": 10}


@dataclass
class Arm:
    """One row of a table: an arm's figures, one entry per seed."""

    group: str
    name: str
    test_accuracy: list[float] = field(default_factory=list)
    first_epoch_val_accuracy: list[float] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)

    def add(self, trace: FitTrace) -> None:
        self.test_accuracy.append(trace.test_accuracy)
        self.first_epoch_val_accuracy.append(trace.val_accuracy[0])
        self.seconds.append(trace.seconds)


@dataclass
class FitTrace:
    val_accuracy: list[float]  # after every epoch
    test_accuracy: float
    seconds: float  # training only (no data-prep, no test evaluation)


@dataclass
class Task:
    train: TensorDataset
    val: TensorDataset
    test: TensorDataset


@dataclass
class SeedData:
    """One seed's prepared A/B dataset."""

    seed: int
    dataset_dir: str
    manifest: DataManifest
    source: Task
    target: Task


# ----------------------------------------------------------------------------- data


def _tensors(x: np.ndarray, y: np.ndarray) -> TensorDataset:
    return TensorDataset(
        torch.from_numpy(x.astype(np.float32)), torch.from_numpy(y.astype(np.int64))
    )


def prepare_seed(seed: int, rows: int, root: Path) -> SeedData:
    """Graft's data-prep on a ``rows``-row stratified subset, split with ``seed``."""
    config = load_config(preset="default", overrides=[f"data.max_rows={rows}", f"seed={seed}"])
    dataset = root / f"seed-{seed}"
    manifest = prepare_dataset(config.data, seed, dataset)
    holdout = default_holdout_dir(dataset)

    def task(name: str) -> Task:
        return Task(
            train=_tensors(*load_split(dataset, name, "train")),
            val=_tensors(*load_split(dataset, name, "val")),
            test=_tensors(*load_holdout(holdout, name, dataset)),
        )

    return SeedData(seed, str(dataset), manifest, task("source"), task("target"))


def bench_config(overrides: Sequence[str]) -> GraftConfig:
    stages = [NO_EARLY_STOP.format(stage) for stage in ("pretrain", "finetune")]
    # nothing here is tuned (and the default search space's dropout would refuse SELU)
    return load_config(preset="default", overrides=[*stages, "tune.enabled=false", *overrides])


def target_spec(config: GraftConfig, data: SeedData) -> ModelSpec:
    """Task B's architecture for training from scratch (its own input statistics)."""
    task = data.manifest.tasks["target"]
    return ModelSpec(
        model=config.model.model_dump(mode="json"),
        input_shape=data.manifest.input_shape,
        num_classes=len(task.classes),
        mean=task.mean,
        std=task.std,
    )


# ----------------------------------------------------------------------------- training


def fit_in_process(
    model: GraftNet, config: TrainConfig, phases: list[PhaseConfig], task: Task, seed: int
) -> FitTrace:
    """The per-worker loop's training step on one process: per phase, freeze per
    ``apply_phase``, build the optimizer and schedule with Graft's builders, train, validate
    every epoch (the plateau schedule reads the validation loss)."""
    generator = torch.Generator().manual_seed(seed)
    val_accuracy: list[float] = []
    start = time.perf_counter()
    for phase in phases:
        unfrozen = apply_phase(model, phase)
        lr = config.optimizer.lr * phase.lr_scale
        optimizer = build_optimizer(
            [p for p in model.parameters() if p.requires_grad], config.optimizer, lr
        )
        loader = DataLoader(
            task.train,
            batch_size=config.batch_size,
            shuffle=True,
            generator=generator,
            drop_last=len(task.train) > config.batch_size,
        )
        schedule = build_schedule(
            optimizer, config.schedule, lr, steps_per_epoch=len(loader), total_epochs=phase.epochs
        )
        for _ in range(phase.epochs):
            set_train_mode(model, unfrozen if phase.trainable != "all" else None)
            for xb, yb in loader:
                optimizer.zero_grad(set_to_none=True)
                nn.functional.cross_entropy(model(xb), yb).backward()
                optimizer.step()
                schedule.after_batch()
            val = evaluate_model(model, task.val)
            schedule.after_epoch(val["loss"])
            val_accuracy.append(val["accuracy"])
    seconds = time.perf_counter() - start
    return FitTrace(val_accuracy, evaluate_model(model, task.test)["accuracy"], seconds)


def train_source(config: GraftConfig, data: SeedData) -> tuple[GraftNet, FitTrace]:
    """A fresh model for task A (seeded: same seed, same initial weights), trained on it."""
    seed_everything(data.seed, deterministic=False)
    model = build_model(source_model_spec(config, data.dataset_dir))
    trace = fit_in_process(
        model, config.pretrain, phases_for(config.pretrain), data.source, data.seed
    )
    return model, trace


# ----------------------------------------------------------------------------- groups

GroupRunner = Callable[[SeedData, Settings, dict[str, Arm]], None]


def _arm(arms: dict[str, Arm], group: str, name: str) -> Arm:
    return arms.setdefault(name, Arm(group, name))


def run_optimizers(data: SeedData, settings: Settings, arms: dict[str, Arm]) -> None:
    for name in OPTIMIZERS:
        overrides = [f"pretrain.optimizer.name={name}", f"pretrain.epochs={settings.epochs}"]
        if name == "adamw":
            # the book's AdamW example; with no decay AdamW is Adam
            overrides.append(f"pretrain.optimizer.weight_decay={ADAMW_DECAY}")
        _, trace = train_source(bench_config(overrides), data)
        _arm(arms, "optimizers", name).add(trace)


def run_schedules(data: SeedData, settings: Settings, arms: dict[str, Arm]) -> None:
    lr = 0.01  # Keras' SGD default, the constant baseline
    common = [
        "pretrain.optimizer.name=momentum",
        f"pretrain.optimizer.lr={lr}",
        f"pretrain.epochs={settings.epochs}",
    ]
    variants = {
        "constant": ["pretrain.schedule.name=constant"],
        "plateau (x0.5, patience 2)": [
            "pretrain.schedule.name=plateau",
            "pretrain.schedule.plateau_factor=0.5",
            "pretrain.schedule.plateau_patience=2",
        ],
        f"1cycle (peak {lr * settings.one_cycle_peak:g})": [
            "pretrain.schedule.name=one_cycle",
            f"pretrain.schedule.one_cycle_max_lr={lr * settings.one_cycle_peak}",
        ],
    }
    for name, overrides in variants.items():
        _, trace = train_source(bench_config([*common, *overrides]), data)
        _arm(arms, "schedules", name).add(trace)


def run_selu_depth(data: SeedData, settings: Settings, arms: dict[str, Arm]) -> None:
    hidden = json.dumps([100] * settings.depth)
    common = [
        f"model.hidden_sizes={hidden}",
        "model.batch_norm.enabled=false",
        "pretrain.optimizer.name=momentum",
        "pretrain.optimizer.lr=0.001",
        f"pretrain.epochs={settings.epochs}",
    ]
    variants = {
        f"SELU + LeCun, depth {settings.depth}": [
            "model.activation.name=selu",
            "model.init=lecun_normal",
        ],
        f"ReLU + He, depth {settings.depth}": [
            "model.activation.name=relu",
            "model.init=he_normal",
        ],
    }
    for name, overrides in variants.items():
        _, trace = train_source(bench_config([*common, *overrides]), data)
        _arm(arms, "selu_depth", name).add(trace)


def run_transfer(data: SeedData, settings: Settings, arms: dict[str, Arm]) -> None:
    for family in ("mlp", "cnn"):
        label = "dense" if family == "mlp" else "CNN"
        config = bench_config(
            [f"model.family={family}", f"pretrain.epochs={settings.pretrain_epochs}"]
        )
        source, pretrained = train_source(config, data)
        _arm(arms, "transfer", f"{label}: pretrain on A (8 classes)").add(pretrained)

        target_classes = len(data.manifest.tasks["target"].classes)
        phases = phases_for(config.finetune)
        spec = transfer_spec(
            source_model_spec(config, data.dataset_dir),
            num_classes=target_classes,
            reuse_blocks=config.finetune.reuse_blocks,
            available_blocks=len(source.backbone),
        )
        torch.manual_seed(data.seed)  # the new head's initial weights
        reused = transfer_model(source, spec)
        trace = fit_in_process(reused, config.finetune, phases, data.target, data.seed)
        steps = " -> ".join(p.trainable for p in phases)
        _arm(arms, "transfer", f"{label}: transfer on B ({steps})").add(trace)

        seed_everything(data.seed, deterministic=False)
        scratch = build_model(target_spec(config, data))
        everything = [PhaseConfig(trainable="all", epochs=sum(p.epochs for p in phases))]
        trace = fit_in_process(scratch, config.finetune, everything, data.target, data.seed)
        _arm(arms, "transfer", f"{label}: from scratch on B").add(trace)


RUNNERS: dict[str, GroupRunner] = {
    "optimizers": run_optimizers,
    "schedules": run_schedules,
    "selu_depth": run_selu_depth,
    "transfer": run_transfer,
}


# ----------------------------------------------------------------------------- claims


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def paired_gain(better: Sequence[float], worse: Sequence[float]) -> tuple[float, float]:
    """Mean per-seed difference and its standard error (0 with one seed)."""
    diffs = [b - w for b, w in zip(better, worse, strict=True)]
    mean, std = mean_std(diffs)
    return mean, std / math.sqrt(len(diffs))


def clearly_beats(better: Sequence[float], worse: Sequence[float]) -> bool:
    """The mean paired gain is positive and above twice its standard error (never with one
    seed: a single difference has no spread to compare it with)."""
    gain, se = paired_gain(better, worse)
    return len(better) > 1 and gain > 2 * se and gain > 0


def _fmt(values: Sequence[float]) -> str:
    mean, std = mean_std(values)
    return f"{mean:.4f} ± {std:.4f}"


def _verdict(ok: bool, seeds: int) -> str:
    if seeds < 2:
        return "inconclusive (one seed: no spread to judge by)"
    return "reproduced" if ok else "NOT reproduced"


def _find(arms: dict[str, Arm], prefix: str) -> Arm:
    return next(arm for name, arm in arms.items() if name.startswith(prefix))


def claim_optimizers(arms: dict[str, Arm]) -> str:
    sgd = arms["sgd"]
    momentum_ok = all(
        clearly_beats(arms[name].test_accuracy, sgd.test_accuracy) for name in ("momentum", "nag")
    )
    fast = [arms[name] for name in FAST_ADAPTIVE]
    adaptive_ok = all(
        clearly_beats(arm.first_epoch_val_accuracy, sgd.first_epoch_val_accuracy) for arm in fast
    )
    slowest = min(fast, key=lambda arm: statistics.fmean(arm.first_epoch_val_accuracy))
    verdict = _verdict(momentum_ok and adaptive_ok, len(sgd.test_accuracy))
    return (
        "book claim: momentum and NAG beat plain SGD, and the adaptive methods (RMSProp, Adam, "
        f"AdaMax, Nadam, AdamW) converge faster than SGD -> {verdict}"
        f" (test acc: SGD {_fmt(sgd.test_accuracy)}, momentum "
        f"{_fmt(arms['momentum'].test_accuracy)}, NAG {_fmt(arms['nag'].test_accuracy)}; val acc "
        f"after epoch 1: SGD {_fmt(sgd.first_epoch_val_accuracy)}, slowest adaptive "
        f"{slowest.name} {_fmt(slowest.first_epoch_val_accuracy)})"
    )


def claim_schedules(arms: dict[str, Arm]) -> str:
    constant = arms["constant"]
    plateau = _find(arms, "plateau")
    cycle = _find(arms, "1cycle")
    vs_plateau, se = paired_gain(cycle.test_accuracy, plateau.test_accuracy)
    ok = clearly_beats(cycle.test_accuracy, constant.test_accuracy) and vs_plateau > -2 * se
    verdict = _verdict(ok, len(cycle.test_accuracy))
    return (
        "book claim: at the same epoch budget 1cycle beats a constant LR and does no worse "
        f"than performance (plateau) scheduling -> {verdict} (test acc: 1cycle "
        f"{_fmt(cycle.test_accuracy)}, constant {_fmt(constant.test_accuracy)}, plateau "
        f"{_fmt(plateau.test_accuracy)})"
    )


def claim_selu_depth(arms: dict[str, Arm]) -> str:
    selu = _find(arms, "SELU")
    relu = _find(arms, "ReLU")
    ok = clearly_beats(selu.test_accuracy, relu.test_accuracy)
    return (
        "book claim: a deep plain dense net trains well with SELU (self-normalizing) but "
        f"struggles with ReLU -> {_verdict(ok, len(selu.test_accuracy))} (test acc: SELU "
        f"{_fmt(selu.test_accuracy)}, ReLU {_fmt(relu.test_accuracy)}; val acc after epoch 1: "
        f"SELU {_fmt(selu.first_epoch_val_accuracy)}, ReLU {_fmt(relu.first_epoch_val_accuracy)})"
    )


def claim_transfer(arms: dict[str, Arm]) -> str:
    gains: dict[str, tuple[float, float]] = {}
    clear: dict[str, bool] = {}
    for label in ("dense", "CNN"):
        reused = _find(arms, f"{label}: transfer").test_accuracy
        scratch = _find(arms, f"{label}: from scratch").test_accuracy
        gains[label] = paired_gain(reused, scratch)
        clear[label] = clearly_beats(reused, scratch)
    ok = clear["CNN"] and gains["CNN"][0] > gains["dense"][0]
    seeds = len(_find(arms, "CNN: transfer").test_accuracy)
    detail = ", ".join(
        f"{label} gain {gain:+.4f} ± {se:.4f} (s.e.){' clear' if clear[label] else ''}"
        for label, (gain, se) in gains.items()
    )
    return (
        "book claim: transfer beats training from scratch on B with a CNN backbone, and helps "
        f"a small dense network less -> {_verdict(ok, seeds)} ({detail})"
    )


CLAIMS: dict[str, Callable[[dict[str, Arm]], str]] = {
    "optimizers": claim_optimizers,
    "schedules": claim_schedules,
    "selu_depth": claim_selu_depth,
    "transfer": claim_transfer,
}

TITLES = {
    "optimizers": f"optimizers on task A, default MLP, lr 1e-3 (AdamW decay {ADAMW_DECAY:g})",
    "schedules": "LR schedules on task A, momentum SGD from lr 0.01",
    "selu_depth": "deep plain dense net on task A, momentum SGD lr 1e-3",
    "transfer": "A/B transfer, task B = T-shirt vs Pullover, 200 training images",
}


# ----------------------------------------------------------------------------- output


def print_tables(results: dict[str, dict[str, Arm]], settings: Settings) -> list[str]:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=200)
    claims = []
    for group, arms in results.items():
        table = Table(title=f"{TITLES[group]} | {settings.describe(group)}")
        for column in ("arm", "test acc (mean ± std)", "val acc after epoch 1", "train s", "seeds"):
            table.add_column(column, justify="left" if column == "arm" else "right")
        for arm in arms.values():
            table.add_row(
                arm.name,
                _fmt(arm.test_accuracy),
                _fmt(arm.first_epoch_val_accuracy),
                f"{statistics.fmean(arm.seconds):.1f}",
                str(len(arm.test_accuracy)),
            )
        console.print(table)
        claim = CLAIMS[group](arms)
        claims.append(claim)
        console.print(claim, soft_wrap=True)
        console.print()
    return claims


def run(settings: Settings, groups: Sequence[str], work: Path) -> dict[str, dict[str, Arm]]:
    results: dict[str, dict[str, Arm]] = {group: {} for group in groups}
    torch.set_num_threads(settings.threads)
    for seed in range(settings.seeds):
        data = prepare_seed(seed, settings.rows, work)
        for group in groups:
            start = time.perf_counter()
            RUNNERS[group](data, settings, results[group])
            print(
                f"seed {seed}: {group} done in {time.perf_counter() - start:.0f} s",
                file=sys.stderr,
            )
    return results


def parse_args(argv: Sequence[str] | None) -> tuple[Settings, list[str], argparse.Namespace]:
    parser = argparse.ArgumentParser(
        description=(__doc__ or "").split("\n\n")[0],
        epilog=(__doc__ or "").split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--groups", nargs="+", choices=GROUPS, default=list(GROUPS))
    parser.add_argument("--seeds", type=int, help=f"default {DEFAULTS['seeds']}")
    parser.add_argument(
        "--rows", type=int, help=f"Fashion-MNIST rows kept (of 70,000), default {DEFAULTS['rows']}"
    )
    parser.add_argument("--epochs", type=int, help=f"training epochs, default {DEFAULTS['epochs']}")
    parser.add_argument(
        "--depth", type=int, help=f"selu_depth hidden layers, default {DEFAULTS['depth']}"
    )
    parser.add_argument(
        "--pretrain-epochs",
        type=int,
        help=f"transfer: epochs on task A, default {DEFAULTS['pretrain_epochs']}",
    )
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument(
        "--one-cycle-peak", type=float, default=10.0, help="1cycle peak LR / the constant LR"
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: " + ", ".join(f"{k} {v}" for k, v in QUICK.items()),
    )
    parser.add_argument("--json", type=Path, help="also write every figure to this file")
    parser.add_argument("--work-dir", type=Path, help="prepared datasets (default: a temp dir)")
    args = parser.parse_args(argv)
    base = QUICK if args.quick else DEFAULTS
    chosen = {key: getattr(args, key) for key in base}
    settings = Settings(
        **{key: base[key] if value is None else value for key, value in chosen.items()},
        threads=args.threads,
        one_cycle_peak=args.one_cycle_peak,
    )
    groups = [group for group in GROUPS if group in args.groups]
    return settings, groups, args


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    settings, groups, args = parse_args(argv)
    # data-prep's findings (a constant border pixel) and 1cycle's short-run warning are
    # expected here; the tables are the output
    graft_logger = logging.getLogger("graft")
    previous_level = graft_logger.level
    graft_logger.setLevel(logging.ERROR)
    try:
        return _main(settings, groups, args)
    finally:  # an in-process caller (the bench's test) gets its logging back
        graft_logger.setLevel(previous_level)


def _main(settings: Settings, groups: list[str], args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="graft-science-") as tmp:
        work = args.work_dir or Path(tmp)
        start = time.perf_counter()
        results = run(settings, groups, work)
        total = time.perf_counter() - start
    claims = print_tables(results, settings)
    print(f"total {total:.0f} s; torch {torch.__version__}")
    report = {
        "settings": asdict(settings),
        "groups": {
            group: [asdict(arm) for arm in arms.values()] for group, arms in results.items()
        },
        "claims": claims,
        "seconds": total,
    }
    if args.json is not None:
        args.json.write_text(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
