"""Data-prep writes the reference statistics of the TRAIN rows only: a validation or test
row's value never reaches the histograms, the sample or the class counts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from graft.config import load_config
from graft.data.manifest import DataManifest
from graft.data.prepare import prepare_dataset
from graft.data.reference import REFERENCE_FOLDER, read_reference
from graft.errors import DatasetError

ROWS = 400
EXTREME = 1e6


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A time-split table: the oldest rows train, then val (column 'v' = -1e6), then test
    ('v' = +1e6); the train rows' 'v' lies in [0, 1)."""
    tmp = tmp_path_factory.mktemp("reference")
    rng = np.random.default_rng(0)
    t = np.arange(ROWS, dtype=np.float64)
    v = rng.uniform(size=ROWS)
    v[int(ROWS * 0.75) : int(ROWS * 0.85)] = -EXTREME  # the val rows of a 75/10/15 time split
    v[int(ROWS * 0.85) :] = EXTREME
    x = np.column_stack([rng.normal(size=ROWS), v, t]).astype(np.float32)
    np.savez(tmp / "table.npz", x=x, y=np.tile([0, 1], ROWS // 2), t=t)
    config = load_config(
        preset="tiny",
        overrides=[
            f"data.source={tmp / 'table.npz'}",
            "data.transfer.target_classes=[]",
            "data.split=time",
        ],
    )
    out = tmp / "data"
    prepare_dataset(config.data, config.seed, out)
    return out


def test_the_reference_sees_train_rows_only(prepared: Path) -> None:
    reference = read_reference(prepared / REFERENCE_FOLDER)
    manifest = DataManifest.read(prepared)
    train_rows = manifest.tasks["source"].sizes["train"]
    assert reference.train_rows == train_rows
    assert sum(reference.label_counts.values()) == train_rows
    v = reference.histograms[1]
    assert v.name == "x1"
    assert all(0.0 <= edge < 1.0 for edge in v.edges)  # no val/test extreme shaped a bin
    assert sum(v.shares) == pytest.approx(1.0)
    assert reference.sample.shape == (train_rows, 3)
    assert np.all((reference.sample[:, 1] >= 0) & (reference.sample[:, 1] < 1))
    # the time column shows which rows were sampled: the oldest 75% only
    assert reference.sample[:, 2].max() < ROWS * 0.75


def test_the_row_hashes_cover_every_prepared_row(prepared: Path) -> None:
    """new_rows counts rows the prepared dataset did not hold, in any split."""
    reference = read_reference(prepared / REFERENCE_FOLDER)
    assert reference.row_hash.dtype == np.uint64
    assert len(np.unique(reference.row_hash)) == ROWS
    assert len(reference.sample_hash) == len(reference.sample)
    assert np.isin(reference.sample_hash, reference.row_hash).all()


def test_missing_statistics_are_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="no readable reference statistics"):
        read_reference(tmp_path)
