"""Reading the files a split manifest lists (``data.loader: streaming``): a block of them as
pixels for the training stream's Ray Data tasks, or a whole (small) split as arrays for the
stages that score a model on it (evaluate's test split, export's and tune's val split). A
Parquet source's manifest lists rows: :func:`decode_table_rows` reads their row groups.

Each file's bytes are checked against the manifest's SHA-256 before they are decoded, with the
in-memory reader's code and checks (:func:`graft.data.image_folder.decode_image`). Pixels come
out as uint8: after Pillow's conversion to L or RGB they are whole numbers 0-255, so uint8
holds them exactly at a quarter of float32's size.
"""

from __future__ import annotations

import hashlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from graft.config.data import ImageConfig
from graft.data.image_folder import decode_image
from graft.data.intake_limits import check_fits_in_memory
from graft.data.manifest import DataManifest
from graft.data.streaming_manifest import read_manifest
from graft.data.streaming_table import TableColumns, read_rows
from graft.errors import DatasetError
from graft.io import storage

READ_THREADS = 8  # files fetched at once (S3 latency overlaps)


def decode_files(
    batch: dict[str, Any], shape: tuple[int, int, int], max_pixels: int
) -> dict[str, np.ndarray]:
    """Manifest rows (``uri``, ``sha256``, ``label``) as ``x`` (N x C x H x W uint8) and
    ``y`` (int64)."""
    image = ImageConfig.model_validate(
        {"size": list(shape[1:]), "channels": shape[0], "max_pixels": max_pixels}
    )
    uris = [str(u) for u in batch["uri"]]
    contents = _read_all(uris)
    x = np.empty((len(uris), *shape), dtype=np.uint8)
    for row, (uri, expected, data) in enumerate(zip(uris, batch["sha256"], contents, strict=True)):
        if hashlib.sha256(data).hexdigest() != str(expected):
            raise DatasetError(
                f"{uri} changed after data-prep listed it (its SHA-256 differs from the split "
                "manifest's); rerun data-prep, or restore the file"
            )
        x[row] = decode_image(data, uri, shape, image)[0]
    return {"x": x, "y": np.asarray(batch["label"], dtype=np.int64)}


def _read_all(uris: list[str]) -> list[bytes]:
    """Each file's bytes, in order. S3 objects are fetched ``READ_THREADS`` at once, so their
    latencies overlap; local files are read one after the other in this thread (a pool's
    threads, started per block, cost more CPU than a local read of a small file)."""
    if not any(storage.is_s3(u) for u in uris):
        return [storage.read_bytes(u) for u in uris]
    client = storage.s3_client()
    with ThreadPoolExecutor(max_workers=READ_THREADS) as pool:
        return list(pool.map(lambda u: storage.read_bytes(u, client), uris))


def decode_table_rows(
    batch: dict[str, Any], features: list[str], label_column: str
) -> dict[str, np.ndarray]:
    """Manifest rows of a Parquet source as ``x`` (N x F float32) and ``y`` (int64), in the
    batch's order; each row group is read once and its rows' hashes and labels checked."""
    columns = TableColumns(list(features), label_column)
    x = np.empty((len(batch["uri"]), len(features)), dtype=np.float32)
    for positions, rows in read_rows(batch, columns):
        x[positions] = rows
    return {"x": x, "y": np.asarray(batch["label"], dtype=np.int64)}


def load_streamed_split(
    path: str | Path, dataset_dir: str | Path, limit: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """The (first ``limit``) files of a split manifest as float32 ``x`` and int64 ``y``, like
    an in-memory split's arrays; refused when they would not fit in memory."""
    manifest = DataManifest.read(dataset_dir)
    table = read_manifest(path)
    if limit is not None:
        table = table.slice(0, limit)
    check_fits_in_memory(str(path), 0, len(table) * int(np.prod(manifest.input_shape)))
    if manifest.kind == "tabular":
        assert manifest.feature_names is not None and manifest.label_column is not None
        rows = decode_table_rows(table.to_pydict(), manifest.feature_names, manifest.label_column)
        return rows["x"], rows["y"]
    c, h, w = manifest.input_shape
    # no pixel limit of its own: the hash check proves each file is the one data-prep
    # decoded under data.image.max_pixels
    rows = decode_files(table.to_pydict(), (c, h, w), max_pixels=2**62)
    return rows["x"].astype(np.float32), rows["y"]
