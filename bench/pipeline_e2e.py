"""Wall time per stage and peak memory of one pipeline run on this machine.

Runs the six stage functions in order (the same functions the KFP components call) with a
local Ray instance and a local MLflow store, sampling the resident memory of this process
tree plus every Ray process twice a second. Prints one table.

    python bench/pipeline_e2e.py --preset tiny
    python bench/pipeline_e2e.py --preset default

With ``--runners`` it instead times the whole compiled pipeline twice, side by side: KFP's
local SubprocessRunner (what `graft run` does: local Ray, local SQLite MLflow) and KFP's
DockerRunner with every task in the Graft image against MLflow, Postgres and S3 in containers
(the container test tier's set-up; it builds the images first, untimed):

    python bench/pipeline_e2e.py --runners

With ``--paths`` it times ``graft run``'s whole pipeline (KFP local runner) on the path of
before issue 21 (a Ray instance per training stage, a Ray Train fit per tune trial and per
training stage) and on today's (one Ray for the run, one-worker trials inside their Tune
actors, one-worker pretrain and finetune fits in their stage's process), alternating,
``--repeats`` times each, and prints the medians, the peak RSS and the test accuracy:

    python bench/pipeline_e2e.py --paths --preset tiny --repeats 3
"""

from __future__ import annotations

import argparse
import contextlib
import os
import tempfile
import threading
import time
from pathlib import Path

import psutil

os.environ.setdefault("RAY_TRAIN_V2_ENABLED", "1")


class PeakMemory:
    """Peak summed RSS of this process, its children and all Ray processes."""

    def __init__(self) -> None:
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _current(self) -> int:
        total = 0
        me = psutil.Process()
        seen = {me.pid}
        total += me.memory_info().rss
        for child in me.children(recursive=True):
            seen.add(child.pid)
            with contextlib.suppress(psutil.Error):
                total += child.memory_info().rss
        for proc in psutil.process_iter(["pid", "cmdline"]):
            try:
                cmd = " ".join(proc.info["cmdline"] or [])
                if proc.info["pid"] not in seen and ("ray::" in cmd or "/ray/" in cmd):
                    total += proc.memory_info().rss
            except psutil.Error:
                pass
        return total

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._current())
            time.sleep(0.5)

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="tiny", choices=["tiny", "default"])
    parser.add_argument("--work-dir", default=None, help="default: a fresh temporary folder")
    parser.add_argument(
        "--runners",
        action="store_true",
        help="time the compiled pipeline with KFP's local SubprocessRunner and DockerRunner",
    )
    parser.add_argument(
        "--paths",
        action="store_true",
        help="time graft run's pipeline on the old path (a Ray per stage, a Ray Train fit per "
        "trial) and today's (one Ray, trials in their Tune actors)",
    )
    parser.add_argument("--repeats", type=int, default=3, help="--paths: runs of each path")
    args = parser.parse_args()
    if args.paths:
        work = Path(args.work_dir or tempfile.mkdtemp(prefix="graft-bench-"))
        compare_paths(args.preset, work, args.repeats)
        return
    if args.runners:
        compare_runners(args.preset, Path(args.work_dir or tempfile.mkdtemp(prefix="graft-bench-")))
        return

    from graft import stages
    from graft.config import load_config
    from graft.io.ray_runtime import ensure_ray, shutdown_ray
    from graft.remote import dispatch

    work = Path(args.work_dir or tempfile.mkdtemp(prefix="graft-bench-"))
    config = load_config(
        preset=args.preset,
        # a rerun in the same --work-dir retrains bit-identical weights and scores them again
        # on the same test split: deliberate here (timings), so the test-split ledger allows it
        overrides=[f"work_dir={work.resolve()}", "evaluate.allow_repeat_test=true"],
    )
    times: dict[str, float] = {}

    def timed(name: str, call):  # type: ignore[no-untyped-def]
        start = time.perf_counter()
        value = call()
        times[name] = time.perf_counter() - start
        return value

    with PeakMemory() as memory:
        total_start = time.perf_counter()
        timed("ray start", lambda: ensure_ray(config.ray))
        prep = timed("data-prep", lambda: stages.data_prep.run(config, str(work / "dataset")))
        parent = prep.parent_run_id
        pre = timed(
            "pretrain",
            lambda: dispatch.pretrain(config, prep.dataset_dir, str(work / "pre"), parent),
        )
        fine = timed(
            "transfer-finetune",
            lambda: dispatch.finetune(
                config, prep.dataset_dir, pre.model_dir, str(work / "fine"), parent
            ),
        )
        tuned = timed(
            "tune",
            lambda: dispatch.tune(
                config, prep.dataset_dir, pre.model_dir, fine.model_dir, str(work / "tune"), parent
            ),
        )
        scored = timed(
            "evaluate",
            lambda: stages.evaluate.run(
                config,
                prep.dataset_dir,
                prep.test_split_dir,
                tuned.model_dir,
                str(work / "eval"),
                parent,
                pre.model_dir,
            ),
        )
        timed(
            "export",
            lambda: stages.export.run(
                config,
                prep.dataset_dir,
                tuned.model_dir,
                scored.evaluation_dir,
                str(work / "export"),
                parent,
            ),
        )
        total = time.perf_counter() - total_start
        shutdown_ray()

    print(f"\nGraft pipeline bench, preset '{args.preset}', {os.cpu_count()} CPUs")
    print(f"{'stage':<20}{'wall s':>10}")
    for name, seconds in times.items():
        print(f"{name:<20}{seconds:>10.1f}")
    print(f"{'total':<20}{total:>10.1f}")
    print(f"peak RSS (driver + Ray processes): {memory.peak / 2**30:.2f} GiB")
    print(
        f"pretrain val acc {pre.val_accuracy:.4f}; finetune val acc {fine.val_accuracy:.4f}; "
        f"tuned val acc {tuned.val_accuracy:.4f} ({tuned.source}, {tuned.trials} trials, "
        f"{tuned.stopped_early} cut by ASHA); test acc {scored.accuracy:.4f} vs baseline "
        f"{scored.baseline_accuracy:.4f}; gate {'passed' if scored.gate_passed else 'refused'}"
    )


def compare_runners(preset: str, work: Path) -> None:
    """Wall time of the whole pipeline, here and in containers, in one run of this script."""
    import sys

    sys.path[:0] = [
        str(Path(__file__).parents[1] / "tests"),
        str(Path(__file__).parents[1] / "tests/container"),
    ]
    from docker_services import BUCKET, build_images, running_cluster

    from graft.config import load_config
    from graft.kfp.container_run import run_in_containers
    from graft.kfp.local_run import run_local

    work.mkdir(parents=True, exist_ok=True)
    images = build_images(work / "services-image")
    local_config = load_config(preset=preset, overrides=[f"work_dir={work / 'local'}"])
    start = time.perf_counter()
    local_summary = run_local(local_config)
    local_seconds = time.perf_counter() - start
    with running_cluster(images) as cluster:
        config = load_config(
            preset=preset,
            overrides=[f"ray.storage_uri=s3://{BUCKET}/bench", "tracking.experiment_name=bench"],
        )
        start = time.perf_counter()
        container_summary = run_in_containers(
            config, images.graft, cluster.pod_environment(), work / "containers"
        )
        container_seconds = time.perf_counter() - start

    print(f"\nGraft pipeline, preset '{preset}', {os.cpu_count()} CPUs, wall time of one run")
    print(f"{'runner':<52}{'wall s':>8}{'test acc':>10}")
    rows = [
        ("KFP SubprocessRunner (local Ray, SQLite MLflow)", local_seconds, local_summary),
        (f"KFP DockerRunner ({images.graft}, services in containers)", container_seconds,
         container_summary),
    ]  # fmt: skip
    for name, seconds, summary in rows:
        print(f"{name:<52}{seconds:>8.1f}{summary['accuracy']:>10.4f}")


def compare_paths(preset: str, work: Path, repeats: int) -> None:
    """Whole-pipeline wall time, peak RSS and test accuracy, old path against today's."""
    import statistics

    from graft.config import load_config
    from graft.kfp.local_run import run_local

    # (one Ray for the run, tune.trial_runner, pretrain's and finetune's runner)
    paths = {
        "old: Ray per stage, Ray Train fits": (False, "ray_train", "ray_train"),
        "new: one Ray, 1-worker fits in process": (True, "auto", "auto"),
    }
    results: dict[str, list[tuple[float, float, float]]] = {name: [] for name in paths}
    for repeat in range(repeats):
        for name, (one_ray, trial_runner, stage_runner) in paths.items():
            folder = work / f"{trial_runner}-{repeat}"
            config = load_config(
                preset=preset,
                overrides=[
                    f"work_dir={folder}",
                    f"tune.trial_runner={trial_runner}",
                    f"pretrain.runner={stage_runner}",
                    f"finetune.runner={stage_runner}",
                ],
            )
            with PeakMemory() as memory:
                start = time.perf_counter()
                summary = run_local(config, one_ray=one_ray)
                seconds = time.perf_counter() - start
            results[name].append((seconds, memory.peak / 2**30, float(summary["accuracy"])))
            print(f"repeat {repeat} {name}: {seconds:.1f} s", flush=True)

    print(f"\ngraft run, preset '{preset}', {os.cpu_count()} CPUs, medians of {repeats}")
    print(f"{'path':<40}{'wall s':>8}{'peak GiB':>10}{'test acc':>10}")
    medians = {}
    for name, runs in results.items():
        wall, peak, accuracy = (statistics.median(r[i] for r in runs) for i in range(3))
        medians[name] = wall
        print(f"{name:<40}{wall:>8.1f}{peak:>10.2f}{accuracy:>10.4f}")
    old, new = medians.values()
    target = 90 if preset == "tiny" else 120
    verdict = "MET" if new < target else "NOT met"
    print(f"speedup {old / new:.2f}x; new path {new:.1f} s (target < {target} s: {verdict})")


if __name__ == "__main__":
    main()
