"""The one pass a streaming data-prep makes over a Parquet source (``data.loader: streaming``).

Row group by row group, every row is read once and checked (:mod:`graft.data.streaming_table`);
what is kept per row is its place (file, row group, row index), its content hash and its class
id (and, for the monitor's reference statistics, the hash the in-memory reader would give the
row: graft.data.reference), plus the features of a seeded sample of at most
``data.streaming.near_duplicate_sample`` rows (the near-duplicate check, the report, the
reference's histograms). String labels become the sorted distinct strings' positions once the
pass has seen them all, as the in-memory reader does.

The train split's normalization statistics come from the same pass: a row's split is a function
of its hash, so the pass merges, per class, the moments (count, mean, squared deviations, min,
max) of the first copy of every row whose hash puts it in train. A task's train split is those
rows of its classes plus the val/test rows the near-duplicate check moved into train, which are
sampled rows, held. Only a subsample (``data.max_rows``, ``data.transfer.target_train_size``)
picks rows the moments cannot single out; then that task's train rows are read back, one row
group at a time. (Per-row tallies, as an image folder keeps, would be as large as a table.)
"""

from __future__ import annotations

import heapq
import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from graft.config.data import DataConfig
from graft.data.drift_view import DriftView, drift_view
from graft.data.preprocessing import scaling_statistics
from graft.data.reference import hash_numbers
from graft.data.streaming_manifest import split_keys
from graft.data.streaming_table import (
    TableColumns,
    class_ids,
    content_hashes,
    open_parquet,
    read_rows,
    row_group,
    table_files,
)
from graft.data.validation import row_hashes
from graft.errors import DatasetError

log = logging.getLogger(__name__)


@dataclass
class Moments:
    """Per-feature count, mean, sum of squared deviations, minimum and maximum, merged batch
    by batch with Chan's pairwise update: exact up to float rounding, and no cancellation when
    a column's mean is large against its spread (as a sum of squares would suffer)."""

    count: int
    mean: np.ndarray
    m2: np.ndarray
    low: np.ndarray
    high: np.ndarray

    @classmethod
    def empty(cls, width: int) -> Moments:
        zeros = np.zeros(width)
        return cls(0, zeros, zeros.copy(), np.full(width, np.inf), np.full(width, -np.inf))

    def add(self, x: np.ndarray) -> None:
        if len(x):
            part = x.astype(np.float64)
            mean = part.mean(axis=0)
            self.merge(
                Moments(
                    len(part),
                    mean,
                    ((part - mean) ** 2).sum(axis=0),
                    part.min(axis=0),
                    part.max(axis=0),
                )
            )

    def merge(self, other: Moments) -> None:
        total = self.count + other.count
        if other.count == 0:
            return
        delta = other.mean - self.mean
        self.m2 = self.m2 + other.m2 + delta**2 * self.count * other.count / total
        self.mean = self.mean + delta * other.count / total
        self.count = total
        self.low, self.high = np.minimum(self.low, other.low), np.maximum(self.high, other.high)

    def statistics(self, method: str) -> tuple[list[float], list[float]]:
        """:func:`graft.data.preprocessing.scaling_statistics` of the rows merged in."""
        if method not in ("standardize", "minmax"):  # constants, whatever the data
            return scaling_statistics(np.zeros((1, len(self.mean))), "tabular", method)
        if method == "minmax":
            center, scale = self.low, self.high - self.low
        else:
            center, scale = self.mean, np.sqrt(self.m2 / max(self.count, 1))
        scale = np.where(scale < 1e-8, 1.0, scale)
        return center.astype(float).tolist(), scale.astype(float).tolist()


@dataclass
class TableScan:
    """What the pass found: per row its place, content hash and class id; per class the
    moments of its first copies whose hash puts them in train (``tallied``)."""

    class_names: list[str]
    files: list[str]
    columns: TableColumns
    file_index: np.ndarray
    row_group: np.ndarray
    row_index: np.ndarray
    hashes: np.ndarray
    labels: np.ndarray
    tallied: np.ndarray  # bool per row: in ``moments``
    moments: dict[int, Moments]  # class id -> moments of its tallied rows
    row_hash: np.ndarray  # uint64 per row (graft.data.reference)
    sample: dict[int, np.ndarray] = field(default_factory=dict)  # position -> features
    kind: str = "tabular"

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self.columns.features),)

    @property
    def feature_names(self) -> list[str]:
        return list(self.columns.features)

    def manifest_columns(self, rows: np.ndarray) -> dict[str, Any]:
        """The manifest's columns but the label for the rows at ``rows``."""
        return {
            "uri": [self.files[i] for i in self.file_index[rows].tolist()],
            "sha256": self.hashes[rows].tolist(),
            "row_group": self.row_group[rows],
            "row_index": self.row_index[rows],
            "label_key": [self.class_names[c] for c in self.labels[rows].tolist()],
        }

    def reference_rows(self, train: np.ndarray) -> tuple[DriftView, np.ndarray]:
        """The features of the sampled rows (``data.streaming.near_duplicate_sample``, drawn
        by hash from every split) among ``train``, and their positions: a table's per-row
        columns would be the table itself, so its histograms come from this sample."""
        positions = np.array(sorted(set(self.sample) & set(train.tolist())), dtype=np.int64)
        width = len(self.columns.features)
        x = (
            np.stack([self.sample[int(p)] for p in positions])
            if len(positions)
            else np.empty((0, width), np.float32)
        )
        return drift_view(x, self.kind, self.feature_names), positions

    def scaling_statistics(self, rows: np.ndarray, method: str) -> tuple[list[float], list[float]]:
        """:func:`graft.data.preprocessing.scaling_statistics` of the rows at ``rows`` (a
        task's train split). From the pass's per-class moments when the rows are its classes'
        tallied rows plus sampled ones (the near-duplicate check moves only sampled rows into
        train); when a subsample (data.max_rows, data.transfer.target_train_size) left some
        out, the rows are read back, one row group at a time."""
        moments = Moments.empty(len(self.columns.features))
        classes = np.unique(self.labels[rows])
        tallied = np.flatnonzero(self.tallied & np.isin(self.labels, classes))
        extra = np.setdiff1d(rows, tallied)
        if np.setdiff1d(tallied, rows).size or any(int(p) not in self.sample for p in extra):
            for _, x in read_rows(self.manifest_columns(rows), self.columns):
                moments.add(x)
            return moments.statistics(method)
        for label in classes.tolist():
            moments.merge(self.moments.get(label, Moments.empty(len(self.columns.features))))
        if len(extra):
            moments.add(np.stack([self.sample[int(p)] for p in extra]))
        return moments.statistics(method)


@dataclass
class _Pass:
    """The pass's running state: per row group its arrays, the label codes, the sample, and
    per label code the moments of the first copies whose hash puts them in train."""

    limit: int
    seed: int  # the sample's
    split_seed: int  # the split's (data.split_seed, or the run's seed)
    train_from: float  # split keys at or above it are train (graft.data.splits.assign_splits)
    places: list[np.ndarray] = field(default_factory=list)  # rows x (file, group, index)
    hashes: list[str] = field(default_factory=list)
    row_hash: list[np.ndarray] = field(default_factory=list)
    codes: list[np.ndarray] = field(default_factory=list)
    keys: dict[str, int] = field(default_factory=dict)  # label key -> code, first seen first
    text: set[bool] = field(default_factory=set)
    heap: list[tuple[float, int, np.ndarray]] = field(default_factory=list)
    seen: set[str] = field(default_factory=set)  # hashes so far: later copies are not tallied
    tallied: list[np.ndarray] = field(default_factory=list)
    moments: dict[int, Moments] = field(default_factory=dict)

    def add(self, file: int, group: int, x: np.ndarray, keys: list[str]) -> None:
        start = len(self.hashes)
        hashes = content_hashes(x)
        self.hashes.extend(hashes)
        self.row_hash.append(hash_numbers(row_hashes(x)))
        codes = np.array([self.keys.setdefault(k, len(self.keys)) for k in keys], dtype=np.int64)
        self.codes.append(codes)
        place = np.empty((len(x), 3), dtype=np.int64)
        place[:, 0], place[:, 1], place[:, 2] = file, group, np.arange(len(x))
        self.places.append(place)
        self._tally(x, hashes, codes)
        sample_keys = split_keys(np.asarray(hashes), self.seed, "sample")
        for offset, key in enumerate(sample_keys.tolist()):  # max-heap on the sample key
            if len(self.heap) < self.limit:
                heapq.heappush(self.heap, (-key, start + offset, x[offset]))
            elif -self.heap[0][0] > key:
                heapq.heapreplace(self.heap, (-key, start + offset, x[offset]))

    def _tally(self, x: np.ndarray, hashes: list[str], codes: np.ndarray) -> None:
        first = np.zeros(len(hashes), dtype=bool)
        for offset, value in enumerate(hashes):
            first[offset] = value not in self.seen
            self.seen.add(value)
        train = split_keys(np.asarray(hashes), self.split_seed, "split") >= self.train_from
        tallied = first & train
        self.tallied.append(tallied)
        for code in np.unique(codes[tallied]).tolist():
            moments = self.moments.setdefault(code, Moments.empty(x.shape[1]))
            moments.add(x[tallied & (codes == code)])


def scan_table(config: DataConfig, seed: int) -> TableScan:
    """Read, check and hash every row of the Parquet source ``config.source`` once."""
    files = table_files(config.source)
    if not files:
        raise DatasetError(f"{config.source} holds no .parquet file")
    _refuse_time_order(config)
    roles = config.role_columns
    train_from = config.test_fraction + config.val_fraction  # as assign_splits cuts the keys
    state = _Pass(
        config.streaming.near_duplicate_sample, seed, config.resolved_split_seed(seed), train_from
    )
    columns: TableColumns | None = None
    for file, uri in enumerate(files):
        parquet = open_parquet(uri)
        schema = parquet.schema_arrow
        if columns is None:
            columns = TableColumns.of(schema, uri, config.label_column, roles)
        else:
            columns.check(schema, uri, roles)
        label_type = schema.field(config.label_column).type
        state.text.add(pa.types.is_string(label_type) or pa.types.is_large_string(label_type))
        for group in range(parquet.num_row_groups):
            state.add(file, group, *row_group(parquet, uri, group, columns))
    assert columns is not None
    if len(state.text) > 1:
        raise DatasetError(
            f"{config.source} has string labels in some files and numbers in others; "
            "give every file the same label type"
        )
    class_names, ids = _classes(state, text=state.text == {True}, where=config.source)
    places = np.concatenate(state.places)
    labels = ids[np.concatenate(state.codes)]
    scan = TableScan(
        class_names=class_names,
        files=files,
        columns=columns,
        file_index=places[:, 0],
        row_group=places[:, 1],
        row_index=places[:, 2],
        hashes=np.asarray(state.hashes, dtype=str),
        labels=labels,
        tallied=np.concatenate(state.tallied),
        moments={int(ids[code]): moments for code, moments in state.moments.items()},
        row_hash=np.concatenate(state.row_hash),
        sample={position: x for _, position, x in state.heap},
    )
    log.info(
        "%s: %d rows of %d features in %d files, %d classes",
        config.source,
        len(labels),
        len(columns.features),
        len(files),
        len(class_names),
    )
    return scan


def _classes(state: _Pass, text: bool, where: str) -> tuple[list[str], np.ndarray]:
    """Class names, and the class id of each label code."""
    if not state.hashes:
        raise DatasetError(f"{where} is empty; point data.source at Parquet files with rows")
    return class_ids(list(state.keys), text, where)


def _refuse_time_order(config: DataConfig) -> None:
    """As the in-memory split: rows that declare a time order are not shuffled unasked."""
    if config.time_column is not None and not config.allow_shuffled_time:
        raise DatasetError(
            f"{config.source} declares data.time_column '{config.time_column}', but "
            "data.loader=streaming splits by content hash, which shuffles time: set "
            "data.allow_shuffled_time=true if the rows are truly exchangeable, or use "
            "data.loader=memory with split: time"
        )
