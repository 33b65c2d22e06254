"""Quality checks with planted faults: near duplicates, a leaked feature, constant columns,
missing values, class imbalance."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from graft.config import DataConfig
from graft.data.prepare import prepare_dataset
from graft.errors import DatasetError

N, FEATURES, COPIES = 600, 20, 50


def _planted_near_duplicates(tmp_path: Path) -> tuple[Path, np.ndarray]:
    """600 clean rows plus 50 copies (rows 600..649) of rows ``originals`` with tiny noise."""
    rng = np.random.default_rng(11)
    x = rng.normal(size=(N, FEATURES)).astype(np.float32)
    y = np.tile([0, 1, 2], N // 3)
    originals = rng.choice(N, size=COPIES, replace=False)
    noisy = x[originals] + rng.normal(scale=0.01, size=(COPIES, FEATURES)).astype(np.float32)
    path = tmp_path / "near.npz"
    np.savez(path, x=np.concatenate([x, noisy]), y=np.concatenate([y, y[originals]]))
    return path, originals


def _split_of(body: dict) -> dict[int, str]:
    return {row: name for name, part in body["splits"].items() for row in part["row_ids"]}


def test_planted_near_duplicates_are_found_and_dropped(tmp_path: Path) -> None:
    path, originals = _planted_near_duplicates(tmp_path)
    # the split alone (no near-duplicate handling) tells which planted pairs cross splits
    loose = DataConfig(source=str(path), near_duplicate_threshold=1.0)
    prepare_dataset(loose, 0, tmp_path / "loose")
    where = _split_of(json.loads((tmp_path / "loose" / "splits.json").read_text()))
    crossing = [i for i, o in enumerate(originals) if where[int(o)] != where[N + i]]
    assert len(crossing) >= 10  # enough planted pairs straddle splits to test anything

    manifest = prepare_dataset(DataConfig(source=str(path)), 0, tmp_path / "out")
    body = json.loads((tmp_path / "out" / "splits.json").read_text())
    dropped = set(body["dropped"]["near_duplicates"])
    planted = set(originals.tolist()) | set(range(N, N + COPIES))
    assert manifest.near_duplicates_found == len(crossing) == len(dropped)
    assert dropped <= planted  # precision: no clean row was flagged
    where = _split_of(body)
    for i, original in enumerate(originals):  # after the policy no pair straddles splits
        pair = [r for r in (int(original), N + i) if r in where]
        assert len({where[r] for r in pair}) == 1
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["near_duplicates"]["found"] == len(crossing)
    assert f"{len(crossing)}, policy <code>drop" in (tmp_path / "out" / "report.html").read_text()


def test_near_duplicates_kept_together_or_refused(tmp_path: Path) -> None:
    path, originals = _planted_near_duplicates(tmp_path)
    config = DataConfig(source=str(path), near_duplicate_policy="keep_together")
    manifest = prepare_dataset(config, 0, tmp_path / "out")
    body = json.loads((tmp_path / "out" / "splits.json").read_text())
    assert body["dropped"]["near_duplicates"] == []
    assert manifest.num_rows == N + COPIES
    where = _split_of(body)
    assert all(where[int(o)] == where[N + i] for i, o in enumerate(originals))
    assert manifest.near_duplicates_found > 0
    with pytest.raises(DatasetError, match=r"near duplicates across splits.*near_duplicate_policy"):
        prepare_dataset(
            DataConfig(source=str(path), near_duplicate_policy="error"), 0, tmp_path / "err"
        )


def _leaky_frame(n: int = 600) -> pd.DataFrame:
    rng = np.random.default_rng(5)
    y = rng.integers(0, 3, size=n)
    frame = pd.DataFrame(rng.normal(size=(n, 3)), columns=["a", "b", "c"])
    frame["diagnosis_code"] = y + rng.normal(scale=0.05, size=n)  # the label, barely hidden
    frame["label"] = y
    return frame


def test_a_leaked_feature_is_flagged_and_a_random_one_is_not(tmp_path: Path) -> None:
    _leaky_frame().to_parquet(tmp_path / "leak.parquet")
    manifest = prepare_dataset(
        DataConfig(source=str(tmp_path / "leak.parquet")), 0, tmp_path / "out"
    )
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    flagged = [f["feature"] for f in report["quality"]["leakage"]]
    assert flagged == ["diagnosis_code"]
    assert report["quality"]["leakage"][0]["val_balanced_accuracy"] >= 0.98
    assert any("diagnosis_code" in w and "leakage" in w for w in manifest.warnings)
    with pytest.raises(DatasetError, match=r"'diagnosis_code' alone predicts the label"):
        prepare_dataset(
            DataConfig(source=str(tmp_path / "leak.parquet"), leakage_policy="error"),
            0,
            tmp_path / "err",
        )
    _leaky_frame().drop(columns=["diagnosis_code"]).to_parquet(tmp_path / "clean.parquet")
    prepare_dataset(DataConfig(source=str(tmp_path / "clean.parquet")), 0, tmp_path / "clean")
    report = json.loads((tmp_path / "clean" / "report.json").read_text())
    assert report["quality"]["leakage_checked"] and report["quality"]["leakage"] == []


def test_constant_columns_and_missing_values_are_counted(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    frame = pd.DataFrame(rng.normal(size=(1000, 3)), columns=["a", "b", "c"])
    frame["flat"] = 7.0
    holes = rng.choice(1000, size=30, replace=False)  # 3.0% missing in column b
    frame.loc[holes, "b"] = np.nan
    frame["label"] = np.tile([0, 1], 500)
    frame.to_parquet(tmp_path / "q.parquet")
    with pytest.raises(DatasetError, match=r"30 NaN/inf values .*missing_values=fill_median"):
        prepare_dataset(DataConfig(source=str(tmp_path / "q.parquet")), 0, tmp_path / "refused")
    config = DataConfig(source=str(tmp_path / "q.parquet"), missing_values="fill_median")
    manifest = prepare_dataset(config, 0, tmp_path / "out")
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["quality"]["missing_values"] == {"b": 30}
    assert report["quality"]["constant_columns"] == ["flat"]
    assert any("constant columns" in w and "flat" in w for w in manifest.warnings)
    page = (tmp_path / "out" / "report.html").read_text()
    assert "<td>b</td><td>30</td><td>3.00%</td>" in page


@pytest.mark.parametrize(("minority", "imbalanced"), [(100, True), (300, False)])
def test_class_imbalance_suggests_a_metric(tmp_path: Path, minority: int, imbalanced: bool) -> None:
    rng = np.random.default_rng(4)
    y = np.concatenate([np.zeros(900, dtype=int), np.ones(minority, dtype=int)])
    x = rng.normal(size=(len(y), 4)).astype(np.float32)
    np.savez(tmp_path / "imb.npz", x=x, y=y)
    manifest = prepare_dataset(DataConfig(source=str(tmp_path / "imb.npz")), 0, tmp_path / "o")
    report = json.loads((tmp_path / "o" / "report.json").read_text())
    finding = report["quality"]["imbalance"]
    assert finding["counts"] == {"0": 900, "1": minority}
    assert finding["imbalanced"] is imbalanced
    assert ("PR-AUC" in finding["suggestion"]) is imbalanced
    assert any("PR-AUC" in w for w in manifest.warnings) is imbalanced
