"""Search efficiency: random search without early stopping vs Optuna TPE + ASHA.

Same task, same search space, same number of trials per search (the fixed budget), several
seeds each, all through Graft's own tune stage code (`graft.tune.search.run_search`: one Ray
Train fit per trial). For each search it reports the best validation accuracy any trial
reached, the trial-epochs it spent, and, for each target accuracy, the trial-epochs spent
(all trials' epochs, in the order they were reported) until some trial first reached it.

    python bench/tune_efficiency.py --preset default --seeds 3 --samples 9 --grace-period 2 \\
        --targets 0.93 0.945 0.95 --work-dir /tmp/tune-bench
    python bench/tune_efficiency.py --analyze-only --work-dir /tmp/tune-bench --seeds 3 \\
        --targets 0.94 0.95      # re-read the saved experiments for other targets

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

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_TRAIN_V2_ENABLED", "1")
os.environ.setdefault("GRAFT_RAY_LOG_TO_DRIVER", "0")

METHODS = {
    "random + FIFO (no early stop)": ["tune.searcher=random", "tune.scheduler=fifo"],
    "Optuna TPE + ASHA": ["tune.searcher=optuna", "tune.scheduler=asha"],
}
# wider than the default space so that bad configurations exist to be found out
SPACE = (
    'tune.space={"finetune.optimizer.lr": {"type": "loguniform", "low": 1e-5, "high": 1e-1},'
    ' "finetune.optimizer.name": {"type": "choice", "values": ["sgd", "adamw"]},'
    ' "model.dropout.rate": {"type": "uniform", "low": 0.0, "high": 0.5}}'
)
TIMINGS_FILE = "search_timings.json"  # wall seconds per search, for --analyze-only


@dataclass
class SearchFigures:
    method: str
    seed: int
    best_val_accuracy: float
    trial_epochs: int
    epochs_to_target: dict[float, int | None] = field(default_factory=dict)
    wall_s: float = 0.0


def _method_dir(root: Path, method: str, seed: int) -> Path:
    return root / f"{method.split()[0].lower()}-{seed}" / "ray" / "tune" / f"bench-{seed}"


def _reports(experiment_dir: Path) -> list[tuple[float, float]]:
    """(timestamp, val accuracy) of every epoch report of every trial, in arrival order."""
    from ray.tune import ExperimentAnalysis

    reports = [
        (float(row["timestamp"]), float(row["val_accuracy"]))
        for frame in ExperimentAnalysis(str(experiment_dir)).trial_dataframes.values()
        for _, row in frame.iterrows()
    ]
    return sorted(reports)


def _figures(
    method: str, seed: int, experiment_dir: Path, targets: list[float], wall: float
) -> SearchFigures:
    reports = _reports(experiment_dir)
    accuracies = [accuracy for _, accuracy in reports]
    reached = {
        target: next((n + 1 for n, acc in enumerate(accuracies) if acc >= target), None)
        for target in targets
    }
    return SearchFigures(method, seed, max(accuracies, default=0.0), len(reports), reached, wall)


def _search(
    preset: str,
    method: str,
    seed: int,
    samples: int,
    concurrency: int,
    dataset: Path,
    pretrained: str,
    root: Path,
    schedule: list[str],
) -> float:
    """Run one search; return its wall seconds."""
    from graft import tracking
    from graft.config import load_config
    from graft.tune.search import run_search

    work = root / f"{method.split()[0].lower()}-{seed}"
    config = load_config(
        preset=preset,
        overrides=[
            f"work_dir={work}",
            f"tracking.tracking_uri=sqlite:///{root / 'mlflow.db'}",
            *METHODS[method],
            *schedule,
            f"tune.seed={seed}",
            f"seed={seed}",
            f"tune.num_samples={samples}",
            f"tune.max_concurrent={concurrency}",
            SPACE,
        ],
    )
    parent = tracking.start_pipeline_run(config, "bench-tune-efficiency")
    started = time.monotonic()
    run_search(config, str(dataset), pretrained, work / "out", parent, f"bench-{seed}")
    return round(time.monotonic() - started, 1)


def _run_searches(args: argparse.Namespace, root: Path) -> dict[str, float]:
    from graft.config import load_config
    from graft.data.prepare import prepare_dataset
    from graft.ray_cluster import ensure_ray, shutdown_ray
    from graft.train.fit import fit
    from graft.train.requests import pretrain_request

    config = load_config(preset=args.preset, overrides=[f"work_dir={root}"])
    dataset = root / "dataset"
    prepare_dataset(config.data, config.seed, dataset)
    schedule = [
        f"tune.{key}={value}"
        for key, value in (
            ("grace_period", args.grace_period),
            ("reduction_factor", args.reduction_factor),
        )
        if value is not None
    ]
    timings: dict[str, float] = {}
    ensure_ray(config.ray)
    try:
        pretrained = fit(
            pretrain_request(config, str(dataset), None),
            num_workers=config.pretrain.num_workers,
            storage_path=root / "ray",
            run_name="bench-pretrain",
            output_dir=root / "pretrained",
            max_failures=0,
            num_to_keep=1,
        ).model_dir
        for seed in range(args.seeds):
            for method in METHODS:
                timings[f"{method}|{seed}"] = _search(
                    args.preset,
                    method,
                    seed,
                    args.samples,
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
    for column in ("method", "seed", "best val acc", "trial-epochs"):
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
            *(shown(f.epochs_to_target[t]) for t in targets),
            f"{f.wall_s:.0f}",
        )
    means: dict[str, dict[float, float | None]] = {}
    for method in METHODS:
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
            *cells,
            f"{statistics.mean(f.wall_s for f in runs):.0f}",
        )
    console = Console()
    console.print(table)
    random_name, asha_name = list(METHODS)
    for target in targets:
        base, asha = means[random_name][target], means[asha_name][target]
        if base is None or asha is None:
            console.print(f"target {target}: not reached by every method; no ratio")
            continue
        ratio = asha / base
        verdict = "MET" if ratio <= 1 / 3 else "NOT met"
        console.print(
            f"target {target}: Optuna+ASHA spent {ratio:.2f}x random search's trial-epochs "
            f"to reach it (goal <= 0.33x): {verdict}"
        )
    totals = [statistics.mean(f.trial_epochs for f in figures if f.method == m) for m in METHODS]
    console.print(f"whole-search compute, Optuna+ASHA / random: {totals[1] / totals[0]:.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="default")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--samples", type=int, default=9, help="trials per search")
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument(
        "--targets", type=float, nargs="+", default=[0.93, 0.945, 0.95], help="val accuracy"
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
            _method_dir(root, method, seed),
            args.targets,
            timings.get(f"{method}|{seed}", 0.0),
        )
        for seed in range(args.seeds)
        for method in METHODS
        if _method_dir(root, method, seed).exists()
    ]
    _print_table(
        figures,
        args.targets,
        f"Tune efficiency: {args.preset} preset, {args.samples} trials per search, "
        f"grace period {args.grace_period or 'default'}, {args.seeds} seeds",
    )
    print(f"outputs in {root}")


if __name__ == "__main__":
    main()
