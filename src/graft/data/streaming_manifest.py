"""Split manifests of a streamed dataset (``data.loader: streaming``): the examples of one
task and split listed as files, not decoded into arrays.

Each manifest is a Parquet file ``<task>/<split>.manifest.parquet`` with one row per example:

    uri      where the file is: a local path or s3://bucket/key
    sha256   of the file's bytes (the training stream checks it before decoding)
    label    the task's class id, 0..K-1

A Parquet source's manifest lists rows, not files, with three more columns (the decoding
step reads each listed row group once and picks its rows):

    row_group   the row group of ``uri`` the row is in
    row_index   its position in that row group
    label_key   its label as the file holds it (the string, or the integer in decimal)

and ``sha256`` is the hash of the row's float32 features (:mod:`graft.data.streaming_table`).

A file's split is a pure function of its content hash and the seed
(:func:`graft.data.splits.assign_splits`, the in-memory data-prep's too), so
copies of one file land in the same split at any scale, a file keeps its split when others
are added or removed, and no list of the whole dataset has to be shuffled. The rows of a
manifest are in the order of a second seeded key: a random order, not grouped by class, which
the workers' local shuffle buffers only have to stir.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

# the keyed split is one implementation for both data-preps; the streaming modules keep
# importing its names from here
from graft.data.splits import assign_splits as assign_splits
from graft.data.splits import split_keys as split_keys
from graft.errors import DatasetError

MANIFEST_SUFFIX = ".manifest.parquet"
SCHEMA = pa.schema([("uri", pa.string()), ("sha256", pa.string()), ("label", pa.int64())])
TABLE_FIELDS = pa.schema(
    [("row_group", pa.int64()), ("row_index", pa.int64()), ("label_key", pa.string())]
)


def manifest_path(directory: str | Path, task: str, split: str) -> Path:
    return Path(directory) / task / f"{split}{MANIFEST_SUFFIX}"


def stream_order(positions: np.ndarray, hashes: np.ndarray, seed: int) -> np.ndarray:
    """``positions`` in the seeded random order a manifest lists them in."""
    keys = split_keys(hashes[positions], seed, "order")
    return positions[np.argsort(keys, kind="stable")]


def write_manifest(path: Path, columns: dict[str, Any], labels: np.ndarray) -> None:
    """``columns``: ``uri`` and ``sha256``, and for a table's rows the TABLE_FIELDS too."""
    path.parent.mkdir(parents=True, exist_ok=True)
    schema = SCHEMA
    if "row_group" in columns:
        schema = pa.schema([*SCHEMA, *TABLE_FIELDS])
    data = {**columns, "label": np.asarray(labels, dtype=np.int64)}
    pq.write_table(pa.table({name: data[name] for name in schema.names}, schema=schema), path)


def read_manifest(path: str | Path) -> pa.Table:
    """A split manifest; refused when it is not one (an older dataset directory, say)."""
    try:
        table = pq.read_table(path)
    except (OSError, pa.ArrowInvalid) as exc:
        raise DatasetError(
            f"{path} is not a readable split manifest ({exc}); rerun data-prep with "
            "data.loader=streaming"
        ) from None
    if not set(SCHEMA.names) <= set(table.column_names):
        raise DatasetError(
            f"{path} lacks the columns {SCHEMA.names} of a split manifest; rerun data-prep "
            "with data.loader=streaming"
        )
    extra = [name for name in TABLE_FIELDS.names if name in table.column_names]
    return table.select([*SCHEMA.names, *extra])
