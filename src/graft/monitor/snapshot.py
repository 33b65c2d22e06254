"""The new snapshot, read and validated as data-prep reads its source, and checked against
the champion's reference: the same features, and how many of its rows are new."""

from __future__ import annotations

import numpy as np

from graft.config.data import DataConfig
from graft.data.prepare import read_validated
from graft.data.reference import ReferenceStatistics, hash_numbers
from graft.data.sources import RawDataset
from graft.data.streaming_table import is_table_source, read_whole_table
from graft.data.validation import row_hashes
from graft.errors import DatasetError


def read_snapshot(config: DataConfig) -> RawDataset:
    """Every row of ``config.source`` (no deduplication, no subsample), validated as
    data-prep validates it; class names default to the ids, as data-prep names them. A
    Parquet source of ``data.loader: streaming`` (a folder of files, say) is read as its
    data-prep reads it, but whole: the monitor compares all of a snapshot's rows."""
    if config.loader == "streaming" and is_table_source(config.source):
        roles = [c for c in (config.time_column, config.group_column) if c is not None]
        return read_whole_table(config.source, config.label_column, roles)
    raw = read_validated(config)
    if not raw.class_names:
        raw.class_names = [str(c) for c in range(int(raw.y.max()) + 1)]
    return raw


def check_comparable(
    reference: ReferenceStatistics, snapshot: RawDataset, source: str, version: str
) -> None:
    """DatasetError unless the snapshot's rows have the reference's kind, shape and columns."""
    champion = f"the champion (version {version}) was trained on"
    shape = list(snapshot.x.shape[1:])
    if snapshot.kind != reference.kind or shape != reference.input_shape:
        fix = (
            "set data.image.size and data.image.channels as they were for that training"
            if reference.kind == "image"
            else "give a snapshot with the same columns"
        )
        raise DatasetError(
            f"{source}: its rows are {snapshot.kind} of shape {shape}, but {champion} "
            f"{reference.kind} rows of shape {reference.input_shape}; {fix}"
        )
    if reference.feature_names and snapshot.feature_names != reference.feature_names:
        theirs, ours = set(reference.feature_names), set(snapshot.feature_names or [])
        raise DatasetError(
            f"{source}: its columns differ from those {champion} (missing: "
            f"{sorted(theirs - ours) or 'none'}, extra: {sorted(ours - theirs) or 'none'}, "
            "or another order); give the snapshot the training data's columns, in their order"
        )


def snapshot_hashes(snapshot: RawDataset) -> np.ndarray:
    """Each snapshot row's content hash, as the reference stores them (uint64)."""
    return hash_numbers(row_hashes(snapshot.x))


def count_new_rows(reference: ReferenceStatistics, hashes: np.ndarray) -> int:
    """Distinct snapshot rows (``hashes``: :func:`snapshot_hashes`) that no row of the
    champion's prepared dataset (any split) had."""
    return int(np.isin(np.unique(hashes), reference.row_hash, invert=True).sum())
