"""Splits that stay put (docs/splits.md): a shuffled split is a function of each row's content
hash and ``data.split_seed``, so a grown snapshot keeps every old row in its split, the seed
alone moves rows, and the data report shows each class's share of each split."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from graft.config import DataConfig
from graft.data.prepare import prepare_dataset
from graft.data.report import binomial_spread
from graft.data.splits import (
    SPLIT_MANIFEST_FILE,
    SPLITS,
    read_task_splits,
    split_codes,
    split_keys,
)
from graft.data.validation import row_hashes
from graft.errors import DatasetError

FEATURES = [f"f{i}" for i in range(10)]  # >= 8 columns: the near-duplicate check runs too


def _frame(n: int, classes: int, seed: int, features: int = len(FEATURES)) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(rng.normal(size=(n, features)), columns=FEATURES[:features])
    frame["label"] = rng.integers(0, classes, size=n)
    return frame


def _split_hashes(dataset: Path, task: str = "source") -> dict[str, set[str]]:
    """split -> the row hashes ``splits.json`` records for ``task``."""
    return {
        s.split: set(s.row_hashes)
        for s in read_task_splits(dataset / SPLIT_MANIFEST_FILE)
        if s.task == task
    }


def test_a_grown_snapshot_keeps_every_row_in_its_split(tmp_path: Path) -> None:
    first = _frame(2000, 5, seed=0)
    new_rows = _frame(600, 5, seed=1)  # 30% more
    # next week's file: this week's rows plus the new ones, in another order
    second = pd.concat([first, new_rows]).sample(frac=1.0, random_state=2)
    first.to_parquet(tmp_path / "week1.parquet")
    second.to_parquet(tmp_path / "week2.parquet")
    for week in ("week1", "week2"):
        config = DataConfig(source=str(tmp_path / f"{week}.parquet"))
        prepare_dataset(config, 42, tmp_path / week)
    old, new = _split_hashes(tmp_path / "week1"), _split_hashes(tmp_path / "week2")
    assert sum(map(len, old.values())) == 2000 and sum(map(len, new.values())) == 2600
    # no row the first model trained or selected on is in the second test split ...
    assert not (old["train"] | old["val"]) & new["test"]
    # ... and every old test row is still a test row: the champion is never scored on its
    # training rows, and never loses its test rows to the challenger's training
    assert old["test"] <= new["test"]
    assert old["train"] <= new["train"] and old["val"] <= new["val"]
    added = {split: new[split] - old[split] for split in SPLITS}
    assert sum(map(len, added.values())) == 600
    assert all(added.values())  # the new rows are split too


def test_split_seed_moves_rows_and_the_same_seed_is_byte_identical(tmp_path: Path) -> None:
    _frame(1500, 3, seed=0, features=4).to_parquet(tmp_path / "data.parquet")
    source = str(tmp_path / "data.parquet")
    runs = {
        "a": (DataConfig(source=source, split_seed=11), 42),
        "b": (DataConfig(source=source, split_seed=11), 42),
        "c": (DataConfig(source=source, split_seed=12), 42),
        "d": (DataConfig(source=source, split_seed=11), 7),  # another run seed, split pinned
        # one row's draw cannot look at the others' labels: random is the same draw
        "e": (DataConfig(source=source, split_seed=11, split="random"), 42),
    }
    for name, (config, seed) in runs.items():
        prepare_dataset(config, seed, tmp_path / name)
    manifest = {name: (tmp_path / name / SPLIT_MANIFEST_FILE).read_bytes() for name in runs}
    assert manifest["a"] == manifest["b"]
    assert json.loads(manifest["a"])["split_seed"] == 11
    a, c, d, e = (_split_hashes(tmp_path / name) for name in "acde")
    assert a == d  # the run seed does not move the split once data.split_seed is set
    assert a == e
    # another split seed draws anew: of a's test rows, about a test share stay test
    kept = len(a["test"] & c["test"]) / len(a["test"])
    assert 0.05 < kept < 0.3, kept


def test_each_class_share_is_within_one_point_and_the_report_shows_it(tmp_path: Path) -> None:
    # a per-row draw stratifies in expectation, with binomial spread 2 sqrt(f (1 - f) / n):
    # for the 15% test split, +-1 point is 3.4 standard deviations at 12,000 rows a class
    # (at 2,000 rows a class it is 1.25, and some class of ten is outside it nearly always)
    classes, per_class = 10, 12_000
    rng = np.random.default_rng(0)
    x = rng.normal(size=(classes * per_class, 4)).astype(np.float32)
    y = np.repeat(np.arange(classes), per_class)
    np.savez(tmp_path / "big.npz", x=x, y=y)
    prepare_dataset(DataConfig(source=str(tmp_path / "big.npz")), 0, tmp_path / "out")
    report = json.loads((tmp_path / "out" / "report.json").read_text())["splits"]
    assert report["target_shares"] == pytest.approx({"train": 0.75, "val": 0.1, "test": 0.15})
    assert len(report["class_shares"]) == classes
    for name, shares in report["class_shares"].items():
        assert sum(shares.values()) == pytest.approx(1.0)
        for split in SPLITS:
            assert abs(shares[split] - report["target_shares"][split]) < 0.01, (name, split)
    assert max(report["largest_share_deviation"].values()) < 0.01
    page = (tmp_path / "out" / "report.html").read_text()
    assert "<h2>Stratification</h2>" in page and "id='stratification'" in page
    assert "test vs 15% (±2σ)" in page
    some_class = report["class_shares"]["3"]
    assert f"<td>3</td><td>{per_class}</td><td>{some_class['train']:.2%}</td>" in page


def test_a_small_split_reports_its_expected_spread(tmp_path: Path) -> None:
    _frame(400, 4, seed=3).to_parquet(tmp_path / "small.parquet")
    prepare_dataset(DataConfig(source=str(tmp_path / "small.parquet")), 0, tmp_path / "out")
    report = json.loads((tmp_path / "out" / "report.json").read_text())["splits"]
    counts = report["class_counts"]
    page = (tmp_path / "out" / "report.html").read_text()
    for name, shares in report["class_shares"].items():
        rows = sum(counts[split].get(name, 0) for split in SPLITS)
        deviation = 100 * (shares["test"] - 0.15)
        spread = 100 * binomial_spread(0.15, rows)
        # about 100 rows a class: a test share is only good to several points, and says so
        assert spread > 5.0
        assert f"<td>{deviation:+.2f} pp (±{spread:.2f})</td>" in page


def test_a_group_keeps_its_split_when_groups_are_added(tmp_path: Path) -> None:
    first = _frame(600, 3, seed=4, features=4)
    first["user"] = [f"u{i}" for i in np.random.default_rng(4).integers(0, 60, size=600)]
    more = _frame(300, 3, seed=5, features=4)
    more["user"] = [f"u{i}" for i in np.random.default_rng(5).integers(30, 90, size=300)]
    first.to_parquet(tmp_path / "week1.parquet")
    pd.concat([first, more]).to_parquet(tmp_path / "week2.parquet")
    owner: dict[str, dict[str, str]] = {}
    for week, frame in (("week1", first), ("week2", pd.concat([first, more]))):
        config = DataConfig(
            source=str(tmp_path / f"{week}.parquet"), split="group", group_column="user"
        )
        prepare_dataset(config, 0, tmp_path / week)
        body = json.loads((tmp_path / week / SPLIT_MANIFEST_FILE).read_text())
        users = frame["user"].to_numpy()
        owner[week] = {
            user: split for split in SPLITS for user in users[body["splits"][split]["row_ids"]]
        }
    # old users (u30..u59 gained rows) and new ones: every old user stays where it was
    assert all(owner["week2"][user] == split for user, split in owner["week1"].items())
    assert set(owner["week2"].values()) == set(SPLITS)


def test_a_class_too_small_for_the_draw_is_refused_with_the_fix(tmp_path: Path) -> None:
    rng = np.random.default_rng(6)
    x = rng.normal(size=(301, 4)).astype(np.float32)
    y = np.concatenate([np.tile([0, 1], 150), [2]])  # class 2: one row
    np.savez(tmp_path / "lone.npz", x=x, y=y)
    config = DataConfig(source=str(tmp_path / "lone.npz"))
    lone = row_hashes(x[-1:])

    def lone_split(seed: int) -> int:
        keys = split_keys(lone, seed, "split")
        return int(split_codes(keys, config.val_fraction, config.test_fraction)[0])

    test_seed, train_seed = (next(s for s in range(100) if lone_split(s) == c) for c in (2, 0))
    with pytest.raises(DatasetError, match=r"test classes unseen in train: \[2\].*split_seed"):
        prepare_dataset(config.model_copy(update={"split_seed": test_seed}), 0, tmp_path / "a")
    # drawn into train, the class is missing from val instead: that split's fraction is the fix
    with pytest.raises(DatasetError, match=r"val split has no examples of classes \[2\]"):
        prepare_dataset(config.model_copy(update={"split_seed": train_seed}), 0, tmp_path / "b")


def test_a_streamed_split_follows_split_seed_not_the_run_seed(tmp_path: Path) -> None:
    folder = tmp_path / "rows"
    folder.mkdir()
    _frame(600, 3, seed=0, features=8).to_parquet(folder / "part-0.parquet")

    def streamed(run_seed: int, split_seed: int | None, name: str) -> dict[str, set[str]]:
        config = DataConfig(
            source=str(folder), loader="streaming", split="random", split_seed=split_seed
        )
        prepare_dataset(config, run_seed, tmp_path / name, tmp_path / f"{name}-test")
        return _split_hashes(tmp_path / name)

    pinned = streamed(1, 5, "a")
    assert streamed(2, 5, "b") == pinned  # another run seed: the same split
    assert streamed(2, None, "c") != pinned  # unset: the run's seed draws it
    assert streamed(5, None, "d") == pinned  # the same key, however it is given
