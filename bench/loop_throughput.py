"""Training throughput: Graft's loop under Ray Train vs a bare PyTorch loop, one worker.

Same model (Graft's ``build_model`` of the default preset's MLP, and of its CNN with
``model.family=cnn``), same prepared Fashion-MNIST task-A rows, same batch size, same optimizer
(AdamW, lr 1e-3), same number of torch threads, one process each:

* bare: ``DataLoader`` -> forward -> ``cross_entropy`` -> ``backward`` -> ``optimizer.step()``
  in this process, nothing else; run before every round of Ray runs and once after the last,
  and a round's ratios use the mean of the bare runs on either side of it;
* bare loop in a Ray Train worker (variant ``ray-bare``): the same bare loop as the one worker
  of a plain ``TorchTrainer`` run, which isolates what Ray's worker process costs from what
  Graft's loop adds;
* Graft: ``graft.train.fit.fit`` with one Ray Train worker running ``train_loop_per_worker``
  (per step: gradient norm, schedule, metrics; per epoch: validation, checkpoint, report to the
  controller, early-stopping bookkeeping);
* Graft in process (variant ``in-process``): the same loop run by
  ``graft.train.local_fit.fit_in_process`` in this process, which is what a one-worker
  ``graft pretrain`` or finetune runs by default (``*.runner=auto``): each epoch's checkpoint
  copied into the run's storage, no worker process to start.

Graft's loop does two things the bare loop does not, both kept on purpose because the bare
loop stands for the loop most PyTorch code runs:

* a one-worker Graft loop reads its shuffled batches with one gather per batch
  (``graft.train.rows.shuffled_batches``: the same rows in the same order from the same
  generator draws), where the bare loop keeps ``DataLoader``'s row-by-row reads and
  ``torch.stack``; on the MLP that saves about an eighth of a step. A DDP worker keeps the
  row-by-row loader (Ray Train gives it a ``DistributedSampler``);
* on the CPU a CNN's weights are stored channels-last
  (``graft.train.workers.channels_last_on_cpu``), which oneDNN's convolutions run faster.

So Graft's training steps can run faster than the bare loop's.

Worker start-up is excluded, and so is the first epoch of every run (warm-up). Three figures,
all in training samples per second:

* steps: wall time of the training steps of an epoch only (Graft: the loop's own
  ``epoch_seconds`` metric);
* steps, CPU: the same steps over the training thread's CPU time (Graft: ``epoch_cpu_seconds``).
  With one torch thread every op runs on that thread, so this figure counts the work a loop
  does and is much less moved by other processes than wall time (cache and SMT sharing still
  move it); with more threads it leaves out the other threads' work;
* whole epoch (Graft only): the time from the first to the last epoch report as the Ray Train
  controller receives them (steps + validation + checkpoint + report), which is what a user
  waits for. The bare loop does no validation, so this figure also counts work the bare loop
  does not do. The controller takes reports from a one-slot queue once per health check
  (``RAY_TRAIN_HEALTH_CHECK_INTERVAL_S``, 0.25 s here): arrivals are rounded to that tick, so
  the figure needs a timed window of several seconds (``--epochs``), and an epoch shorter than
  the tick waits for it (with ``--rows 4000`` an MLP epoch's work takes about 0.1 s but one
  epoch is reported per 0.25 s, a whole-epoch ratio near 0.3).

Noise: with the defaults (20,000 rows, batch 64) an MLP epoch takes about 0.3 s, so one run
times about 1 s of training; on a shared 2-core machine a single run's ratio moves by tens of
percent (Graft lean: 1.27, 0.99 and 0.66 in three back-to-back single runs). ``--repeats`` runs
every loop that many times, interleaved round by round (each round in a rotated order), and
reports the median ratio with its range; the "timed s" column says how long one run's timed
window was.

Variants show what Graft's optional extras cost: ``default`` (the config defaults:
deterministic algorithms, early stopping keeping the best weights, the one-batch preflight),
``lean`` (deterministic=false, no early stopping, no preflight) and ``tracked`` (MLflow logging
to a local SQLite store plus per-step diagnostics every ``--diagnostics-every`` steps). The
preflight runs once before a fit, not per epoch: its seconds are reported on their own.

    python bench/loop_throughput.py                       # mlp + cnn, all variants
    python bench/loop_throughput.py --models mlp --variants ray-bare default --epochs 4
    python bench/loop_throughput.py --models mlp --variants ray-bare default lean --repeats 5

Timings need a quiet machine: on a shared 2-core box a single run's ratio moves by tens of
percent; compare medians over repeats, and the CPU figures.
"""

from __future__ import annotations

import argparse
import itertools
import os
import statistics
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

os.environ.setdefault("RAY_TRAIN_V2_ENABLED", "1")
# one progress line per epoch from the worker would interleave with the tables
os.environ.setdefault("GRAFT_RAY_LOG_TO_DRIVER", "0")

TARGET_RATIO = 0.9  # the training steps alone
WHOLE_EPOCH_TARGET = 0.95  # steps + validation + checkpoint + report (issue 21)
BARE = "bare PyTorch"
MODELS = ("mlp", "cnn")
VARIANTS = ("ray-bare", "default", "in-process", "lean", "tracked")
VARIANT_OVERRIDES: dict[str, list[str]] = {
    "ray-bare": [],  # not Graft's loop: the bare loop run by a Ray Train worker
    "default": [],
    "in-process": [],  # the default loop, trained in this process (pretrain.runner=in_process)
    "lean": [
        "pretrain.deterministic=false",
        "pretrain.early_stopping.enabled=false",
        "pretrain.early_stopping.restore_best=false",
        "pretrain.preflight_overfit_batch=false",
    ],
    "tracked": [],  # + diagnostics every N steps, set from --diagnostics-every
}


@dataclass
class Throughput:
    label: str
    samples_per_s: float  # training steps only
    cpu_samples_per_s: float  # the same steps over the training thread's CPU seconds
    timed_seconds: float  # wall seconds of the timed steps (all epochs but the first)
    epoch_samples_per_s: float | None = None  # whole epochs (Graft only)
    fit_seconds: float | None = None  # the whole fit() call, worker start-up included
    preflight_seconds: float | None = None
    epochs: int = 0


@dataclass
class Timing:
    """Samples/s of the timed epochs of one run of a bare loop (crosses process boundaries)."""

    samples_per_s: float
    cpu_samples_per_s: float
    timed_seconds: float


def _report_clock(path: Path) -> Any:
    """A Ray Train callback, run in the controller, appending each report's arrival time."""
    from ray.train.v2.api.callback import UserCallback

    class ReportClock(UserCallback):
        def after_report(self, run_context: Any, metrics: Any, checkpoint: Any) -> None:
            with path.open("a") as handle:
                handle.write(f"{time.perf_counter()}\n")

    return ReportClock()


def _config(model: str, variant: str, args: argparse.Namespace, work: Path) -> Any:
    from graft.config import load_config

    overrides = [
        f"work_dir={work}",
        f"data.max_rows={args.rows}",
        f"pretrain.epochs={args.epochs}",
        "pretrain.num_workers=1",
        f"model.family={model}",
        *VARIANT_OVERRIDES[variant],
    ]
    if args.batch_size is not None:
        overrides.append(f"pretrain.batch_size={args.batch_size}")
    if variant == "tracked":
        overrides.append(f"pretrain.diagnostics.every_n_steps={args.diagnostics_every}")
        overrides.append(f"tracking.tracking_uri=sqlite:///{work / 'mlflow.db'}")
    return load_config(preset="default", overrides=overrides)


def _bare_epochs(
    spec_json: str, train_path: str, opt: dict[str, Any], batch_size: int, epochs: int, seed: int
) -> Timing:
    """The reference loop: the same model and data, the plainest loop PyTorch allows; returns
    samples/s over every epoch but the first (warm-up: allocator, thread pool), as for Graft."""
    import numpy as np
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    from graft.nn.models import ModelSpec, build_model

    torch.manual_seed(seed)
    model = build_model(ModelSpec.from_json(spec_json))
    with np.load(train_path) as archive:
        train = TensorDataset(
            torch.from_numpy(archive["x"].astype(np.float32)),
            torch.from_numpy(archive["y"].astype(np.int64)),
        )
    optimizer = torch.optim.AdamW(
        model.parameters(),
        lr=opt["lr"],
        betas=(opt["beta1"], opt["beta2"]),
        eps=opt["eps"],
        weight_decay=opt["weight_decay"],
    )
    loader = DataLoader(train, batch_size=batch_size, shuffle=True, drop_last=True)
    seconds, cpu_seconds, samples = [], [], []
    model.train()
    for _ in range(epochs):
        seen = 0
        start, cpu_start = time.perf_counter(), time.thread_time()
        for xb, yb in loader:
            optimizer.zero_grad(set_to_none=True)
            torch.nn.functional.cross_entropy(model(xb), yb).backward()
            optimizer.step()
            seen += len(yb)
        seconds.append(time.perf_counter() - start)
        cpu_seconds.append(time.thread_time() - cpu_start)
        samples.append(seen)
    return Timing(
        sum(samples[1:]) / sum(seconds[1:]),
        sum(samples[1:]) / sum(cpu_seconds[1:]),
        sum(seconds[1:]),
    )


def _bare_arguments(config: Any, dataset: Path, epochs: int) -> dict[str, Any]:
    from graft.train.stage_requests import source_model_spec

    return {
        "spec_json": source_model_spec(config, str(dataset)).to_json(),
        "train_path": str(dataset / "source" / "train.npz"),
        "opt": config.pretrain.optimizer.model_dump(),
        "batch_size": config.pretrain.batch_size,
        "epochs": epochs,
        "seed": config.seed,
    }


def bare_loop(config: Any, dataset: Path, epochs: int, label: str) -> Throughput:
    """The bare loop in this process."""
    timing = _bare_epochs(**_bare_arguments(config, dataset, epochs))
    return Throughput(
        label, timing.samples_per_s, timing.cpu_samples_per_s, timing.timed_seconds, epochs=epochs
    )


def _bare_worker(arguments: dict[str, Any]) -> None:
    import ray.train

    from graft.train.workers import worker_torch_threads

    worker_torch_threads()
    timing = _bare_epochs(**arguments)
    # Train V2 returns only the metrics reported with a checkpoint
    with tempfile.TemporaryDirectory() as tmp:
        Path(tmp, "rate.txt").write_text(str(timing.samples_per_s))
        ray.train.report(asdict(timing), checkpoint=ray.train.Checkpoint.from_directory(tmp))


def bare_loop_in_ray(config: Any, dataset: Path, epochs: int, work: Path, name: str) -> Throughput:
    """The same bare loop as the single worker of a Ray Train run: what Ray's worker process
    costs by itself, apart from anything Graft's loop does."""
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    trainer = TorchTrainer(
        _bare_worker,
        train_loop_config=_bare_arguments(config, dataset, epochs),
        scaling_config=ScalingConfig(num_workers=1),
        run_config=RunConfig(name=name, storage_path=str(work / "ray")),
    )
    start = time.perf_counter()
    result = trainer.fit()
    seconds = time.perf_counter() - start
    if result.metrics is None:
        raise SystemExit(f"{name}: the bare Ray Train run reported no metrics")
    return Throughput(
        "bare loop in a Ray Train worker",
        float(result.metrics["samples_per_s"]),
        float(result.metrics["cpu_samples_per_s"]),
        float(result.metrics["timed_seconds"]),
        fit_seconds=seconds,
        epochs=epochs,
    )


def graft_fit(config: Any, dataset: Path, work: Path, label: str, run_name: str) -> Throughput:
    from graft.io import tracking
    from graft.io.ray_runtime import TrainStorage
    from graft.train.fit import fit
    from graft.train.request import FitRun
    from graft.train.stage_requests import pretrain_request

    run_id = None
    if config.pretrain.diagnostics.every_n_steps:
        client = tracking.client_for(config)
        run_id = client.create_run(tracking.experiment_id(config)).info.run_id
    start = time.perf_counter()
    request = pretrain_request(config, str(dataset), run_id)  # runs the preflight if enabled
    preflight = time.perf_counter() - start
    clock = work / f"{run_name}.reports"
    start = time.perf_counter()
    result = fit(
        request,
        FitRun(
            num_workers=1,
            storage=TrainStorage(str((work / "ray").resolve())),
            run_name=run_name,
            output_dir=work / run_name,
            max_failures=0,
            num_to_keep=1,
            callbacks=(_report_clock(clock),),
        ),
    )
    fit_seconds = time.perf_counter() - start
    arrivals = [float(line) for line in clock.read_text().split()]
    return _fit_throughput(config, label, result.history, arrivals, fit_seconds, preflight)


def graft_fit_in_process(
    config: Any, dataset: Path, work: Path, label: str, run_name: str
) -> Throughput:
    """As :func:`graft_fit`, the loop run in this process: ``fit_in_process``'s checkpoint
    keeping, with each report's arrival clocked as the Ray Train controller clocks it."""
    from graft.train.local_fit import CheckpointKeeper, fit_here
    from graft.train.loop_session import LocalSession
    from graft.train.stage_requests import pretrain_request

    start = time.perf_counter()
    request = pretrain_request(config, str(dataset), None)  # runs the preflight if enabled
    preflight = time.perf_counter() - start
    keeper = CheckpointKeeper(work / "in-process" / run_name, num_to_keep=1)
    arrivals: list[float] = []

    def report(metrics: dict[str, float], folder: str | None) -> None:
        keeper.keep(metrics, folder)
        arrivals.append(time.perf_counter())

    start = time.perf_counter()
    result = fit_here(request, LocalSession(report_to=report), work / run_name)
    fit_seconds = time.perf_counter() - start
    return _fit_throughput(config, label, result.history, arrivals, fit_seconds, preflight)


def _fit_throughput(
    config: Any,
    label: str,
    history: list[dict[str, float]],
    arrivals: list[float],
    fit_seconds: float,
    preflight: float,
) -> Throughput:
    """A Graft fit's figures from its epoch history and its reports' arrival times, the
    first epoch left out as warm-up."""
    timed = history[1:]
    if not timed:
        raise SystemExit(f"{label}: fewer than 2 epochs ran (early stop?); raise --epochs")
    seen = [b["examples_seen"] - a["examples_seen"] for a, b in itertools.pairwise(history)]
    steps_seconds = sum(h["epoch_seconds"] for h in timed)
    return Throughput(
        label,
        sum(seen) / steps_seconds,
        sum(seen) / sum(h["epoch_cpu_seconds"] for h in timed),
        steps_seconds,
        epoch_samples_per_s=sum(seen) / (arrivals[-1] - arrivals[0]),
        fit_seconds=fit_seconds,
        preflight_seconds=preflight if config.pretrain.preflight_overfit_batch else None,
        epochs=len(history),
    )


def _verdict(ratio: float, target: float = TARGET_RATIO) -> str:
    return f"meets {target}" if ratio >= target else f"BELOW {target}"


@dataclass
class Rounds:
    """Every run of one model: ``bare[r]`` and ``bare[r + 1]`` are the in-process bare runs on
    either side of round ``r``; ``loops[label][r]`` is that loop's run in round ``r``."""

    bare: list[Throughput]
    loops: dict[str, list[Throughput]]

    def ratios(self, label: str, figure: str) -> list[float]:
        """One ratio per round: the loop's ``figure`` over the mean of the bare runs around it
        (the same figure of the bare loop; whole-epoch figures over the bare steps figure)."""
        base = "samples_per_s" if figure == "epoch_samples_per_s" else figure
        out = []
        for index, row in enumerate(self.loops[label]):
            value = getattr(row, figure)
            if value is None:
                continue
            around = self.bare[index : index + 2]
            out.append(value / statistics.fmean(getattr(b, base) for b in around))
        return out


def _spread(values: list[float]) -> str:
    """Median, with the range over the runs when there are several."""
    if not values:
        return "-"
    text = f"{statistics.median(values):.3f}"
    if len(values) > 1:
        text += f" ({min(values):.2f}-{max(values):.2f})"
    return text


def _median(values: list[float | None], fmt: str) -> str:
    present = [v for v in values if v is not None]
    return format(statistics.median(present), fmt) if present else "-"


def print_table(model: str, config: Any, rounds: Rounds, threads: int) -> None:
    """One table per model: samples/s are medians over the runs, ratios the median of each
    round's ratio to the bare runs around it, with their range (bare row: each bare run over
    the bare runs' median, which shows how much the machine's load drifted)."""
    from rich.console import Console
    from rich.table import Table

    console = Console(width=200)
    repeats = len(rounds.bare) - 1
    table = Table(
        title=f"{model}: {config.data.max_rows} Fashion-MNIST rows, batch "
        f"{config.pretrain.batch_size}, {rounds.bare[0].epochs} epochs (first excluded), "
        f"1 worker, {threads} torch thread(s); medians over {repeats} interleaved round(s)"
    )
    for column in (
        "loop",
        "runs",
        "steps samples/s",
        "ratio",
        "CPU samples/s",
        "CPU ratio",
        "whole-epoch samples/s",
        "ratio",
        "timed s",
        "fit() s (incl. start-up)",
        "preflight s",
    ):
        table.add_column(column, justify="left" if column == "loop" else "right")
    bare_wall = statistics.median(b.samples_per_s for b in rounds.bare)
    bare_cpu = statistics.median(b.cpu_samples_per_s for b in rounds.bare)
    table.add_row(
        BARE,
        str(len(rounds.bare)),
        f"{bare_wall:,.0f}",
        _spread([b.samples_per_s / bare_wall for b in rounds.bare]),
        f"{bare_cpu:,.0f}",
        _spread([b.cpu_samples_per_s / bare_cpu for b in rounds.bare]),
        "-",
        "-",
        _median([b.timed_seconds for b in rounds.bare], ".2f"),
        "-",
        "-",
    )
    for label, runs in rounds.loops.items():
        table.add_row(
            label,
            str(len(runs)),
            _median([r.samples_per_s for r in runs], ",.0f"),
            _spread(rounds.ratios(label, "samples_per_s")),
            _median([r.cpu_samples_per_s for r in runs], ",.0f"),
            _spread(rounds.ratios(label, "cpu_samples_per_s")),
            _median([r.epoch_samples_per_s for r in runs], ",.0f"),
            _spread(rounds.ratios(label, "epoch_samples_per_s")),
            _median([r.timed_seconds for r in runs], ".2f"),
            _median([r.fit_seconds for r in runs], ".1f"),
            _median([r.preflight_seconds for r in runs], ".2f"),
        )
    console.print(table)
    for label in rounds.loops:
        steps = statistics.median(rounds.ratios(label, "samples_per_s"))
        cpu = statistics.median(rounds.ratios(label, "cpu_samples_per_s"))
        line = f"{label}: steps ratio {steps:.3f} ({_verdict(steps)}), CPU ratio {cpu:.3f}"
        epochs = rounds.ratios(label, "epoch_samples_per_s")
        if epochs:
            epoch = statistics.median(epochs)
            line += f", whole-epoch ratio {epoch:.3f} ({_verdict(epoch, WHOLE_EPOCH_TARGET)})"
        console.print(line)
    console.print()


def run_rounds(
    model: str, args: argparse.Namespace, dataset: Path, work: Path, repeats: int
) -> tuple[Any, Rounds]:
    """``repeats`` rounds of every variant, a bare run before each round and after the last;
    round ``r`` starts at the ``r``-th variant, so no variant always runs right after the bare
    loop (or always last, on a machine that gets busier)."""
    config = _config(model, "default", args, work)
    variants = list(args.variants)
    rounds = Rounds(bare=[], loops={})
    for index in range(repeats):
        rounds.bare.append(bare_loop(config, dataset, args.epochs, BARE))
        shift = index % len(variants)
        for variant in variants[shift:] + variants[:shift]:
            name = f"{model}-{variant}-{index}"
            if variant == "ray-bare":
                row = bare_loop_in_ray(config, dataset, args.epochs, work, name)
            elif variant == "in-process":
                variant_config = _config(model, variant, args, work)
                row = graft_fit_in_process(variant_config, dataset, work, f"Graft {variant}", name)
            else:
                variant_config = _config(model, variant, args, work)
                row = graft_fit(variant_config, dataset, work, f"Graft {variant}", name)
            rounds.loops.setdefault(row.label, []).append(row)
    rounds.bare.append(bare_loop(config, dataset, args.epochs, BARE))
    # the table lists the loops in the order asked for, whichever ran first
    order = [
        "bare loop in a Ray Train worker" if v == "ray-bare" else f"Graft {v}" for v in variants
    ]
    rounds.loops = {label: rounds.loops[label] for label in order}
    return config, rounds


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=(__doc__ or "").split("\n\n")[0],
        epilog=(__doc__ or "").split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS))
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    parser.add_argument("--rows", type=int, default=20000, help="Fashion-MNIST rows kept")
    parser.add_argument("--epochs", type=int, default=5, help="per run; the first is warm-up")
    parser.add_argument("--batch-size", type=int, help="default: the preset's pretrain batch")
    parser.add_argument("--threads", type=int, default=1, help="torch threads, both loops")
    parser.add_argument("--diagnostics-every", type=int, default=10, help="tracked: N steps")
    parser.add_argument("--work-dir", type=Path, help="default: a fresh temporary folder")
    parser.add_argument(
        "--repeats", type=int, default=3, help="interleaved rounds of every loop; medians reported"
    )
    args = parser.parse_args(argv)
    if args.epochs < 2:
        parser.error("--epochs must be >= 2: the first epoch is warm-up and not counted")
    if args.repeats < 1:
        parser.error("--repeats must be >= 1")

    # the Ray worker reads it (Ray's local workers inherit this environment)
    from graft.config.runtime import TORCH_THREADS_ENV

    os.environ[TORCH_THREADS_ENV] = str(args.threads)
    import torch

    from graft.data.prepare import prepare_dataset
    from graft.io.ray_runtime import ensure_ray, shutdown_ray

    torch.set_num_threads(args.threads)
    work = (args.work_dir or Path(tempfile.mkdtemp(prefix="graft-throughput-"))).resolve()
    base = _config("mlp", "default", args, work)
    dataset = work / "dataset"
    prepare_dataset(base.data, base.seed, dataset)
    ensure_ray(base.ray)
    # Ray's daemons run during both loops, so neither gets a quieter machine
    try:
        for model in args.models:
            config, rounds = run_rounds(model, args, dataset, work, args.repeats)
            print_table(model, config, rounds, args.threads)
    finally:
        shutdown_ray()
    print(f"outputs in {work}; torch {torch.__version__}, {os.cpu_count()} CPUs")


if __name__ == "__main__":
    main()
