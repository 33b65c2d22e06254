"""bench/retraining.py's simulation and arithmetic, without Ray or MLflow: the weekly
snapshots grow and keep their old rows byte-identical, week 4's new rows are brighter and
have less contrast, week 5's class prior is skewed; the compute and target figures."""

from __future__ import annotations

import importlib.util
import itertools
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

BENCH = Path(__file__).parents[2] / "bench" / "retraining.py"


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_retraining", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _pool(rows: int = 6000) -> tuple[np.ndarray, np.ndarray]:
    """Fake 28 x 28 uint8 images, 10 balanced classes."""
    rng = np.random.default_rng(0)
    x = rng.integers(0, 200, size=(rows, 1, 28, 28), dtype=np.uint8)
    return x, np.arange(rows) % 10


@pytest.fixture(scope="module")
def snapshots(bench: ModuleType, tmp_path_factory: pytest.TempPathFactory) -> list[dict]:
    x, y = _pool()
    simulation = bench.Simulation(weeks=6, first_rows=1000, weekly_rows=300)
    paths = bench.write_snapshots(x, y, simulation, 7, tmp_path_factory.mktemp("snapshots"))
    return [dict(np.load(p)) for p in paths]


def test_each_week_grows_and_keeps_the_old_rows_byte_identical(snapshots: list[dict]) -> None:
    sizes = [len(s["y"]) for s in snapshots]
    assert sizes == [1000, 1300, 1600, 1900, 2200, 2500]
    for before, after in itertools.pairwise(snapshots):
        n = len(before["y"])
        assert after["x"][:n].tobytes() == before["x"].tobytes()
        assert np.array_equal(after["y"][:n], before["y"])
    last = snapshots[-1]["x"].reshape(2500, -1)
    assert len(np.unique(last, axis=0)) == 2500  # no row drawn twice


def _new_rows(snapshots: list[dict], week: int) -> tuple[np.ndarray, np.ndarray]:
    start = len(snapshots[week - 2]["y"])
    return snapshots[week - 1]["x"][start:], snapshots[week - 1]["y"][start:]


def test_week_4s_new_rows_are_brighter_with_less_contrast(snapshots: list[dict]) -> None:
    shifted, _ = _new_rows(snapshots, 4)
    plain, _ = _new_rows(snapshots, 3)

    def per_image(x: np.ndarray) -> tuple[float, float]:
        flat = x.reshape(len(x), -1).astype(float)
        return float(flat.mean(1).mean()), float(flat.std(1).mean())

    (bright_shifted, contrast_shifted), (bright, contrast) = per_image(shifted), per_image(plain)
    assert bright_shifted > bright + 20
    assert contrast_shifted < 0.8 * contrast


def test_week_5s_class_prior_is_skewed_and_the_others_are_not(
    bench: ModuleType, snapshots: list[dict]
) -> None:
    _, skewed = _new_rows(snapshots, 5)
    _, plain = _new_rows(snapshots, 6)
    shares = np.bincount(skewed, minlength=10) / len(skewed)
    assert shares[0] == pytest.approx(5 / 14, abs=0.01)
    assert shares[1:].max() < 0.08
    plain_shares = np.bincount(plain, minlength=10) / len(plain)
    # the week after the skewed one is drawn as the others: every class near 1/10
    assert plain_shares.min() > 0.05 and plain_shares.max() < 0.15
    assert len(skewed) == 300


def _week(bench: ModuleType, policy: str, seed: int, week: int, **kwargs: object) -> object:
    defaults: dict[str, object] = {
        "retrained": True,
        "reason": "",
        "figures": {},
        "diluted": {},
        "served_accuracy": 0.9,
    }
    return bench.WeekResult(policy, seed, week, **{**defaults, **kwargs})


def test_compute_counts_pretrain_finetune_and_trial_epochs(bench: ModuleType) -> None:
    week = _week(bench, "naive", 0, 1, pretrain_epochs=3, finetune_epochs=12, trial_epochs=30)
    assert week.compute_epochs == 45


def test_the_accuracy_and_compute_target(bench: ModuleType) -> None:
    results = []
    for seed, (naive_acc, graft_acc) in enumerate([(0.90, 0.89), (0.92, 0.92), (0.94, 0.93)]):
        results += [
            _week(bench, "naive", seed, 1, served_accuracy=naive_acc, trial_epochs=40),
            _week(bench, "graft", seed, 1, served_accuracy=graft_acc, trial_epochs=20),
        ]
    target = bench.accuracy_and_compute_target(results)
    # naive's seed spread: stdev(0.90, 0.92, 0.94) = 0.02; graft is 0.0067 lower
    assert target.met, target.detail
    assert "= 0.50" in target.detail
    results.append(_week(bench, "graft", 0, 2, served_accuracy=0.9, trial_epochs=1))
    assert not bench.accuracy_and_compute_target(results).met  # 61/40 of the compute


def test_the_monitor_target_allows_one_false_alarm(bench: ModuleType) -> None:
    def seed_weeks(seed: int, flagged: set[int]) -> list[object]:
        return [_week(bench, "graft", seed, w, flagged=w in flagged) for w in range(1, 7)]

    right = [*seed_weeks(0, {4, 5}), *seed_weeks(1, {4, 5, 6}), *seed_weeks(2, {4, 5})]
    assert bench.monitor_target(right, 6).met
    two_alarms = [*seed_weeks(0, {2, 4, 5}), *seed_weeks(1, {4, 5, 6})]
    assert not bench.monitor_target(two_alarms, 6).met
    assert not bench.monitor_target(seed_weeks(0, {4}), 6).met  # week 5 missed


def test_the_warm_start_ratio_counts_a_miss_as_the_whole_search(bench: ModuleType) -> None:
    cold = _week(
        bench,
        "naive",
        0,
        4,
        trial_epochs=36,
        search_values=[0.80, 0.90, 0.95],
        search_spent=[2, 10, 30],
    )
    warm = _week(
        bench,
        "graft",
        0,
        4,
        branch="champion",
        champion_val_before=0.93,
        trial_epochs=36,
        search_values=[0.94],
        search_spent=[1],
    )
    target = bench.warm_start_target([cold, warm])
    assert target.met and "1/30 = 0.03" in target.detail, target.detail
    missed = _week(
        bench,
        "graft",
        0,
        4,
        branch="champion",
        champion_val_before=0.99,
        trial_epochs=36,
        search_values=[0.94],
        search_spent=[1],
    )
    target = bench.warm_start_target([cold, missed])
    assert "36/36 = 1.00" in target.detail and not target.met
