from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from graft.config import DataConfig
from graft.data.holdout import default_holdout_dir, holdout_path, load_holdout
from graft.data.manifest import DataManifest
from graft.data.prepare import check_source, load_split, prepare_dataset
from graft.data.sources import load_source
from graft.data.validation import row_hashes
from graft.errors import DatasetError, StorageError


def _split_file(dataset: Path, task: str, split: str) -> Path:
    """Train/val in the dataset directory, test in the sealed sibling data-prep wrote."""
    if split == "test":
        return holdout_path(default_holdout_dir(dataset), task)
    return dataset / task / f"{split}.npz"


def _digits_ab(tmp_path: Path, **transfer: object) -> tuple[DataManifest, Path]:
    config = DataConfig(
        source="builtin:digits",
        transfer={"target_classes": [3, 8], "target_train_size": 50, **transfer},
    )
    out = tmp_path / "dataset"
    return prepare_dataset(config, seed=7, output_dir=out), out


def test_splits_are_disjoint_and_tasks_split_by_class(tmp_path: Path) -> None:
    manifest, out = _digits_ab(tmp_path)
    assert manifest.tasks["target"].classes == [3, 8]
    assert manifest.tasks["source"].classes == [0, 1, 2, 4, 5, 6, 7, 9]
    assert manifest.tasks["target"].sizes["train"] == 50
    for task in ("source", "target"):
        hashes = {}
        for split in ("train", "val", "test"):
            with np.load(_split_file(out, task, split)) as archive:
                hashes[split] = set(archive["row_hash"].tolist())
                assert set(archive["y"].tolist()) == set(range(len(manifest.tasks[task].classes)))
        assert not hashes["train"] & hashes["test"]
        assert not hashes["train"] & hashes["val"]
        assert not hashes["val"] & hashes["test"]


def test_same_seed_gives_identical_splits(tmp_path: Path) -> None:
    _, first = _digits_ab(tmp_path / "a")
    _, second = _digits_ab(tmp_path / "b")
    for split in ("train", "val", "test"):
        assert (
            _split_file(first, "target", split).read_bytes()
            == _split_file(second, "target", split).read_bytes()
        )


def test_normalization_statistics_come_from_train_only(tmp_path: Path) -> None:
    manifest, out = _digits_ab(tmp_path)
    x_train, _ = load_split(out, "source", "train")
    assert manifest.tasks["source"].mean[0] == pytest.approx(float(x_train.mean()), rel=1e-5)
    x_test, _ = load_holdout(default_holdout_dir(out), "source", out)
    assert float(x_test.mean()) != pytest.approx(manifest.tasks["source"].mean[0], rel=1e-6)


def test_planted_duplicates_are_dropped_before_splitting(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    y = np.repeat(np.arange(3), 100)
    x = rng.normal(size=(300, 5)).astype(np.float32)
    copies = rng.choice(300, size=50, replace=False)
    x_dup = np.concatenate([x, x[copies]])
    y_dup = np.concatenate([y, y[copies]])
    source = tmp_path / "dups.npz"
    np.savez(source, x=x_dup, y=y_dup)
    manifest = prepare_dataset(DataConfig(source=str(source)), 0, tmp_path / "out")
    assert manifest.duplicates.exact_duplicates_dropped == 50
    assert manifest.num_rows == 300
    all_hashes = []
    for split in ("train", "val", "test"):
        with np.load(_split_file(tmp_path / "out", "target", split)) as archive:
            all_hashes.extend(archive["row_hash"].tolist())
    assert len(all_hashes) == len(set(all_hashes)) == 300


def test_nan_values_are_named_with_rows(tmp_path: Path, tabular_npz: Path) -> None:
    with np.load(tabular_npz) as archive:
        x, y = archive["x"].copy(), archive["y"]
    x[3, 1] = np.nan
    x[9, 0] = np.inf
    np.savez(tmp_path / "bad.npz", x=x, y=y)
    with pytest.raises(DatasetError, match=r"2 NaN/inf values .*rows 3, 9.*drop or impute"):
        check_source(DataConfig(source=str(tmp_path / "bad.npz")))


def test_unknown_target_label_is_refused(tabular_npz: Path) -> None:
    with pytest.raises(DatasetError, match=r"target_classes \[7\] are not labels"):
        check_source(DataConfig(source=str(tabular_npz), transfer={"target_classes": [1, 7]}))


def test_too_few_rows_for_the_splits(tmp_path: Path) -> None:
    x = np.arange(12, dtype=np.float32).reshape(6, 2)
    y = np.array([0, 0, 0, 1, 1, 1])
    np.savez(tmp_path / "small.npz", x=x, y=y)
    with pytest.raises(DatasetError, match="split"):
        prepare_dataset(DataConfig(source=str(tmp_path / "small.npz")), 0, tmp_path / "o")


def test_missing_file_and_wrong_format(tmp_path: Path) -> None:
    with pytest.raises(StorageError, match="does not exist"):
        load_source(str(tmp_path / "nope.npz"), "label")
    with pytest.raises(DatasetError, match=r"supported formats are \.npz, \.parquet"):
        load_source(str(tmp_path / "data.txt"), "label")


def test_parquet_source_with_label_column(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(rng.normal(size=(90, 3)), columns=["a", "b", "c"])
    frame["target"] = np.repeat([0, 1, 2], 30)
    frame.to_parquet(tmp_path / "t.parquet")
    raw = load_source(str(tmp_path / "t.parquet"), "target")
    assert raw.x.shape == (90, 3) and raw.kind == "tabular"
    assert raw.feature_names == ["a", "b", "c"]
    with pytest.raises(DatasetError, match="no label column 'label'"):
        load_source(str(tmp_path / "t.parquet"), "label")


def test_row_hashes_identify_identical_rows() -> None:
    x = np.array([[1.0, 2.0], [1.0, 2.0], [2.0, 1.0]], dtype=np.float32)
    hashes = row_hashes(x)
    assert hashes[0] == hashes[1] != hashes[2]
