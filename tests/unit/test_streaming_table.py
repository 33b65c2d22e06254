"""data.loader: streaming over Parquet (issue 20): data-prep reads a .parquet file or a folder
of them once, row group by row group, and writes split manifests of rows (file, row group, row
index, hash, label); the split follows each row's content hash, copies are dropped, the
normalization statistics equal the in-memory ones, and the test rows stay sealed."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pydantic import ValidationError

from graft.config.data import DataConfig
from graft.data.holdout import load_holdout
from graft.data.manifest import DataManifest
from graft.data.prepare import check_source, load_split, prepare_dataset
from graft.data.preprocessing import scaling_statistics
from graft.data.streaming_manifest import manifest_path, read_manifest
from graft.data.streaming_read import load_streamed_split
from graft.errors import DatasetError
from graft.train.stream_data import _blocks

SPLIT_DIRS = {"train": "out", "val": "out", "test": "out-test"}
FEATURES = [f"f{i}" for i in range(10)]  # 8 or more: the near-duplicate check runs


def _frame(rows: int = 300, seed: int = 0, labels: object = None) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    y = np.arange(rows) % 3
    x = rng.normal(size=(rows, len(FEATURES))) * 10 + 100 + y[:, None]  # mean >> spread
    frame = pd.DataFrame(x.astype(np.float32), columns=FEATURES)
    frame["label"] = y if labels is None else np.asarray(labels)[y]
    return frame


def _write(frame: pd.DataFrame, folder: Path, files: int = 2) -> Path:
    """``frame`` as ``files`` Parquet files of 40-row groups in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    for index, part in enumerate(np.array_split(np.arange(len(frame)), files)):
        table = pa.Table.from_pandas(frame.iloc[part], preserve_index=False)
        pq.write_table(table, folder / f"part-{index}.parquet", row_group_size=40)
    return folder


def _prepare(source: Path, out: Path, seed: int = 0, **settings: object) -> DataManifest:
    config = DataConfig.model_validate(
        {"source": str(source), "loader": "streaming", "split": "random", **settings}
    )
    return prepare_dataset(config, seed, out / "out", out / "out-test")


def _labels_by_row(frame: pd.DataFrame) -> dict[bytes, object]:
    """Each source row's label, by its float32 feature bytes."""
    rows = frame[FEATURES].to_numpy(dtype=np.float32)
    return {row.tobytes(): label for row, label in zip(rows, frame["label"], strict=True)}


def _rows(out: Path, task: str = "source") -> dict[str, pa.Table]:
    return {
        split: read_manifest(manifest_path(out / folder, task, split))
        for split, folder in SPLIT_DIRS.items()
    }


def test_a_parquet_folder_is_split_by_row_hash_deterministically(tmp_path: Path) -> None:
    source = _write(_frame(), tmp_path / "table")
    first, again = _prepare(source, tmp_path / "a"), _prepare(source, tmp_path / "b")
    assert first.kind == "tabular" and first.feature_names == FEATURES
    assert first.input_shape == [len(FEATURES)] and first.dataset_hash == again.dataset_hash
    for split, folder in SPLIT_DIRS.items():
        one = manifest_path(tmp_path / "a" / folder, "source", split).read_bytes()
        assert one == manifest_path(tmp_path / "b" / folder, "source", split).read_bytes()
    rows = _rows(tmp_path / "a")
    assert set(rows["train"].column_names) >= {"uri", "row_group", "row_index", "label_key"}
    assert sum(len(t) for t in rows.values()) == 300
    # rows from every row group of both files, each listed once
    places = {
        (u, g, i)
        for t in rows.values()
        for u, g, i in zip(
            *(t.column(c).to_pylist() for c in ("uri", "row_group", "row_index")), strict=True
        )
    }
    assert len(places) == 300
    assert json.loads((tmp_path / "a" / "out" / "splits.json").read_text())["strategy"] == "hash"


def test_exact_duplicate_rows_are_dropped_and_splits_share_no_row(tmp_path: Path) -> None:
    frame = _frame()
    copies = frame.iloc[:10].copy()
    relabelled = frame.iloc[:1].copy()
    relabelled["label"] = (relabelled["label"] + 1) % 3
    source = _write(pd.concat([frame, copies, relabelled], ignore_index=True), tmp_path / "t")
    manifest = _prepare(source, tmp_path)
    assert manifest.duplicates.exact_duplicates_dropped == 11
    assert manifest.duplicates.conflicting_labels == 1
    hashes = [set(t.column("sha256").to_pylist()) for t in _rows(tmp_path).values()]
    assert sum(len(h) for h in hashes) == len(set().union(*hashes)) == 300


@pytest.mark.parametrize("method", ["standardize", "minmax"])
@pytest.mark.parametrize(
    "settings",
    [{}, {"near_duplicate_policy": "keep_together"}, {"max_rows": 200}],
    ids=["one-pass", "near-copies-moved-to-train", "subsample-read-back"],
)
def test_statistics_equal_the_in_memory_computation(
    tmp_path: Path, method: str, settings: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    frame = _frame()
    near = frame.iloc[:60].copy()
    near[FEATURES] += np.float32(1e-3)  # near copies, which the check finds in val and test
    frame = pd.concat([frame, near], ignore_index=True)
    source = _write(frame, tmp_path / "t")
    if "max_rows" not in settings:  # the pass's moments suffice: no row is read back
        monkeypatch.setattr("graft.data.streaming_table_scan.read_rows", _no_read_back)
    manifest = _prepare(source, tmp_path, normalize=method, **settings)
    assert manifest.near_duplicates_found > 0
    monkeypatch.undo()
    x_train, y_train = load_split(tmp_path / "out", "source", "train")  # decoded from rows
    assert x_train.shape == (manifest.tasks["source"].sizes["train"], len(FEATURES))
    original = _labels_by_row(frame)  # the decoded rows are the source's rows
    assert all(original[r.tobytes()] == y for r, y in zip(x_train, y_train, strict=True))
    mean, std = scaling_statistics(x_train, "tabular", method)
    np.testing.assert_allclose(manifest.tasks["source"].mean, mean, rtol=1e-5)
    np.testing.assert_allclose(manifest.tasks["source"].std, std, rtol=1e-4)


def _no_read_back(*_: object) -> None:
    raise AssertionError("the train rows were read back")


def test_test_rows_are_only_in_the_sealed_test_split(tmp_path: Path) -> None:
    source = _write(_frame(), tmp_path / "t")
    manifest = _prepare(source, tmp_path)
    assert not list((tmp_path / "out").rglob("test*"))
    x_test, y_test = load_holdout(tmp_path / "out-test", "source", tmp_path / "out")
    assert x_test.shape == (manifest.tasks["source"].sizes["test"], len(FEATURES))
    assert len(y_test) == len(x_test)
    with pytest.raises(DatasetError, match="sealed"):
        load_split(tmp_path / "out", "source", "test")


@pytest.mark.parametrize("change", ["value", "label"])
def test_a_changed_file_is_refused_by_name(tmp_path: Path, change: str) -> None:
    frame = _frame()
    source = _write(frame, tmp_path / "t", files=1)
    _prepare(source, tmp_path)
    train = manifest_path(tmp_path / "out", "source", "train")
    first = read_manifest(train).to_pydict()
    row = int(first["row_group"][0]) * 40 + int(first["row_index"][0])
    if change == "value":
        frame.loc[row, "f3"] += 1.0
    else:
        frame.loc[row, "label"] = (frame.loc[row, "label"] + 1) % 3
    _write(frame, source, files=1)
    with pytest.raises(DatasetError, match=r"part-0\.parquet changed after data-prep"):
        load_streamed_split(train, tmp_path / "out")


def test_string_labels_become_sorted_class_names(tmp_path: Path) -> None:
    frame = _frame(labels=["zebra", "ant", "moth"])  # ids 0, 1, 2 -> sorted: ant, moth, zebra
    source = _write(frame, tmp_path / "t")
    manifest = _prepare(source, tmp_path / "s", transfer={"target_classes": []})
    assert manifest.tasks["source"].class_names == ["ant", "moth", "zebra"]
    train = read_manifest(manifest_path(tmp_path / "s" / "out", "source", "train")).to_pydict()
    names = ["ant", "moth", "zebra"]
    assert all(names[y] == k for y, k in zip(train["label"], train["label_key"], strict=True))
    x, y = load_split(tmp_path / "s" / "out", "source", "train")
    original = _labels_by_row(frame)
    assert all(original[row.tobytes()] == names[label] for row, label in zip(x, y, strict=True))


def test_a_single_parquet_file_streams_and_the_blocks_follow_its_row_groups(
    tmp_path: Path,
) -> None:
    source = _write(_frame(), tmp_path / "t", files=1) / "part-0.parquet"
    check_source(DataConfig.model_validate({"source": str(source), "loader": "streaming"}))
    _prepare(source, tmp_path)
    table = read_manifest(manifest_path(tmp_path / "out", "source", "train"))
    blocks = _blocks(table, per_block=25)
    assert sum(len(b) for b in blocks) == len(table)
    for block in blocks:  # each decoding task reads one row group
        assert len(set(block.column("row_group").to_pylist())) == 1 and len(block) <= 25


def test_a_spark_style_folder_and_a_pandas_index_are_read_as_in_memory(tmp_path: Path) -> None:
    frame = _frame().set_index(pd.Index(np.arange(300) * 7, name="row_id"))  # not a feature
    folder = tmp_path / "rows.parquet"  # a folder named like a file, as Spark writes one
    folder.mkdir()
    pq.write_table(pa.Table.from_pandas(frame), folder / "part-0.parquet", row_group_size=64)
    (folder / "_SUCCESS").write_text("")
    manifest = _prepare(folder, tmp_path)
    assert manifest.feature_names == FEATURES
    assert sum(manifest.tasks["source"].sizes.values()) == 300


@pytest.mark.parametrize(
    ("damage", "refusal"),
    [
        ("stray", "is not a .parquet file"),
        ("columns", "the same columns"),
        ("nan", "NaN/inf values"),
        ("text", "not real numbers"),
        ("no_label", "no label column 'label'"),
    ],
)
def test_a_table_that_cannot_be_streamed_is_refused(
    tmp_path: Path, damage: str, refusal: str
) -> None:
    frame = _frame()
    source = _write(frame, tmp_path / "t")
    if damage == "stray":
        (source / "notes.txt").write_text("x")
    elif damage == "columns":
        _write(frame.rename(columns={"f0": "g0"}).iloc[:50], tmp_path / "t2", files=1)
        (tmp_path / "t2" / "part-0.parquet").rename(source / "part-9.parquet")
    elif damage == "nan":
        frame.loc[5, "f2"] = np.nan
        _write(frame, source)
    elif damage == "text":
        frame["f2"] = "a"
        _write(frame, source)
    else:
        _write(frame.drop(columns="label"), source)
    with pytest.raises(DatasetError, match=refusal):
        _prepare(source, tmp_path / "out")


def test_config_accepts_parquet_and_refuses_what_a_stream_cannot_do() -> None:
    for source in ("s3://bucket/table.parquet", "s3://bucket/tables/", "local.parquet"):
        DataConfig.model_validate({"loader": "streaming", "source": source})
    with pytest.raises(ValidationError, match="fill_median"):
        DataConfig.model_validate(
            {"loader": "streaming", "source": "t.parquet", "missing_values": "fill_median"}
        )


def test_a_column_equal_to_the_label_is_flagged_on_the_streamed_sample(tmp_path: Path) -> None:
    frame = _frame(rows=600)
    frame.insert(3, "leak", frame["label"].astype(np.float32))
    source = _write(frame, tmp_path / "t")
    sample = {"streaming": {"near_duplicate_sample": 150}}
    manifest = _prepare(source, tmp_path / "warn", **sample)

    report = json.loads((tmp_path / "warn" / "out" / "report.json").read_text())["quality"]
    assert report["leakage_checked"]
    assert [f["feature"] for f in report["leakage"]] == ["leak"]  # f0..f9 are only informative
    assert report["leakage"][0]["val_balanced_accuracy"] == 1.0
    # which rows were scored: the seeded sample's train and val rows, never the whole splits
    scope = report["leakage_scope"]
    train, val = (int(n) for n in re.findall(r"(\d+) train and (\d+) val rows", scope)[0])
    assert scope.startswith("approximate: a seeded sample of") and 0 < val < train
    assert train + val <= 150
    assert any(w.startswith("leakage: feature 'leak'") for w in manifest.warnings)
    assert scope in (tmp_path / "warn" / "out" / "report.html").read_text()

    with pytest.raises(DatasetError, match="feature 'leak' alone predicts the label"):
        _prepare(source, tmp_path / "error", leakage_policy="error", **sample)
    assert not (tmp_path / "error" / "out" / "manifest.json").exists()  # refused before writing

    clean = _prepare(_write(_frame(rows=600), tmp_path / "clean"), tmp_path / "c", **sample)
    assert not any(w.startswith("leakage") for w in clean.warnings)
