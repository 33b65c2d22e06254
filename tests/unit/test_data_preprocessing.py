"""Preprocessing is fitted on train only and expressed as the stem's mean/std."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from graft.config import DataConfig
from graft.data.holdout import default_holdout_dir, load_holdout
from graft.data.manifest import DataManifest
from graft.data.prepare import load_split, prepare_dataset
from graft.data.splits import split_codes, split_keys
from graft.data.validation import row_hashes


def _tabular(tmp_path: Path) -> tuple[Path, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(8)
    x = (rng.normal(size=(300, 4)) * [1.0, 10.0, 100.0, 0.1] + [0.0, 5.0, -50.0, 1.0]).astype(
        np.float32
    )
    y = np.tile([0, 1, 2], 100)
    np.savez(tmp_path / "t.npz", x=x, y=y)
    return tmp_path / "t.npz", x, y


@pytest.mark.parametrize("method", ["standardize", "minmax"])
def test_statistics_unchanged_by_an_outlier_planted_in_test(tmp_path: Path, method: str) -> None:
    path, x, y = _tabular(tmp_path)
    config = DataConfig(source=str(path), normalize=method)  # type: ignore[arg-type]
    before = prepare_dataset(config, 0, tmp_path / "a")
    # a row's split follows its content, so the outlier goes into a row whose new content
    # hashes into test (every other row keeps its split)
    planted = x.copy()
    planted[:, 0] = 1e6
    keys = split_keys(row_hashes(planted), config.resolved_split_seed(0), "split")
    codes = split_codes(keys, config.val_fraction, config.test_fraction)
    row = int(np.flatnonzero(codes == 2)[0])
    planted = x.copy()
    planted[row, 0] = 1e6
    np.savez(path, x=planted, y=y)
    after = prepare_dataset(config, 0, tmp_path / "b")
    assert after.tasks["target"].mean == before.tasks["target"].mean
    assert after.tasks["target"].std == before.tasks["target"].std
    x_test, _ = load_holdout(default_holdout_dir(tmp_path / "b"), "target", tmp_path / "b")
    assert x_test.max() == 1e6  # the outlier is there, it just did not move the statistics
    x_train, _ = load_split(tmp_path / "b", "target", "train")
    mean = np.asarray(after.tasks["target"].mean)
    std = np.asarray(after.tasks["target"].std)
    scaled = (x_train - mean) / std  # what the model's Standardize stem computes
    if method == "standardize":
        assert np.abs(scaled.mean(axis=0)).max() < 1e-5
        assert np.abs(scaled.std(axis=0) - 1).max() < 1e-5
    else:
        assert scaled.min(axis=0) == pytest.approx(0.0, abs=1e-6)
        assert scaled.max(axis=0) == pytest.approx(1.0, abs=1e-6)


def test_divide_by_255_and_none_on_images(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(240, 1, 4, 4)).astype(np.uint8)
    x[0, 0, 0, 0] = 255
    np.savez(tmp_path / "img.npz", x=x, y=np.tile([0, 1], 120))
    manifest = prepare_dataset(
        DataConfig(source=str(tmp_path / "img.npz"), normalize="divide_by_255"), 0, tmp_path / "a"
    )
    assert manifest.tasks["target"].mean == [0.0] and manifest.tasks["target"].std == [255.0]
    assert DataManifest.read(tmp_path / "a").normalize == "divide_by_255"
    manifest = prepare_dataset(
        DataConfig(source=str(tmp_path / "img.npz"), normalize="none"), 0, tmp_path / "b"
    )
    assert manifest.tasks["target"].mean == [0.0] and manifest.tasks["target"].std == [1.0]


def test_missing_values_filled_with_train_median_and_indicator(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    frame = pd.DataFrame(rng.normal(size=(300, 3)), columns=["a", "b", "c"])
    frame.loc[rng.choice(300, size=30, replace=False), "b"] = np.nan
    frame["label"] = np.tile([0, 1, 2], 100)
    frame.to_parquet(tmp_path / "m.parquet")
    config = DataConfig(source=str(tmp_path / "m.parquet"), missing_values="fill_median")
    manifest = prepare_dataset(config, 0, tmp_path / "out")
    assert manifest.input_shape == [4]
    assert manifest.feature_names == ["a", "b", "c", "b_missing"]
    train_ids = json.loads((tmp_path / "out" / "splits.json").read_text())["splits"]["train"]
    median = float(np.nanmedian(frame["b"].to_numpy(dtype=np.float32)[train_ids["row_ids"]]))
    assert manifest.missing_fill is not None
    assert manifest.missing_fill.medians[1] == pytest.approx(median)
    assert manifest.missing_fill.indicator_columns == [1]
    assert DataManifest.read(tmp_path / "out").missing_fill == manifest.missing_fill
    out = tmp_path / "out"
    for split in ("train", "val", "test"):
        if split == "test":
            x, _ = load_holdout(default_holdout_dir(out), "target", out)
        else:
            x, _ = load_split(out, "target", split)
        assert np.isfinite(x).all()
        holes = x[:, 3] == 1.0
        assert np.all(x[holes, 1] == np.float32(median))
    x, _ = load_split(tmp_path / "out", "target", "train")
    assert 0 < x[:, 3].sum() < len(x)
