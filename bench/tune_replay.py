"""What early stopping can save on this task at most: replay random search's recorded learning
curves through FIFO, through the ASHA scheduler Graft builds, and through an oracle.

`bench/tune_efficiency.py` runs real searches, but three seeds of a race to a target are mostly
luck (epochs to 0.93 ranged from 1 to 25 between seeds). This replays what random search
recorded instead. Every trial of its saved random + FIFO searches is a configuration drawn from
the search space together with its whole learning curve (the finetune's patience-based early
stopping included), so thousands of searches are replayed by resampling those curves:

- **FIFO**: every trial runs until its own early stopping or its last epoch (random search);
- **ASHA**: `graft.tune.search_algorithms.make_scheduler`'s scheduler itself, Ray's
  ``ASHAScheduler`` built from the preset with the ``--asha`` settings (several brackets:
  asynchronous Hyperband), gets each epoch's result and cuts what it says to cut. A
  configuration's curve does not depend on the scheduler, which only ends it early;
- **oracle**: stops every trial that will never reach the target after one epoch (the least
  any scheduler has to spend to see a trial) and runs the others until they reach it. No
  scheduler can do better with these configurations: its ratio to FIFO bounds what early
  stopping alone can save, whatever the scheduler.

Trials run ``--concurrency`` at a time, one epoch each in turn, the search starts trials
(at most ``--trial-cap``) until ``--samples`` full trials' worth of trial-epochs is spent,
and a search that never reaches a target counts its whole budget, as in the real bench.
A searcher that raises the share of good configurations (TPE) is not replayed: resampling
draws configurations as random search does.

    python bench/tune_efficiency.py --preset default --space wide --work-dir /tmp/tb/wide
    python bench/tune_replay.py --work-dir /tmp/tb/wide --seeds 3 --targets 0.93 0.945 0.95
"""

from __future__ import annotations

import argparse
import math
import random
import statistics
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the sibling bench module
from tune_efficiency import RANDOM, epoch_budget_of, method_dir, trial_frames

METRIC = "val_accuracy"


@dataclass(frozen=True)
class Curve:
    """One recorded trial: its validation accuracy after each epoch it trained."""

    accuracy: tuple[float, ...]

    def first_epoch_reaching(self, target: float) -> int | None:
        return next((i + 1 for i, a in enumerate(self.accuracy) if a >= target), None)


@dataclass
class _Trial:
    trial_id: str  # what Ray's schedulers key their bookkeeping by
    curve: Curve
    epochs: int = 0


# what a replayed search asks its scheduler after each epoch: keep the trial running?
Decide = Callable[[_Trial, bool], bool]


def replay_search(
    pool: Sequence[Curve],
    target: float,
    *,
    budget: int,
    concurrency: int,
    trial_cap: int,
    rng: random.Random,
    decide: Decide,
) -> int | None:
    """Trial-epochs spent until some trial reached ``target``; None if the budget ran out.

    ``decide(trial, finished)`` is told of each epoch (``finished``: the curve ends there) and
    returns whether the trial goes on."""
    running: list[_Trial] = []
    spent = started = 0
    while spent < budget:
        while len(running) < concurrency and started < trial_cap:
            running.append(_Trial(f"t{started}", rng.choice(pool)))
            started += 1
        if not running:
            return None
        still: list[_Trial] = []
        for trial in running:
            if spent >= budget:
                break
            trial.epochs += 1
            spent += 1
            if trial.curve.accuracy[trial.epochs - 1] >= target:
                return spent
            finished = trial.epochs >= len(trial.curve.accuracy)
            if decide(trial, finished) and not finished:
                still.append(trial)
        running = still
    return None


def fifo() -> Decide:
    return lambda trial, finished: True


def oracle(target: float) -> Decide:
    """Runs only the trials that will reach ``target``; sees every other one for one epoch."""
    return lambda trial, finished: trial.curve.first_epoch_reaching(target) is not None


def asha(scheduler: Any) -> Decide:
    """Ray's scheduler decides, through the calls Tune makes: a trial added, each result, and
    completion for a trial that ended on its own (which still enters the rung it reached)."""
    from ray.tune.schedulers import TrialScheduler

    added: set[str] = set()

    def decide(trial: _Trial, finished: bool) -> bool:
        if trial.trial_id not in added:
            scheduler.on_trial_add(None, trial)
            added.add(trial.trial_id)
        result = {"epoch": trial.epochs, METRIC: trial.curve.accuracy[trial.epochs - 1]}
        if finished:
            scheduler.on_trial_complete(None, trial, result)
            return False
        return bool(scheduler.on_trial_result(None, trial, result) == TrialScheduler.CONTINUE)

    return decide


def asha_scheduler(
    preset: str, grace_period: int, reduction_factor: float, brackets: int = 1
) -> Any:
    """The scheduler `graft tune` builds for this preset and these settings: ASHA, or with
    several brackets asynchronous Hyperband (``tune.scheduler=hyperband``)."""
    from graft.config import load_config
    from graft.train.request import phases_for
    from graft.tune.search_algorithms import make_scheduler

    config = load_config(
        preset=preset,
        overrides=[
            f"tune.scheduler={'asha' if brackets == 1 else 'hyperband'}",
            f"tune.grace_period={grace_period}",
            f"tune.reduction_factor={reduction_factor}",
            f"tune.hyperband_brackets={brackets}",
        ],
    )
    scheduler = make_scheduler(config, sum(p.epochs for p in phases_for(config.finetune)))
    scheduler.set_search_properties(METRIC, "max")
    return scheduler


def _asha_for(preset: str, grace_period: int, reduction_factor: float, brackets: int) -> Decide:
    return asha(asha_scheduler(preset, grace_period, reduction_factor, brackets))


@dataclass
class ReplayFigures:
    scheduler: str
    target: float
    mean_epochs: float  # a search that missed counts its whole budget
    half_width: float  # of the mean's 95% interval
    missed: float  # share of searches that never reached the target


def replay(
    pool: Sequence[Curve],
    target: float,
    name: str,
    make_decide: Callable[[], Decide],
    *,
    budget: int,
    concurrency: int,
    trial_cap: int,
    searches: int,
    seed: int,
) -> ReplayFigures:
    rng = random.Random(seed)
    np.random.seed(seed)  # ASHA with several brackets draws a trial's bracket from numpy
    reached = [
        replay_search(
            pool,
            target,
            budget=budget,
            concurrency=concurrency,
            trial_cap=trial_cap,
            rng=rng,
            decide=make_decide(),  # each search gets a fresh scheduler
        )
        for _ in range(searches)
    ]
    spent = [budget if n is None else n for n in reached]
    sd = statistics.stdev(spent) if len(spent) > 1 else 0.0
    return ReplayFigures(
        name,
        target,
        statistics.mean(spent),
        1.96 * sd / math.sqrt(len(spent)),
        sum(n is None for n in reached) / len(reached),
    )


def recorded_curves(work_dir: Path, seeds: int) -> list[Curve]:
    """Every trial of the random + FIFO searches saved under a tune_efficiency work dir."""
    curves = []
    for seed in range(seeds):
        experiment = method_dir(work_dir, RANDOM, seed)
        if not experiment.exists():
            continue
        for frame in trial_frames(experiment):
            if METRIC in frame:
                ordered = frame.dropna(subset=[METRIC]).sort_values("epoch")
                curves.append(Curve(tuple(float(a) for a in ordered[METRIC])))
    return curves


def main(argv: list[str] | None = None) -> list[ReplayFigures]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work-dir", type=Path, required=True, help="a tune_efficiency run")
    parser.add_argument("--seeds", type=int, default=3, help="its random searches to pool")
    parser.add_argument("--preset", default="default")
    parser.add_argument(
        "--samples", type=int, default=9, help="the budget: this many full trials' epochs"
    )
    parser.add_argument("--trial-cap", type=int, default=None, help="default 4 x --samples")
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--targets", type=float, nargs="+", default=[0.93, 0.945, 0.95])
    parser.add_argument(
        "--asha",
        nargs="+",
        default=["1,3", "2,3", "4,3", "1,2", "1,3,3"],
        metavar="GRACE,ETA[,BRACKETS]",
        help="ASHA settings to replay: grace period, reduction factor, and with brackets > 1 "
        "asynchronous Hyperband",
    )
    parser.add_argument("--searches", type=int, default=3000, help="replayed per scheduler")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--plot", type=Path, default=None, help="default: replay-<budget>.png in --work-dir"
    )
    args = parser.parse_args(argv)

    pool = recorded_curves(args.work_dir, args.seeds)
    if not pool:
        parser.error(f"no random + FIFO trials under {args.work_dir}")
    budget = epoch_budget_of(args.preset, args.samples)
    common = dict(
        budget=budget,
        concurrency=args.concurrency,
        trial_cap=args.trial_cap or 4 * args.samples,
        searches=args.searches,
        seed=args.seed,
    )
    figures: list[ReplayFigures] = []
    for target in args.targets:
        figures.append(replay(pool, target, "FIFO (random search)", fifo, **common))
        for setting in args.asha:
            grace, eta, brackets = [*setting.split(","), "1"][:3]
            name = f"ASHA grace {grace}, eta {eta}" + (
                f", Hyperband {brackets} brackets" if int(brackets) > 1 else ""
            )
            make = partial(_asha_for, args.preset, int(grace), float(eta), int(brackets))
            figures.append(replay(pool, target, name, make, **common))
        bound = partial(oracle, target)
        figures.append(replay(pool, target, "oracle (bound for any scheduler)", bound, **common))
    _print(figures, pool, args, budget)
    plot = args.plot or args.work_dir / f"replay-{budget}.png"
    print(f"plot: {plot_ratios(figures, plot, budget)}")
    return figures


def plot_ratios(figures: list[ReplayFigures], path: Path, budget: int) -> Path:
    """Each scheduler's trial-epochs to each target as a multiple of FIFO's, one group of bars
    per target, against the issue's goal of a third."""
    import matplotlib.pyplot as plt

    from graft.io.plotting import save_figure

    targets = list(dict.fromkeys(f.target for f in figures))
    schedulers = [f.scheduler for f in figures if f.target == targets[0]][1:]  # FIFO is 1.0
    width = 0.8 / len(schedulers)
    fig, ax = plt.subplots(figsize=(11, 4.5))
    for i, scheduler in enumerate(schedulers):
        ratios = []
        for target in targets:
            rows = {f.scheduler: f for f in figures if f.target == target}
            ratios.append(rows[scheduler].mean_epochs / rows[figures[0].scheduler].mean_epochs)
        ax.bar(
            [t + (i - (len(schedulers) - 1) / 2) * width for t in range(len(targets))],
            ratios,
            width,
            label=scheduler,
        )
    ax.axhline(1.0, color="black", linewidth=0.8, label="FIFO (random search)")
    ax.axhline(1 / 3, color="tab:red", linestyle="--", label="goal: a third of FIFO")
    ax.set_xticks(range(len(targets)), [f"val acc {t}" for t in targets])
    ax.set_ylabel("trial-epochs to target / FIFO's")
    ax.set_title(f"Replayed searches, budget {budget} trial-epochs: what early stopping saves")
    ax.set_ylim(0, max(1.1, ax.get_ylim()[1]))
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    return save_figure(fig, path, dpi=110)


def _print(
    figures: list[ReplayFigures], pool: list[Curve], args: argparse.Namespace, budget: int
) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(
        title=f"Replayed searches: {len(pool)} recorded random-search trials from "
        f"{args.work_dir}, {args.searches} searches per row, budget {budget} trial-epochs, "
        f"{args.concurrency} trials at a time"
    )
    for column in ("target", "share of trials reaching it", "scheduler"):
        table.add_column(column)
    for column in ("epochs to target (mean ± 95%)", "x FIFO", "searches that missed"):
        table.add_column(column, justify="right")
    for target in args.targets:
        share = sum(c.first_epoch_reaching(target) is not None for c in pool) / len(pool)
        rows = [f for f in figures if f.target == target]
        base = rows[0].mean_epochs
        for i, f in enumerate(rows):
            table.add_row(
                f"{target}" if i == 0 else "",
                f"{share:.0%}" if i == 0 else "",
                f.scheduler,
                f"{f.mean_epochs:.1f} ± {f.half_width:.1f}",
                f"{f.mean_epochs / base:.2f}",
                f"{f.missed:.0%}",
            )
    console = Console()
    if not console.is_terminal:
        console = Console(width=150)
    console.print(table)


if __name__ == "__main__":
    main()
