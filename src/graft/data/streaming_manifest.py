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

A file's split is a pure function of its content hash and the seed (:func:`split_keys`), so
copies of one file land in the same split at any scale, a file keeps its split when others
are added or removed, and no list of the whole dataset has to be shuffled. The rows of a
manifest are in the order of a second seeded key: a random order, not grouped by class, which
the workers' local shuffle buffers only have to stir.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from graft.data.splits import SPLITS
from graft.errors import DatasetError

MANIFEST_SUFFIX = ".manifest.parquet"
SCHEMA = pa.schema([("uri", pa.string()), ("sha256", pa.string()), ("label", pa.int64())])
TABLE_FIELDS = pa.schema(
    [("row_group", pa.int64()), ("row_index", pa.int64()), ("label_key", pa.string())]
)
_KEY_SCALE = float(2**64)


def manifest_path(directory: str | Path, task: str, split: str) -> Path:
    return Path(directory) / task / f"{split}{MANIFEST_SUFFIX}"


def split_keys(hashes: np.ndarray, seed: int, purpose: str) -> np.ndarray:
    """A number in [0, 1) per content hash, uniform and fixed by (seed, purpose, hash):
    ``purpose`` keeps the split, the row order and the near-duplicate sample independent."""
    keys = np.empty(len(hashes), dtype=np.float64)
    for i, value in enumerate(hashes.tolist()):
        digest = hashlib.sha256(f"{seed}:{purpose}:{value}".encode()).digest()
        keys[i] = int.from_bytes(digest[:8], "big") / _KEY_SCALE
    return keys


def assign_splits(
    hashes: np.ndarray, seed: int, val_fraction: float, test_fraction: float
) -> dict[str, np.ndarray]:
    """Positions of each split: test below ``test_fraction`` of the key range, then val, then
    train. Each file is assigned on its own, so the split sizes (and the class proportions in
    each split) match the fractions in expectation, not exactly: stratified only on average."""
    keys = split_keys(hashes, seed, "split")
    code = np.where(keys < test_fraction, 2, np.where(keys < test_fraction + val_fraction, 1, 0))
    parts = {name: np.flatnonzero(code == index) for index, name in enumerate(SPLITS)}
    for name, rows in parts.items():
        if len(rows) == 0:
            raise DatasetError(
                f"the {name} split is empty ({len(hashes)} files): add files or raise "
                "data.val_fraction / data.test_fraction"
            )
    return parts


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
