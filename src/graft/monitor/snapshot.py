"""The new snapshot, read and validated as data-prep reads its source, and checked against
the champion's reference: the same features, and how many of its rows are new.

The monitor keeps of a snapshot what it compares: each row's drift columns
(graft.data.drift_view), class name and content hash. Under ``data.loader: streaming`` an image
folder is read one window of files at a time by data-prep's own pass
(graft.data.streaming_scan), so no pixel array of the whole folder is ever held; a Parquet
source is read whole (its drift columns are its features: the table itself)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from graft.config.data import DataConfig
from graft.data.drift_view import DriftView, drift_view, image_view
from graft.data.prepare import read_validated
from graft.data.reference import ReferenceStatistics, hash_numbers
from graft.data.sources import RawDataset
from graft.data.streaming_scan import scan_folder
from graft.data.streaming_table import is_table_source, read_whole_table
from graft.data.validation import row_hashes
from graft.errors import DatasetError


@dataclass(frozen=True)
class Snapshot:
    """A snapshot as the monitor compares it, row by row."""

    view: DriftView  # every row's drift columns
    labels: np.ndarray  # every row's class name
    hashes: np.ndarray  # every row's content hash, uint64, as graft.data.reference stores them
    kind: str
    input_shape: list[int]  # a raw row's shape
    feature_names: list[str] | None

    @classmethod
    def of(cls, raw: RawDataset) -> Snapshot:
        """The rows of a dataset read whole."""
        return cls(
            view=drift_view(raw.x, raw.kind, raw.feature_names),
            labels=np.asarray(raw.class_names)[raw.y],
            hashes=hash_numbers(row_hashes(raw.x)),
            kind=raw.kind,
            input_shape=list(raw.x.shape[1:]),
            feature_names=raw.feature_names,
        )

    @property
    def rows(self) -> int:
        return len(self.labels)

    def take(self, rows: np.ndarray) -> Snapshot:
        view = DriftView(self.view.values[rows], self.view.names, self.view.compared)
        return Snapshot(
            view,
            self.labels[rows],
            self.hashes[rows],
            self.kind,
            self.input_shape,
            self.feature_names,
        )


def read_snapshot(config: DataConfig) -> Snapshot:
    """Every row of ``config.source`` (no deduplication, no subsample), validated as
    data-prep validates it; class names default to the ids, as data-prep names them."""
    if config.loader == "streaming" and is_table_source(config.source):
        return Snapshot.of(
            read_whole_table(config.source, config.label_column, config.role_columns)
        )
    if config.loader == "streaming":
        # no sample of pixels kept, so the seed that draws it does not matter
        scan = scan_folder(config, seed=0, sample_limit=0)
        return Snapshot(
            view=image_view(scan.drift, scan.shape),
            labels=np.asarray(scan.class_names)[scan.labels],
            hashes=scan.row_hash,
            kind=scan.kind,
            input_shape=list(scan.shape),
            feature_names=None,
        )
    raw = read_validated(config)
    if not raw.class_names:
        raw.class_names = [str(c) for c in range(int(raw.y.max()) + 1)]
    return Snapshot.of(raw)


def check_comparable(
    reference: ReferenceStatistics, snapshot: Snapshot, source: str, version: str
) -> None:
    """DatasetError unless the snapshot's rows have the reference's kind, shape and columns."""
    champion = f"the champion (version {version}) was trained on"
    shape = snapshot.input_shape
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


def count_new_rows(reference: ReferenceStatistics, hashes: np.ndarray) -> int:
    """Distinct snapshot rows (``hashes``: :attr:`Snapshot.hashes`) that no row of the
    champion's prepared dataset (any split) had."""
    return int(np.isin(np.unique(hashes), reference.row_hash, invert=True).sum())
