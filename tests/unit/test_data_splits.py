"""Split strategies: time order holds, no group spans splits, shuffled time is refused,
the split manifest is byte-identical for the same input and seed, and a shuffled split does
not depend on the file order."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from graft.config import DataConfig
from graft.data.prepare import prepare_dataset
from graft.errors import DatasetError


def _frame(n: int = 400, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(rng.normal(size=(n, 4)), columns=["a", "b", "c", "d"])
    frame["label"] = rng.integers(0, 3, size=n)
    # shuffled timestamps with ties, so the split must sort and keep ties together
    frame["ts"] = rng.permutation(np.repeat(np.arange(n // 2), 2)).astype(float)
    frame["user"] = [f"u{i}" for i in rng.integers(0, 60, size=n)]
    return frame


def _splits(out: Path) -> dict:
    return json.loads((out / "splits.json").read_text())


def test_time_split_is_ordered_with_gap(tmp_path: Path) -> None:
    frame = _frame()
    frame.to_parquet(tmp_path / "t.parquet")
    config = DataConfig(
        source=str(tmp_path / "t.parquet"),
        split="time",
        time_column="ts",
        time_gap=5.0,
        group_column="user",
    )
    manifest = prepare_dataset(config, 0, tmp_path / "out")
    assert manifest.split_strategy == "time"
    assert manifest.input_shape == [4]  # the time and group columns are not features
    body = _splits(tmp_path / "out")
    ts = frame["ts"].to_numpy()
    spans = {s: ts[body["splits"][s]["row_ids"]] for s in ("train", "val", "test")}
    assert spans["val"].min() - spans["train"].max() >= 5.0
    assert spans["test"].min() - spans["val"].max() >= 5.0
    # the gap's rows are dropped and listed; every row is accounted for exactly once
    assert len(body["dropped"]["time_gap"]) > 0
    parts = [body["splits"][s]["row_ids"] for s in spans] + list(body["dropped"].values())
    every = sorted(row for part in parts for row in part)
    assert every == list(range(len(frame)))


def test_npz_time_array_is_used_and_random_split_refused(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    x = rng.normal(size=(300, 3)).astype(np.float32)
    y = np.tile([0, 1, 2], 100)
    t = rng.permutation(300).astype(np.float64)
    np.savez(tmp_path / "ts.npz", x=x, y=y, t=t)
    with pytest.raises(DatasetError, match=r"declares a time column .*split: time"):
        prepare_dataset(DataConfig(source=str(tmp_path / "ts.npz")), 0, tmp_path / "a")
    with pytest.raises(DatasetError, match="time column"):
        prepare_dataset(
            DataConfig(source=str(tmp_path / "ts.npz"), split="random"), 0, tmp_path / "b"
        )
    manifest = prepare_dataset(
        DataConfig(source=str(tmp_path / "ts.npz"), allow_shuffled_time=True), 0, tmp_path / "c"
    )
    assert manifest.warnings[0].startswith("OVERRIDE")
    prepare_dataset(DataConfig(source=str(tmp_path / "ts.npz"), split="time"), 0, tmp_path / "d")
    body = _splits(tmp_path / "d")
    tr, va, te = (t[body["splits"][s]["row_ids"]] for s in ("train", "val", "test"))
    assert tr.max() < va.min() and va.max() < te.min()


def test_time_split_without_timestamps_is_refused(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="split: time needs timestamps"):
        prepare_dataset(DataConfig(source="builtin:digits", split="time"), 0, tmp_path)


def test_group_split_keeps_each_entity_in_one_split(tmp_path: Path) -> None:
    frame = _frame()
    frame.to_parquet(tmp_path / "g.parquet")
    config = DataConfig(source=str(tmp_path / "g.parquet"), split="group", group_column="user")
    prepare_dataset(config, 0, tmp_path / "out")
    body = _splits(tmp_path / "out")
    users = frame["user"].to_numpy()
    owners: dict[str, set[str]] = {}
    for split, part in body["splits"].items():
        assert len(part["row_ids"]) > 0
        for user in users[part["row_ids"]]:
            owners.setdefault(user, set()).add(split)
    assert all(len(splits) == 1 for splits in owners.values())
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["splits"]["groups_in_several_splits"] == 0
    # a random split of the same data does put users in several splits: the check is real
    random_config = DataConfig(source=str(tmp_path / "g.parquet"), group_column="user")
    prepare_dataset(random_config, 0, tmp_path / "rand")
    report = json.loads((tmp_path / "rand" / "report.json").read_text())
    assert report["splits"]["groups_in_several_splits"] > 10


def test_group_split_needs_group_ids(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="split: group needs entity ids"):
        prepare_dataset(DataConfig(source="builtin:digits", split="group"), 0, tmp_path)


def test_keep_together_is_refused_for_group_split() -> None:
    with pytest.raises(ValueError, match="keep_together"):
        DataConfig(split="group", near_duplicate_policy="keep_together")


@pytest.mark.parametrize("split", ["stratified", "random"])
def test_split_manifest_is_byte_identical_for_same_seed(tmp_path: Path, split: str) -> None:
    config = DataConfig(source="builtin:digits", split=split)  # type: ignore[arg-type]
    prepare_dataset(config, 5, tmp_path / "a")
    prepare_dataset(config, 5, tmp_path / "b")
    prepare_dataset(config, 6, tmp_path / "c")
    first = (tmp_path / "a" / "splits.json").read_bytes()
    assert first == (tmp_path / "b" / "splits.json").read_bytes()
    assert first != (tmp_path / "c" / "splits.json").read_bytes()
    body = json.loads(first)
    ids = [set(body["splits"][s]["row_ids"]) for s in ("train", "val", "test")]
    assert not (ids[0] & ids[1]) and not (ids[0] & ids[2]) and not (ids[1] & ids[2])
    kept = sum(len(i) for i in ids) + sum(len(v) for v in body["dropped"].values())
    assert kept == 1797
    assert len(body["splits"]["train"]["row_hashes"]) == len(ids[0])


def test_stratified_split_ignores_the_file_order(tmp_path: Path) -> None:
    # each row's split is a function of its content, so rows sorted by class split exactly as
    # the same rows shuffled do, and every class reaches every split
    rng = np.random.default_rng(0)
    y = np.sort(np.repeat(np.arange(4), 100))
    x = rng.normal(size=(400, 3)).astype(np.float32)
    np.savez(tmp_path / "sorted.npz", x=x, y=y)
    order = rng.permutation(len(y))
    np.savez(tmp_path / "shuffled.npz", x=x[order], y=y[order])
    for name in ("sorted", "shuffled"):
        prepare_dataset(DataConfig(source=str(tmp_path / f"{name}.npz")), 0, tmp_path / name)
    by_name = {name: _splits(tmp_path / name)["splits"] for name in ("sorted", "shuffled")}
    for split in ("train", "val", "test"):
        hashes = [set(by_name[name][split]["row_hashes"]) for name in by_name]
        assert hashes[0] == hashes[1], split
    report = json.loads((tmp_path / "sorted" / "report.json").read_text())
    assert all(len(counts) == 4 for counts in report["splits"]["class_counts"].values())


def test_label_sorted_data_with_sequential_cut_is_an_error(tmp_path: Path) -> None:
    from sklearn.datasets import load_digits

    digits = load_digits()
    order = np.argsort(digits.target, kind="stable")
    np.savez(tmp_path / "sorted.npz", x=digits.data[order], y=digits.target[order])
    config = DataConfig(
        source=str(tmp_path / "sorted.npz"),
        split="sequential",
        val_fraction=0.05,
        test_fraction=0.2,
    )
    with pytest.raises(DatasetError, match="labels are sorted by class"):
        prepare_dataset(config, 0, tmp_path / "out")


def test_classes_in_test_absent_from_train_are_an_error(tmp_path: Path) -> None:
    # not sorted (so the sorted-label check stays quiet), but class 2 only at the end
    rng = np.random.default_rng(0)
    y = np.concatenate([rng.permutation(np.tile([0, 1], 150)), np.full(60, 2)])
    x = rng.normal(size=(len(y), 3)).astype(np.float32)
    np.savez(tmp_path / "late.npz", x=x, y=y)
    config = DataConfig(source=str(tmp_path / "late.npz"), split="sequential")
    with pytest.raises(DatasetError, match=r"classes unseen in train: \[2\]"):
        prepare_dataset(config, 0, tmp_path / "out")
