"""Search efficiency: random search without early stopping vs Optuna TPE + ASHA.

Same task, same search space, same number of trials per search (the fixed budget), several
seeds each, all through Graft's own tune stage code (`graft.tune.search.run_search`: one Ray
Train fit per trial). For each search it reports the best validation accuracy any trial
reached, the trial-epochs it spent, and the trial-epochs spent (all trials' epochs, in the
order they were reported) until some trial first reached the target accuracy.

    python bench/tune_efficiency.py --preset tiny --seeds 3 --samples 6 --target 0.95

Wall time is dominated by Ray Train worker start-up (~15-25 s per trial on 2 cores), so the
compute figure that matters is trial-epochs, not seconds.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from dataclasses import dataclass
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


@dataclass
class SearchFigures:
    method: str
    seed: int
    best_val_accuracy: float
    trial_epochs: int
    epochs_to_target: int | None
    trials_stopped_early: int
    wall_s: float


def _epochs_to_target(experiment_dir: Path, target: float) -> tuple[float, int, int | None]:
    """(best val accuracy, epochs spent, epochs spent until the target was first reached),
    counting every trial's epoch reports in the wall-clock order they arrived."""
    from ray.tune import ExperimentAnalysis

    reports: list[tuple[float, float, float]] = []
    for frame in ExperimentAnalysis(str(experiment_dir)).trial_dataframes.values():
        for _, row in frame.iterrows():
            reports.append(
                (float(row["timestamp"]), float(row["time_total_s"]), float(row["val_accuracy"]))
            )
    reports.sort()
    best = max((accuracy for _, _, accuracy in reports), default=0.0)
    reached = next((n + 1 for n, (_, _, acc) in enumerate(reports) if acc >= target), None)
    return best, len(reports), reached


def _search(
    preset: str,
    method: str,
    seed: int,
    samples: int,
    concurrency: int,
    dataset: Path,
    pretrained: str,
    root: Path,
    target: float,
    schedule: list[str],
) -> SearchFigures:
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
    result = run_search(config, str(dataset), pretrained, work / "out", parent, f"bench-{seed}")
    wall = time.monotonic() - started
    experiment_dir = config.work_path / "ray" / "tune" / f"bench-{seed}"
    best, epochs, reached = _epochs_to_target(experiment_dir, target)
    return SearchFigures(
        method, seed, best, epochs, reached, result.num_stopped_early, round(wall, 1)
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--samples", type=int, default=6, help="trials per search")
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--target", type=float, default=0.95, help="validation accuracy")
    parser.add_argument("--work-dir", type=Path, default=None)
    parser.add_argument(
        "--grace-period", type=int, default=None, help="ASHA epochs before a first cut"
    )
    parser.add_argument("--reduction-factor", type=float, default=None, help="ASHA's eta")
    args = parser.parse_args()

    from rich.console import Console
    from rich.table import Table

    from graft.config import load_config
    from graft.data.prepare import prepare_dataset
    from graft.ray_cluster import ensure_ray, shutdown_ray
    from graft.train.fit import fit
    from graft.train.requests import pretrain_request

    root = (args.work_dir or Path(tempfile.mkdtemp(prefix="graft-tune-bench-"))).resolve()
    config = load_config(preset=args.preset, overrides=[f"work_dir={root}"])
    dataset = root / "dataset"
    prepare_dataset(config.data, config.seed, dataset)
    ensure_ray(config.ray)
    figures: list[SearchFigures] = []
    schedule = [
        f"tune.{key}={value}"
        for key, value in (
            ("grace_period", args.grace_period),
            ("reduction_factor", args.reduction_factor),
        )
        if value is not None
    ]
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
                figures.append(
                    _search(
                        args.preset,
                        method,
                        seed,
                        args.samples,
                        args.concurrency,
                        dataset,
                        pretrained,
                        root,
                        args.target,
                        schedule,
                    )
                )
    finally:
        shutdown_ray()

    console = Console()
    table = Table(
        title=f"Tune efficiency: {args.preset} preset, {args.samples} trials per search, "
        f"target val accuracy {args.target}, ASHA grace period "
        f"{config.tune.grace_period if args.grace_period is None else args.grace_period}"
    )
    for column in (
        "method",
        "seed",
        "best val acc",
        "trial-epochs",
        "epochs to target",
        "stopped early",
        "wall s",
    ):
        table.add_column(column)
    for f in figures:
        table.add_row(
            f.method,
            str(f.seed),
            f"{f.best_val_accuracy:.4f}",
            str(f.trial_epochs),
            str(f.epochs_to_target) if f.epochs_to_target is not None else "not reached",
            str(f.trials_stopped_early),
            f"{f.wall_s:.0f}",
        )
    for method in METHODS:
        runs = [f for f in figures if f.method == method]
        reached = [f.epochs_to_target for f in runs if f.epochs_to_target is not None]
        table.add_row(
            f"[bold]{method} (mean)[/bold]",
            f"{len(reached)}/{len(runs)} reached",
            f"{statistics.mean(f.best_val_accuracy for f in runs):.4f}",
            f"{statistics.mean(f.trial_epochs for f in runs):.1f}",
            f"{statistics.mean(reached):.1f}" if reached else "-",
            f"{statistics.mean(f.trials_stopped_early for f in runs):.1f}",
            f"{statistics.mean(f.wall_s for f in runs):.0f}",
        )
    console.print(table)
    console.print(f"outputs in {root}")


if __name__ == "__main__":
    main()
