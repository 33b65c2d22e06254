"""Search efficiency at a fixed compute budget: random search with no scheduler cutting trials
vs Optuna TPE + ASHA.

Same task, same search space, the same budget of trial-epochs for both (``tune.epoch_budget``:
``--samples`` x the finetune's epochs, what ``--samples`` full-length trials cost), several
seeds each, all through Graft's own tune stage code (`graft.tune.search.run_search`: one Ray
Train fit per trial, with the finetune recipe's own early stopping in both). Each search starts
trials (up to ``--trial-cap``) until the budget is spent: random search's trials run until
they finish, while ASHA cuts the weak ones, so what it saves buys more configurations.
For each search it reports the best validation accuracy any trial reached, the trial-epochs
and trials it spent, and, for each target accuracy, the trial-epochs spent (all trials'
epochs, in the order they were reported) until some trial first reached it.

    python bench/tune_efficiency.py --preset default --seeds 3 --samples 9 \\
        --targets 0.93 0.945 0.95 --work-dir /tmp/tune-bench
    python bench/tune_efficiency.py --analyze-only --work-dir /tmp/tune-bench --seeds 3 \\
        --targets 0.94 0.95      # re-read the saved experiments for other targets

Run again with the same ``--work-dir``, an interrupted bench continues: the dataset, the
source model and the finished searches are reused, and a search cut off mid-way resumes.

Wall time is dominated by Ray Train worker start-up (~15-25 s per trial on 2 cores), so the
compute figure that matters is trial-epochs, not seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

os.environ.setdefault("RAY_TRAIN_V2_ENABLED", "1")
os.environ.setdefault("GRAFT_RAY_LOG_TO_DRIVER", "0")

RANDOM, OPTUNA_ASHA, OPTUNA_FIFO = (
    "random + FIFO (no scheduler cuts)",
    "Optuna TPE + ASHA",
    "Optuna TPE + FIFO",
)
# name -> (directory under --work-dir, config overrides). The issue compares the first two;
# TPE with FIFO separates what the searcher does from what the scheduler's cuts do
METHODS: dict[str, tuple[str, list[str]]] = {
    RANDOM: ("random", ["tune.searcher=random", "tune.scheduler=fifo"]),
    OPTUNA_ASHA: ("optuna", ["tune.searcher=optuna", "tune.scheduler=asha"]),
    OPTUNA_FIFO: ("optuna-fifo", ["tune.searcher=optuna", "tune.scheduler=fifo"]),
}
METHOD_BY_SLUG = {slug: name for name, (slug, _) in METHODS.items()}
SPACES = {
    # the default space widened so that bad configurations exist to be found out
    "narrow": (
        '{"finetune.optimizer.lr": {"type": "loguniform", "low": 1e-5, "high": 1e-1},'
        ' "finetune.optimizer.name": {"type": "choice", "values": ["sgd", "adamw"]},'
        ' "model.dropout.rate": {"type": "uniform", "low": 0.0, "high": 0.5}}'
    ),
    # what a user searches who does not know the task yet: the optimizer family, its LR and
    # decay, the batch size and dropout; fewer of its configurations train well
    "wide": (
        '{"finetune.optimizer.name": {"type": "choice", "values": ["sgd", "momentum", "nag",'
        ' "adagrad", "rmsprop", "adam", "adamw"]},'
        ' "finetune.optimizer.lr": {"type": "loguniform", "low": 1e-5, "high": 1e-1},'
        ' "finetune.optimizer.weight_decay": {"type": "loguniform", "low": 1e-5, "high": 1e-1,'
        ' "when": "finetune.optimizer.name == adamw"},'
        ' "finetune.batch_size": {"type": "int", "low": 8, "high": 64},'
        ' "model.dropout.rate": {"type": "uniform", "low": 0.0, "high": 0.5}}'
    ),
}
TIMINGS_FILE = "search_timings.json"  # wall seconds per search, for --analyze-only


@dataclass
class SearchFigures:
    method: str
    seed: int
    best_val_accuracy: float
    trial_epochs: int
    trials: int
    epochs_to_target: dict[float, int | None] = field(default_factory=dict)
    wall_s: float = 0.0
    best_so_far: list[float] = field(default_factory=list)  # after each epoch report
    spent: list[int] = field(default_factory=list)  # trial-epochs after each report
    trial_first_epochs: dict[float, list[int]] = field(default_factory=dict)
    # ^ per target: the epoch at which each trial that reached it first did


def method_work_dir(root: Path, method: str, seed: int) -> Path:
    """The ``work_dir`` of one method's search for one seed."""
    return root / f"{METHODS[method][0]}-{seed}"


def experiment_name(seed: int) -> str:
    return f"bench-{seed}"


def method_dir(root: Path, method: str, seed: int) -> Path:
    """Where that search's Tune experiment is saved (run_search's local storage)."""
    return method_work_dir(root, method, seed) / "ray" / "tune" / experiment_name(seed)


def trial_frames(experiment_dir: Path) -> list[Any]:
    """Each trial's table of reports in a saved Tune experiment; trials that never reported
    are left out."""
    from ray.tune import ExperimentAnalysis

    return [f for f in ExperimentAnalysis(str(experiment_dir)).trial_dataframes.values() if len(f)]


def _figures(
    method: str, seed: int, experiment_dir: Path, targets: list[float], wall: float
) -> SearchFigures:
    from graft.tune.progress import search_progress

    frames = trial_frames(experiment_dir)
    progress = search_progress(frames, "val_accuracy", "max")
    return SearchFigures(
        method,
        seed,
        progress.best or 0.0,
        progress.trial_epochs,
        len(frames),
        {target: progress.epochs_to_reach(target) for target in targets},
        wall,
        progress.best_so_far(),
        progress.spent,
        {
            target: [
                int(f.loc[f["val_accuracy"] >= target, "epoch"].min())
                for f in frames
                if (f["val_accuracy"] >= target).any()
            ]
            for target in targets
        },
    )


def _search(
    preset: str,
    method: str,
    seed: int,
    space: str,
    samples: int,
    epoch_budget: int,
    concurrency: int,
    dataset: Path,
    pretrained: str,
    root: Path,
    schedule: list[str],
) -> float:
    """Run one search; return its wall seconds."""
    from graft.config import load_config
    from graft.io import tracking
    from graft.tune.search import run_search

    work = method_work_dir(root, method, seed)
    config = load_config(
        preset=preset,
        overrides=[
            f"work_dir={work}",
            f"tracking.tracking_uri=sqlite:///{root / 'mlflow.db'}",
            *METHODS[method][1],
            *schedule,
            f"tune.seed={seed}",
            f"seed={seed}",
            f"tune.num_samples={samples}",
            f"tune.epoch_budget={epoch_budget}",
            f"tune.max_concurrent={concurrency}",
            f"tune.space={SPACES[space]}",
        ],
    )
    parent = tracking.start_pipeline_run(config, "bench-tune-efficiency")
    started = time.monotonic()
    run_search(config, str(dataset), pretrained, work / "out", parent, experiment_name(seed))
    return round(time.monotonic() - started, 1)


def epoch_budget_of(preset: str, samples: int) -> int:
    """What ``samples`` full-length finetune trials cost: the budget both methods get."""
    from graft.config import load_config
    from graft.train.request import phases_for

    return samples * sum(p.epochs for p in phases_for(load_config(preset=preset).finetune))


def _run_searches(args: argparse.Namespace, root: Path) -> dict[str, float]:
    from graft.config import load_config
    from graft.data.prepare import prepare_dataset
    from graft.io.ray_runtime import TrainStorage, ensure_ray, shutdown_ray
    from graft.train.fit import fit
    from graft.train.model_dir import MODEL_FILE
    from graft.train.request import FitRun
    from graft.train.stage_requests import pretrain_request

    config = load_config(preset=args.preset, overrides=[f"work_dir={root}"])
    epoch_budget = epoch_budget_of(args.preset, args.samples)
    trial_cap = args.trial_cap or 4 * args.samples
    dataset = root / "dataset"
    if not dataset.exists():  # a continued bench keeps its data and source model
        prepare_dataset(config.data, config.seed, dataset)
    schedule = [
        f"tune.{key}={value}"
        for key, value in (
            ("grace_period", args.grace_period),
            ("reduction_factor", args.reduction_factor),
        )
        if value is not None
    ]
    saved = root / TIMINGS_FILE
    timings: dict[str, float] = json.loads(saved.read_text()) if saved.exists() else {}
    ensure_ray(config.ray)
    try:
        pretrained = str(root / "pretrained")
        if not (root / "pretrained" / MODEL_FILE).exists():
            pretrained = fit(
                pretrain_request(config, str(dataset), None),
                FitRun(
                    num_workers=config.pretrain.num_workers,
                    storage=TrainStorage(str((root / "ray").resolve())),
                    run_name="bench-pretrain",
                    output_dir=root / "pretrained",
                    max_failures=0,
                    num_to_keep=1,
                ),
            ).model_dir
        for seed in range(args.seeds):
            for method in args.methods:
                if f"{method}|{seed}" in timings:
                    continue  # finished in an earlier, interrupted run of the bench
                # a search cut off mid-way is restored by run_search (Tune's own resume).
                # Each search gets a Ray of its own, so no search inherits another's state
                shutdown_ray()
                ensure_ray(config.ray)
                timings[f"{method}|{seed}"] = _search(
                    args.preset,
                    method,
                    seed,
                    args.space,
                    trial_cap,
                    epoch_budget,
                    args.concurrency,
                    dataset,
                    pretrained,
                    root,
                    schedule,
                )
                (root / TIMINGS_FILE).write_text(json.dumps(timings, indent=2))
    finally:
        shutdown_ray()
    return timings


def _print_table(figures: list[SearchFigures], targets: list[float], title: str) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    for column in ("method", "seed", "best val acc", "trial-epochs", "trials"):
        table.add_column(column)
    for target in targets:
        table.add_column(f"epochs to {target}")
    table.add_column("wall s")

    def shown(value: int | None) -> str:
        return "not reached" if value is None else str(value)

    for f in figures:
        table.add_row(
            f.method,
            str(f.seed),
            f"{f.best_val_accuracy:.4f}",
            str(f.trial_epochs),
            str(f.trials),
            *(shown(f.epochs_to_target[t]) for t in targets),
            f"{f.wall_s:.0f}",
        )
    methods = [m for m in METHODS if any(f.method == m for f in figures)]
    means: dict[str, dict[float, float | None]] = {}
    for method in methods:
        runs = [f for f in figures if f.method == method]
        cells, means[method] = [], {}
        for target in targets:
            reached = [f.epochs_to_target[target] for f in runs]
            done = [n for n in reached if n is not None]
            # a search that never reached the target spent all its epochs without it
            spent = [
                n if n is not None else f.trial_epochs for n, f in zip(reached, runs, strict=True)
            ]
            means[method][target] = statistics.mean(spent) if done else None
            cells.append(f"{statistics.mean(spent):.1f} ({len(done)}/{len(runs)} reached)")
        table.add_row(
            f"[bold]{method} (mean)[/bold]",
            "",
            f"{statistics.mean(f.best_val_accuracy for f in runs):.4f}",
            f"{statistics.mean(f.trial_epochs for f in runs):.1f}",
            f"{statistics.mean(f.trials for f in runs):.1f}",
            *cells,
            f"{statistics.mean(f.wall_s for f in runs):.0f}",
        )
    console = Console()
    if not console.is_terminal:  # a log file: no 80-column wrapping of the table
        console = Console(width=160)
    console.print(table)
    for method in methods:
        if method == RANDOM or RANDOM not in means:
            continue
        for target in targets:
            base, other = means[RANDOM][target], means[method][target]
            if base is None or other is None:
                console.print(f"target {target}: not reached by {method} and random; no ratio")
                continue
            ratio = other / base
            verdict = "MET" if ratio <= 1 / 3 else "NOT met"
            console.print(
                f"target {target}: {method} spent {ratio:.2f}x random search's trial-epochs "
                f"to reach it (goal <= 0.33x): {verdict}"
            )
    # what decides the race: how many configurations a method tries that can reach a target
    # at all (TPE should raise the share; ASHA's cuts lower it), and how soon they do
    for method in methods:
        runs = [f for f in figures if f.method == method]
        trials = sum(f.trials for f in runs)
        shares = []
        for target in targets:
            reached = sorted(e for f in runs for e in f.trial_first_epochs.get(target, []))
            median = f", median epoch {statistics.median(reached):g}" if reached else ""
            shares.append(f"{target}: {len(reached) / max(trials, 1):.0%}{median}")
        console.print(f"{method}: trials that reached " + "; ".join(shares))
    if RANDOM in means:
        total = statistics.mean(f.trial_epochs for f in figures if f.method == RANDOM)
        for method in methods[1:]:
            spent = statistics.mean(f.trial_epochs for f in figures if f.method == method)
            console.print(f"whole-search compute, {method} / random: {spent / total:.2f}x")


def _plot(figures: list[SearchFigures], targets: list[float], budget: int, path: Path) -> Path:
    """Every search's best-so-far curve against trial-epochs, one colour per method."""
    import matplotlib.pyplot as plt

    from graft.io.plotting import save_figure

    colours = dict(zip(METHODS, ("tab:gray", "tab:blue", "tab:orange"), strict=True))
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for f in figures:
        ax.step(
            f.spent,
            f.best_so_far,
            where="post",
            color=colours[f.method],
            alpha=0.8,
            label=f.method if f.seed == 0 else None,
        )
    for target in targets:
        ax.axhline(target, color="black", linewidth=0.6, linestyle=":")
    ax.axvline(budget, color="tab:red", linestyle="--", label="epoch budget")
    ax.set_ylim(max(min(targets) - 0.05, 0.0), 1.0)
    ax.set_xlabel("trial-epochs spent")
    ax.set_ylabel("best val accuracy so far")
    ax.set_title("Best validation accuracy against compute (one line per seed)")
    ax.legend(loc="lower right")
    fig.tight_layout()
    return save_figure(fig, path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="default")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument(
        "--samples",
        type=int,
        default=9,
        help="random search's trials; the budget of both methods is their trial-epochs",
    )
    parser.add_argument(
        "--trial-cap",
        type=int,
        default=None,
        help="most trials a search may start within the budget (default 4 x --samples)",
    )
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument(
        "--space",
        choices=sorted(SPACES),
        default="narrow",
        help="narrow: LR, SGD or AdamW, dropout; wide: 7 optimizers, LR, AdamW decay, batch "
        "size, dropout",
    )
    parser.add_argument(
        "--targets", type=float, nargs="+", default=[0.93, 0.945, 0.95], help="val accuracy"
    )
    parser.add_argument(
        "--methods",
        nargs="+",
        choices=sorted(METHOD_BY_SLUG),
        default=["random", "optuna"],
        help="random: random search + FIFO; optuna: Optuna TPE + ASHA (the issue's pair); "
        "optuna-fifo: Optuna TPE + FIFO, what the searcher alone does",
    )
    parser.add_argument("--work-dir", type=Path, default=None)
    parser.add_argument(
        "--grace-period", type=int, default=None, help="ASHA epochs before a first cut"
    )
    parser.add_argument("--reduction-factor", type=float, default=None, help="ASHA's eta")
    parser.add_argument(
        "--analyze-only",
        action="store_true",
        help="re-read the searches saved under --work-dir instead of running them",
    )
    args = parser.parse_args()
    # in the order of METHODS: random search first, the one every ratio is taken against
    args.methods = [name for name in METHODS if METHODS[name][0] in args.methods]
    if args.analyze_only and args.work_dir is None:
        parser.error("--analyze-only reads the searches saved under --work-dir")

    root = (args.work_dir or Path(tempfile.mkdtemp(prefix="graft-tune-bench-"))).resolve()
    if args.analyze_only:
        saved = root / TIMINGS_FILE
        timings = json.loads(saved.read_text()) if saved.exists() else {}
    else:
        timings = _run_searches(args, root)
    figures = [
        _figures(
            method,
            seed,
            method_dir(root, method, seed),
            args.targets,
            timings.get(f"{method}|{seed}", 0.0),
        )
        for seed in range(args.seeds)
        for method in args.methods
        if method_dir(root, method, seed).exists()
    ]
    _print_table(
        figures,
        args.targets,
        f"Tune efficiency: {args.preset} preset, {args.space} space, budget of {args.samples} "
        f"full trials per search, grace period {args.grace_period or 'default'}, "
        f"{args.seeds} seeds",
    )
    if figures:
        budget = epoch_budget_of(args.preset, args.samples)
        print(f"plot: {_plot(figures, args.targets, budget, root / 'efficiency.png')}")
    print(f"outputs in {root}")


if __name__ == "__main__":
    main()
