"""Parquet rows for ``data.loader: streaming``: the files of a Parquet source, and one row
group at a time read as checked float32 features and label keys.

A source is a ``.parquet`` file or a folder (an s3:// prefix) of them, read one row group at a
time through pyarrow (an S3 object is read by ranges, never downloaded whole). Every row
group passes the in-memory reader's checks (:mod:`graft.data.sources`): the label column is
there, the features are real numbers (not bool, not text), no NaN or infinity (streaming has
no train medians to fill with), integer labels are class ids. A row's content hash is the
SHA-256 of its float32 feature bytes, the values training sees: it keys the duplicate check
and the split, as a file's bytes do for an image folder. Its label travels beside it as a
*label key* (the string, or the integer in decimal), so a relabelled row is caught too.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from graft.config.data import MAX_CLASS_ID
from graft.data.intake_limits import check_fits_in_memory
from graft.data.sources import RawDataset, integer_labels
from graft.errors import DatasetError, StorageError
from graft.io import storage

PARQUET_SUFFIX = ".parquet"


def _hidden(relative: str) -> bool:
    """Spark's and pyarrow's bookkeeping (_SUCCESS, _metadata, .crc files) is not data."""
    return any(part.startswith((".", "_")) for part in relative.split("/"))


def _listed(source: str) -> list[str]:
    """Every data file under a folder or prefix, as uris, sorted."""
    root = source.rstrip("/")
    if storage.is_s3(source):
        return [f"{root}/{key}" for key in storage.list_s3_keys(source) if not _hidden(key)]
    folder = Path(source)
    if not folder.is_dir():
        return []
    found = (p for p in folder.rglob("*") if p.is_file())
    return sorted(str(p) for p in found if not _hidden(p.relative_to(folder).as_posix()))


def is_table_source(source: str) -> bool:
    """A .parquet file, or a folder (s3:// prefix) whose files include .parquet ones."""
    if source.lower().rstrip("/").endswith(PARQUET_SUFFIX):
        return True
    return any(uri.lower().endswith(PARQUET_SUFFIX) for uri in _listed(source))


def table_files(source: str) -> list[str]:
    """The Parquet files of ``source``; refused when a folder mixes in other files. A folder
    named ``x.parquet`` (as Spark writes one) is a folder."""
    files = _listed(source)
    if not files and source.lower().rstrip("/").endswith(PARQUET_SUFFIX):
        return [source.rstrip("/")]
    stray = [uri for uri in files if not uri.lower().endswith(PARQUET_SUFFIX)]
    if stray:
        raise DatasetError(
            f"{stray[0]} is not a .parquet file, in the Parquet folder {source}; a streamed "
            "table reads only .parquet files: move it out"
        )
    return files


def open_parquet(uri: str) -> pq.ParquetFile:
    try:
        return pq.ParquetFile(storage.arrow_input_file(uri))
    except StorageError:
        raise
    except Exception as exc:  # pyarrow raises several types for a file that is not Parquet
        raise DatasetError(f"{uri} is not a readable Parquet file: {exc}") from None


@dataclass(frozen=True)
class TableColumns:
    """The columns every file must share: the features, in order, and the label."""

    features: list[str]
    label: str

    @classmethod
    def of(cls, schema: pa.Schema, uri: str, label: str, roles: list[str]) -> TableColumns:
        """The feature columns of a file's schema: all but the label and ``roles``."""
        if label not in schema.names:
            raise DatasetError(
                f"{uri} has no label column '{label}' (columns: {schema.names}); set "
                "data.label_column"
            )
        # pandas keeps a frame's index as a column; the in-memory reader restores it as the
        # index, so it is no feature there either
        pandas = schema.pandas_metadata or {}
        index = [c for c in pandas.get("index_columns", []) if isinstance(c, str)]
        skipped = {label, *roles, *index}
        features = [name for name in schema.names if name not in skipped]
        non_numeric = [
            name
            for name in features
            if not (
                pa.types.is_integer(schema.field(name).type)
                or pa.types.is_floating(schema.field(name).type)
            )
        ]
        if non_numeric:
            raise DatasetError(
                f"{uri}: columns {non_numeric} are not real numbers; encode them before training"
            )
        if not features:
            raise DatasetError(f"{uri} has no feature columns; a model needs at least one input")
        return cls(features, label)

    def check(self, schema: pa.Schema, uri: str, roles: list[str]) -> None:
        """Refuse a file whose columns differ from the first file's."""
        found = TableColumns.of(schema, uri, self.label, roles)
        if found.features != self.features:
            raise DatasetError(
                f"{uri} has the feature columns {found.features}, the first file "
                f"{self.features}; every file of a Parquet source needs the same columns"
            )


def row_group(
    parquet: pq.ParquetFile, uri: str, group: int, columns: TableColumns
) -> tuple[np.ndarray, list[str]]:
    """Row group ``group`` of a file as float32 features (N x F) and label keys."""
    meta = parquet.metadata.row_group(group)
    check_fits_in_memory(
        f"{uri} row group {group}", meta.total_byte_size, meta.num_rows * len(columns.features)
    )
    table = parquet.read_row_group(group, columns=[*columns.features, columns.label])
    x = table.select(columns.features).to_pandas().to_numpy(dtype=np.float32, na_value=np.nan)
    where = f"{uri} row group {group}"
    bad = ~np.isfinite(x)
    if bad.any():
        rows = np.flatnonzero(bad.any(axis=1))[:5].tolist()
        raise DatasetError(
            f"{where}: {int(bad.sum())} NaN/inf values in the features (rows {rows}); drop or "
            "impute them (data.loader=streaming cannot fill NaNs; data.loader=memory with "
            "data.missing_values=fill_median can)"
        )
    return x, label_keys(table.column(columns.label), where)


def read_whole_table(source: str, label_column: str, roles: list[str]) -> RawDataset:
    """Every row of a Parquet source (a file, or a folder of them) in memory, checked as the
    streaming pass checks it, class names as it names them (sorted strings, or the ids): for
    the monitor, which compares a snapshot as a whole (graft.monitor.snapshot)."""
    files = table_files(source)
    if not files:
        raise DatasetError(f"{source} holds no .parquet file")
    parquets = [open_parquet(uri) for uri in files]
    columns = TableColumns.of(parquets[0].schema_arrow, files[0], label_column, roles)
    for parquet, uri in zip(parquets[1:], files[1:], strict=True):
        columns.check(parquet.schema_arrow, uri, roles)
    rows = sum(parquet.metadata.num_rows for parquet in parquets)
    cells = rows * len(columns.features)
    check_fits_in_memory(source, 4 * cells, cells)
    parts, keys = [], []
    for parquet, uri in zip(parquets, files, strict=True):
        for group in range(parquet.num_row_groups):
            x, group_keys = row_group(parquet, uri, group, columns)
            parts.append(x)
            keys.extend(group_keys)
    if not keys:
        raise DatasetError(f"{source} is empty; point data.source at Parquet files with rows")
    label_type = parquets[0].schema_arrow.field(label_column).type
    distinct = list(dict.fromkeys(keys))
    class_names, ids = class_ids(
        distinct, pa.types.is_string(label_type) or pa.types.is_large_string(label_type), source
    )
    code = {key: index for index, key in enumerate(distinct)}
    return RawDataset(
        x=np.concatenate(parts),
        y=ids[np.array([code[key] for key in keys], dtype=np.int64)],
        class_names=class_names,
        kind="tabular",
        feature_names=list(columns.features),
    )


def class_ids(keys: list[str], text: bool, where: str) -> tuple[list[str], np.ndarray]:
    """Class names, and the class id of each of the distinct label ``keys``: the sorted
    strings' places, as the in-memory reader numbers them, or the integers themselves."""
    if text:
        names = sorted(keys)
        order = {name: i for i, name in enumerate(names)}
        ids = np.array([order[k] for k in keys], dtype=np.int64)
    else:
        ids = np.array([int(k) for k in keys], dtype=np.int64)
        if ids.max() > MAX_CLASS_ID:
            raise DatasetError(
                f"{where}: label {int(ids.max())} is not a class id: ids run 0..K-1 (at most "
                f"{MAX_CLASS_ID}); encode the labels as 0..K-1"
            )
        names = [str(c) for c in range(int(ids.max()) + 1)]
    if len(keys) < 2:
        raise DatasetError(f"{where}: only one class ({keys}) in the labels; need at least 2")
    return names, ids


def label_keys(column: pa.ChunkedArray, where: str) -> list[str]:
    """Each row's label as text: the string itself, or an integer class id in decimal."""
    if column.null_count:
        missing = np.flatnonzero(column.is_null().to_numpy(zero_copy_only=False))[:5].tolist()
        raise DatasetError(
            f"{where}: {column.null_count} rows have no label (rows {missing}); drop them or "
            "fill them in"
        )
    if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
        return [str(value) for value in column.to_pylist()]
    ids = integer_labels(column.to_numpy(zero_copy_only=False), where)
    if (ids < 0).any():
        raise DatasetError(f"{where}: negative labels; labels must be class ids 0..K-1")
    return [str(value) for value in ids.tolist()]


def content_hashes(x: np.ndarray) -> list[str]:
    """SHA-256 of each row's float32 feature bytes."""
    rows = np.ascontiguousarray(x, dtype=np.float32)
    return [hashlib.sha256(row.tobytes()).hexdigest() for row in rows]


def group_rows(uris: list[str], groups: list[int]) -> Iterator[tuple[str, int, np.ndarray]]:
    """(uri, row group, positions) for each row group the rows name, in first-seen order."""
    found: dict[tuple[str, int], list[int]] = {}
    for position, key in enumerate(zip(uris, groups, strict=True)):
        found.setdefault(key, []).append(position)
    for (uri, group), positions in found.items():
        yield uri, group, np.asarray(positions, dtype=np.int64)


def read_rows(
    batch: dict[str, Any], columns: TableColumns
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """The manifest rows of ``batch`` (uri, row_group, row_index, sha256, label_key) as
    (positions in the batch, float32 features), one row group at a time; a row whose content
    or label changed since data-prep listed it is refused, naming its file."""
    uris = [str(u) for u in batch["uri"]]
    groups = [int(g) for g in batch["row_group"]]
    for uri, group, positions in group_rows(uris, groups):
        x, keys = row_group(open_parquet(uri), uri, group, columns)
        index = np.asarray(batch["row_index"], dtype=np.int64)[positions]
        if len(index) and index.max() >= len(x):
            raise DatasetError(
                f"{uri} row group {group} has {len(x)} rows, fewer than data-prep listed; "
                "rerun data-prep, or restore the file"
            )
        x = x[index]
        expected = [str(batch["sha256"][p]) for p in positions.tolist()]
        labels = [str(batch["label_key"][p]) for p in positions.tolist()]
        if content_hashes(x) != expected or [keys[i] for i in index.tolist()] != labels:
            raise DatasetError(
                f"{uri} changed after data-prep listed it (a row of row group {group} differs "
                "from the split manifest's hash or label); rerun data-prep, or restore the file"
            )
        yield positions, x
