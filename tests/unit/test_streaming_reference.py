"""A streaming data-prep (``data.loader: streaming``) writes the monitor's reference statistics
too: from the train split only, with the row hashes the monitor's in-memory read of a snapshot
gives, so a champion trained on streamed data is judged on drift instead of always retrained.
An image folder's histograms cover every train file; a table's come from the seeded sample."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from graft.config.data import DataConfig
from graft.config.monitor import MonitorConfig
from graft.data.drift_view import drift_view
from graft.data.image_folder import list_image_files
from graft.data.manifest import DataManifest
from graft.data.prepare import prepare_dataset, read_validated
from graft.data.reference import REFERENCE_FOLDER, ReferenceStatistics, bin_edges, read_reference
from graft.data.sources import load_digits
from graft.data.streaming_manifest import manifest_path, read_manifest
from graft.errors import DatasetError
from graft.monitor.figures import measure_drift
from graft.monitor.policy import decide
from graft.monitor.snapshot import Snapshot, check_comparable, count_new_rows, read_snapshot

DRIFT = MonitorConfig(retrain_when="drift", min_rows=100)
CLASSES = {0: "zero", 1: "one", 2: "two"}
FEATURES = [f"f{i}" for i in range(6)]


def _digit_folder(root: Path, brighten: float = 0.0) -> Path:
    """Every sklearn digit of 0, 1 and 2 as an 8 x 8 PNG, ``brighten`` added to its pixels."""
    digits = load_digits()
    for label, name in CLASSES.items():
        (root / name).mkdir(parents=True)
        for row in np.flatnonzero(digits.y == label):
            ink = digits.x[row].reshape(8, 8) / 16  # sklearn's digits run 0..16
            pixels = (ink * 255 * (1 - brighten) + 255 * brighten).round()
            Image.fromarray(pixels.astype(np.uint8), "L").save(root / name / f"{row}.png")
    return root


def _streaming(source: Path, **settings: object) -> DataConfig:
    return DataConfig.model_validate(
        {"source": str(source), "loader": "streaming", "split": "random", **settings}
    )


def _prepare(config: DataConfig, out: Path) -> tuple[ReferenceStatistics, DataManifest]:
    prepare_dataset(config, 0, out / "data", out / "data-test")
    return read_reference(out / "data" / REFERENCE_FOLDER), DataManifest.read(out / "data")


@pytest.fixture(scope="module")
def digits(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, ReferenceStatistics, Path]:
    tmp = tmp_path_factory.mktemp("streamed-digits")
    folder = _digit_folder(tmp / "digits")
    reference, _ = _prepare(_streaming(folder), tmp)
    return folder, reference, tmp / "data"


def test_an_image_folder_reference_covers_every_train_file_exactly(
    digits: tuple[Path, ReferenceStatistics, Path],
) -> None:
    folder, reference, dataset = digits
    manifest = DataManifest.read(dataset)
    train_rows = manifest.tasks["source"].sizes["train"]
    assert reference.kind == "image" and reference.input_shape == [1, 8, 8]
    assert reference.train_rows == train_rows
    assert sum(reference.label_counts.values()) == train_rows
    assert sorted(reference.label_counts) == sorted(CLASSES.values())
    # the histograms are those of the train files read whole, not of a sample
    _, files = list_image_files(folder, str(folder))
    position = {str(f.path): index for index, f in enumerate(files)}
    train_uris = read_manifest(manifest_path(dataset, "source", "train")).column("uri")
    train = np.array(sorted(position[u] for u in train_uris.to_pylist()))
    whole = read_validated(DataConfig(source=str(folder)))  # the in-memory reader's pixels
    view = drift_view(whole.x[train], "image")
    for column, histogram in enumerate(reference.histograms):
        assert histogram.name == view.names[column]
        assert histogram.edges == bin_edges(view.values[:, column]).tolist()
    assert len(reference.sample) == train_rows  # fewer train files than the sample's cap
    # the monitor's hash of each row read in memory is the one the streaming pass stored
    in_memory = Snapshot.of(whole)
    assert set(reference.sample_hash.tolist()) == set(in_memory.hashes[train].tolist())
    assert set(reference.row_hash.tolist()) == set(in_memory.hashes.tolist())


def test_the_streamed_snapshot_is_the_in_memory_one_without_the_pixels(
    digits: tuple[Path, ReferenceStatistics, Path],
) -> None:
    """Under data.loader=streaming the monitor reads an image folder by data-prep's pass, one
    window of files at a time: the same rows, columns, labels and hashes as a whole read."""
    folder, _, _ = digits
    streamed = read_snapshot(_streaming(folder))
    whole = read_snapshot(DataConfig(source=str(folder)))
    assert streamed.rows == whole.rows == 537
    assert streamed.hashes.tolist() == whole.hashes.tolist()  # the same order: the listing
    assert streamed.labels.tolist() == whole.labels.tolist()
    assert streamed.view.names == whole.view.names
    np.testing.assert_allclose(streamed.view.values, whole.view.values, rtol=1e-12)
    assert (streamed.kind, streamed.input_shape) == (whole.kind, whole.input_shape)


def test_the_monitor_keeps_a_streamed_champion_on_the_same_folder_and_flags_a_brighter_one(
    digits: tuple[Path, ReferenceStatistics, Path], tmp_path: Path
) -> None:
    folder, reference, _ = digits
    same = read_snapshot(_streaming(folder))
    check_comparable(reference, same, str(folder), "1")
    figures = measure_drift(reference, same, DRIFT, seed=0)
    assert figures.new_rows == 0
    assert not decide(DRIFT, figures).retrain, decide(DRIFT, figures).reason

    brighter = read_snapshot(_streaming(_digit_folder(tmp_path / "brighter", brighten=0.3)))
    figures = measure_drift(reference, brighter, DRIFT, seed=0)
    assert figures.new_rows == len(np.unique(brighter.hashes))  # all changed
    decision = decide(DRIFT, figures)
    assert decision.retrain
    assert any("brightness" in trigger for trigger in decision.triggers)


def _table(rows: int, seed: int, shift: float = 0.0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    y = np.arange(rows) % 2
    x = rng.normal(size=(rows, len(FEATURES))) + y[:, None]
    x[:, 0] += shift
    frame = pd.DataFrame(x.astype(np.float32), columns=FEATURES)
    frame["label"] = np.array(["no", "yes"])[y]
    return frame


def _parquet_folder(folder: Path, *frames: pd.DataFrame) -> Path:
    """Each frame as a Parquet file of 100-row groups in ``folder``: a snapshot that grows by
    files, as an export job appends them."""
    folder.mkdir(parents=True)
    for index, frame in enumerate(frames):
        table = pa.Table.from_pandas(frame, preserve_index=False)
        pq.write_table(table, folder / f"part-{index}.parquet", row_group_size=100)
    return folder


def test_a_table_reference_counts_new_rows_as_the_monitor_reads_them_and_finds_a_moved_column(
    tmp_path: Path,
) -> None:
    week_one = [_table(600, seed=0), _table(400, seed=3)]
    source = _parquet_folder(tmp_path / "week1", *week_one)
    reference, manifest = _prepare(_streaming(source, label_column="label"), tmp_path)
    train_rows = manifest.tasks["source"].sizes["train"]
    assert reference.train_rows == train_rows
    assert sum(reference.label_counts.values()) == train_rows
    assert sorted(reference.label_counts) == ["no", "yes"]
    assert reference.feature_names == FEATURES
    # histograms and sample from the seeded sample's train rows (2,000 by default: all here)
    assert len(reference.sample) == train_rows
    assert [h.name for h in reference.histograms] == FEATURES

    # the monitor reads the folder whole, as data-prep streamed it: week one is nothing new
    same = read_snapshot(_streaming(source, label_column="label"))
    check_comparable(reference, same, str(source), "1")
    assert count_new_rows(reference, same.hashes) == 0

    # week two: week one's files and one of 300 new rows
    week_two = _parquet_folder(tmp_path / "week2", *week_one, _table(300, seed=1))
    snapshot = read_snapshot(_streaming(week_two, label_column="label"))
    assert count_new_rows(reference, snapshot.hashes) == 300
    figures = measure_drift(reference, snapshot, DRIFT, seed=0)
    assert figures.compared == "new_rows" and figures.rows_compared == 300
    assert not decide(DRIFT, figures).retrain, decide(DRIFT, figures).reason

    moved = _parquet_folder(tmp_path / "moved", *week_one, _table(300, seed=2, shift=2.0))
    snapshot = read_snapshot(_streaming(moved, label_column="label"))
    decision = decide(DRIFT, measure_drift(reference, snapshot, DRIFT, 0))
    assert decision.retrain
    assert any("'f0'" in trigger for trigger in decision.triggers)


def test_the_monitor_refuses_a_parquet_snapshot_whose_labels_are_no_class_ids(
    tmp_path: Path,
) -> None:
    """As data-prep does: a label of 10**9 would otherwise name a billion classes."""
    frame = _table(30, seed=0)
    frame["label"] = np.array([0, 1, 10**9] * 10, dtype=np.int64)
    folder = _parquet_folder(tmp_path / "odd", frame)
    with pytest.raises(DatasetError, match="1000000000 is not a class id"):
        read_snapshot(_streaming(folder, label_column="label"))
