"""Per-trial overhead and search wall time: one-worker trials trained inside their Tune
trainables against a Ray Train fit per trial, side by side in one run.

The preset's search (`graft.tune.search.run_search`, what the tune stage runs after its LR
finder: the same searcher, scheduler, trials and concurrency) runs on both trial runners,
``tune.trial_runner=ray_train`` (the old path: a fresh worker group per trial) and
``in_trainable``, alternating, ``--repeats`` times each. Every search gets a fresh local Ray
whose start is timed apart from the search. Printed, as medians over the repeats:

- the search's wall time on each runner, and the speedup (target >= 3x);
- per-trial overhead: a trial's wall time (from Tune starting it on its actor to its end)
  minus the time in its epochs' training steps (target <= 2 s for one-worker trials), the
  median trial's and the worst (a first trial on a new actor, which imports what it uses);
- an epoch's time outside its training steps (validation, checkpoint, the report and any
  wait until it is taken: Ray Train's report pick-up, Tune's result polling), from the
  time between a trial's reports after its first;
- per-trial slot overhead: (search wall x max_concurrent - every trial's epoch time) / trials,
  which also counts each trial actor's process start and Tune's own scheduling;
- the results: each search's best parameters and metric, and for the trials that drew the
  same parameters on both runners, whether every epoch they both reached reported the same
  metrics (bit-identical training gives identical numbers).

    python bench/tune_overhead.py                         # default preset, 3 repeats
    python bench/tune_overhead.py --repeats 1 --work-dir /tmp/tune-overhead
    python bench/tune_overhead.py --set tune.max_concurrent=1   # a search order no race decides

With Optuna's TPE and ASHA, which trials a search draws and cuts can depend on the order
concurrent trials report in, so two searches may differ in their later trials on either
runner; the matched trials' metrics are the like-for-like comparison.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

os.environ.setdefault("RAY_TRAIN_V2_ENABLED", "1")
os.environ.setdefault("GRAFT_RAY_LOG_TO_DRIVER", "0")

from ray.tune import Callback  # after Train V2 is chosen

RUNNERS = ("ray_train", "in_trainable")
# what a report says about the training; its timings differ run to run
COMPARED = ("train_loss", "train_accuracy", "val_loss", "val_accuracy", "lr", "steps")


@dataclass
class TrialFigures:
    params: dict[str, Any] = field(default_factory=dict)
    started: float = 0.0
    ended: float | None = None
    epoch_s: float = 0.0  # the training steps of every epoch it reported
    reports: dict[int, dict[str, float]] = field(default_factory=dict)  # epoch -> metrics
    # after its first epoch, each epoch's time between reports outside its training steps:
    # validation, checkpoint, report and whatever waits for the report to be taken
    between_steps_s: list[float] = field(default_factory=list)

    @property
    def overhead_s(self) -> float | None:
        return None if self.ended is None else self.ended - self.started - self.epoch_s


class TrialClock(Callback):
    """Each trial's start and end on the driver, its epoch time and its reports."""

    def __init__(self, space: list[str]) -> None:
        self.space = space
        self.trials: dict[str, TrialFigures] = defaultdict(TrialFigures)

    def on_trial_start(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        figures = self.trials[trial.trial_id]
        figures.started = time.monotonic()
        figures.params = {k: trial.config[k] for k in self.space if k in trial.config}

    def on_trial_result(
        self, iteration: int, trials: list[Any], trial: Any, result: dict[str, Any], **info: Any
    ) -> None:
        figures = self.trials[trial.trial_id]
        figures.epoch_s += float(result.get("epoch_seconds", 0.0))
        if figures.reports:  # the first report's interval holds the trial's start-up
            figures.between_steps_s.append(result["time_this_iter_s"] - result["epoch_seconds"])
        figures.reports[int(result["epoch"])] = {k: result[k] for k in COMPARED if k in result}

    def on_trial_complete(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        self.trials[trial.trial_id].ended = time.monotonic()

    def on_trial_error(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        self.trials[trial.trial_id].ended = time.monotonic()


@dataclass
class SearchFigures:
    runner: str
    repeat: int
    ray_start_s: float
    wall_s: float
    concurrency: int
    best_params: dict[str, Any]
    best_metric: float
    num_stopped_early: int
    trials: dict[str, TrialFigures]

    @property
    def trial_overhead_s(self) -> float:
        """The median trial's wall time outside its epochs."""
        return statistics.median(
            t.overhead_s for t in self.trials.values() if t.overhead_s is not None
        )

    @property
    def worst_trial_overhead_s(self) -> float:
        """The trial with the most wall time outside its epochs (a first trial on its actor)."""
        return max(t.overhead_s for t in self.trials.values() if t.overhead_s is not None)

    @property
    def epoch_outside_steps_s(self) -> float:
        """The median epoch's time outside its training steps (after each trial's first)."""
        return statistics.median(s for t in self.trials.values() for s in t.between_steps_s)

    @property
    def slot_overhead_s(self) -> float:
        epochs = sum(t.epoch_s for t in self.trials.values())
        return (self.wall_s * self.concurrency - epochs) / max(len(self.trials), 1)

    @property
    def epochs(self) -> int:
        return sum(len(t.reports) for t in self.trials.values())


def prepare_inputs(preset: str, root: Path) -> tuple[Path, Path]:
    """The preset's dataset and a pretrained source model under ``root`` (kept for a rerun)."""
    from graft.config import load_config
    from graft.data.prepare import prepare_dataset
    from graft.io.ray_runtime import TrainStorage, ensure_ray, shutdown_ray
    from graft.train.fit import fit
    from graft.train.model_dir import MODEL_FILE
    from graft.train.request import FitRun
    from graft.train.stage_requests import pretrain_request

    config = load_config(preset=preset, overrides=[f"work_dir={root}"])
    dataset, pretrained = root / "dataset", root / "pretrained"
    if not dataset.exists():
        prepare_dataset(config.data, config.seed, dataset)
    if not (pretrained / MODEL_FILE).exists():
        ensure_ray(config.ray)
        try:
            fit(
                pretrain_request(config, str(dataset), None),
                FitRun(
                    num_workers=config.pretrain.num_workers,
                    storage=TrainStorage(str((root / "ray").resolve())),
                    run_name="bench-pretrain",
                    output_dir=pretrained,
                ),
            )
        finally:
            shutdown_ray()
    return dataset, pretrained


def run_one(
    preset: str, runner: str, repeat: int, root: Path, inputs: tuple[Path, Path], sets: list[str]
) -> SearchFigures:
    """One search on ``runner`` with a Ray of its own; the Ray's start is timed apart."""
    from graft.config import load_config
    from graft.io import tracking
    from graft.io.ray_runtime import ensure_ray, shutdown_ray
    from graft.tune.search import run_search

    work = root / f"{runner}-{repeat}"
    shutil.rmtree(work, ignore_errors=True)  # else run_search resumes an earlier bench's search
    config = load_config(
        preset=preset,
        overrides=[
            f"work_dir={work}",
            f"tracking.tracking_uri=sqlite:///{root / 'mlflow.db'}",
            f"tune.trial_runner={runner}",
            *sets,
        ],
    )
    parent = tracking.start_pipeline_run(config, "bench-tune-overhead")
    clock = TrialClock(list(config.tune.space))
    start = time.perf_counter()
    ensure_ray(config.ray)
    ray_start = time.perf_counter() - start
    try:
        start = time.perf_counter()
        dataset, pretrained = (str(p) for p in inputs)
        result = run_search(
            config, dataset, pretrained, work / "out", parent, "overhead", callbacks=[clock]
        )
        wall = time.perf_counter() - start
    finally:
        shutdown_ray()
    return SearchFigures(
        runner=runner,
        repeat=repeat,
        ray_start_s=ray_start,
        wall_s=wall,
        concurrency=config.tune.max_concurrent,
        best_params=result.best_params,
        best_metric=result.best_metric,
        num_stopped_early=result.num_stopped_early,
        trials=dict(clock.trials),
    )


def matched_trials(old: SearchFigures, new: SearchFigures) -> tuple[int, int, list[str]]:
    """Trials of two searches with the same parameters: (pairs, epochs compared, the
    epochs whose metrics differ, as ``trial@epoch``)."""
    by_params = {repr(sorted(t.params.items())): t for t in old.trials.values()}
    pairs = compared = 0
    differing: list[str] = []
    for trial_id, trial in new.trials.items():
        twin = by_params.get(repr(sorted(trial.params.items())))
        if twin is None:
            continue
        pairs += 1
        for epoch in sorted(set(twin.reports) & set(trial.reports)):
            compared += 1
            if twin.reports[epoch] != trial.reports[epoch]:
                differing.append(f"{trial_id}@{epoch}")
    return pairs, compared, differing


def _median(searches: list[SearchFigures], attribute: str) -> float:
    return statistics.median(float(getattr(s, attribute)) for s in searches)


def print_timings(searches: list[SearchFigures]) -> None:
    print(
        f"{'runner':<14}{'Ray start s':>12}{'search s':>10}{'trial overhead s':>18}"
        f"{'(worst)':>9}{'slot overhead s':>17}{'epoch non-step s':>18}{'trials':>8}"
        f"{'epochs':>8}{'cut':>5}"
    )
    for runner in RUNNERS:
        mine = [s for s in searches if s.runner == runner]
        if not mine:
            continue
        print(
            f"{runner:<14}{_median(mine, 'ray_start_s'):>12.1f}{_median(mine, 'wall_s'):>10.1f}"
            f"{_median(mine, 'trial_overhead_s'):>18.2f}"
            f"{_median(mine, 'worst_trial_overhead_s'):>9.2f}"
            f"{_median(mine, 'slot_overhead_s'):>17.2f}"
            f"{_median(mine, 'epoch_outside_steps_s'):>18.3f}"
            f"{statistics.median(len(s.trials) for s in mine):>8g}"
            f"{_median(mine, 'epochs'):>8g}{_median(mine, 'num_stopped_early'):>5g}"
        )
    old = [s for s in searches if s.runner == "ray_train"]
    new = [s for s in searches if s.runner == "in_trainable"]
    if old and new:
        speedup = _median(old, "wall_s") / _median(new, "wall_s")
        print(
            f"search speedup: {speedup:.1f}x (target >= 3x: {'MET' if speedup >= 3 else 'NOT met'})"
        )
    if new:
        overhead = _median(new, "trial_overhead_s")
        verdict = "MET" if overhead <= 2 else "NOT met"
        print(f"in_trainable per-trial overhead: {overhead:.2f} s (target <= 2 s: {verdict})")


def print_results(searches: list[SearchFigures]) -> None:
    for repeat in sorted({s.repeat for s in searches}):
        pair = {s.runner: s for s in searches if s.repeat == repeat}
        for runner, search in pair.items():
            shown = {
                k: round(v, 6) if isinstance(v, float) else v for k, v in search.best_params.items()
            }
            print(f"repeat {repeat} {runner:<13} best {search.best_metric:.4f} with {shown}")
        if len(pair) < 2:
            continue
        old, new = pair["ray_train"], pair["in_trainable"]
        same_best = old.best_params == new.best_params and old.best_metric == new.best_metric
        pairs, compared, differing = matched_trials(old, new)
        listed = f": {', '.join(differing)}" if differing else ""
        print(
            f"repeat {repeat}: same best trial: {'yes' if same_best else 'no'}; {pairs} trials "
            f"drew the same parameters on both runners, {compared} of their epochs compared, "
            f"{len(differing)} with different metrics{listed}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="default")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--runners", nargs="+", choices=RUNNERS, default=list(RUNNERS))
    parser.add_argument("--work-dir", default=None, help="default: a fresh temporary folder")
    parser.add_argument(
        "--set", dest="sets", action="append", default=[], help="a config override, KEY=VALUE"
    )
    args = parser.parse_args()
    root = Path(args.work_dir or tempfile.mkdtemp(prefix="graft-tune-overhead-")).resolve()
    inputs = prepare_inputs(args.preset, root)
    searches = []
    for repeat in range(args.repeats):
        for runner in args.runners:  # alternating: the machine's load falls on both alike
            searches.append(run_one(args.preset, runner, repeat, root, inputs, args.sets))
    print(
        f"\nGraft tune search, preset '{args.preset}' {' '.join(args.sets)}, {os.cpu_count()} "
        f"CPUs, medians of {args.repeats} repeat(s); overheads exclude the epochs' training steps"
    )
    print_timings(searches)
    print_results(searches)
    print(f"outputs in {root}")


if __name__ == "__main__":
    main()
