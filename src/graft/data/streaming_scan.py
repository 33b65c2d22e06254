"""The one pass a streaming data-prep makes over an image folder (``data.loader: streaming``).

Every file is read once, in a bounded window of files at a time: its bytes are hashed
(SHA-256, the key of the duplicate check and of the split) and decoded with the same code and
checks as the in-memory reader (readable, size, mode, pixel limit). What is kept per file is a
few numbers: its hash and, per channel, the sum, the sum of squares, the minimum and the
maximum of its pixels, from which the train split's normalization statistics are computed
exactly whichever files end up in it; and for the monitor's reference statistics
(graft.data.reference), the hash of its decoded pixels (as the in-memory reader's rows are
hashed) and its drift columns (graft.data.drift_view: a few dozen numbers). Decoded pixels are
kept only for a seeded sample of at most ``data.streaming.near_duplicate_sample`` files (the
near-duplicate check and the report's gallery).
"""

from __future__ import annotations

import hashlib
import heapq
import logging
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from graft.config.data import DataConfig
from graft.data.drift_view import DriftView, drift_view, image_column_names, image_view
from graft.data.image_folder import (
    GREY_MODES,
    IMAGE_SUFFIXES,
    decode_image,
    list_image_files,
    target_shape,
)
from graft.data.preprocessing import scaling_statistics
from graft.data.reference import hash_numbers
from graft.data.streaming_manifest import split_keys
from graft.data.validation import row_hashes
from graft.errors import DatasetError
from graft.io import storage

log = logging.getLogger(__name__)

WINDOW = 256  # files read and decoded at once: bounds what the pass holds beyond its tallies
DRIFT_BATCH_BYTES = 32 * 2**20  # at most, of decoded pixels held for their drift columns


@dataclass(frozen=True)
class StreamEntry:
    uri: str  # what the training stream reads: a local path or s3://bucket/key
    shown: str  # the name the user knows, in error messages
    label: int


@dataclass
class FolderScan:
    """What the pass found: per file its hash and per-channel pixel tallies (N x C)."""

    class_names: list[str]
    entries: list[StreamEntry]
    shape: tuple[int, int, int]
    hashes: np.ndarray
    sums: np.ndarray
    squares: np.ndarray
    minimum: np.ndarray
    maximum: np.ndarray
    row_hash: np.ndarray  # uint64 hash of each file's decoded pixels (graft.data.reference)
    drift: np.ndarray  # each file's drift columns (graft.data.drift_view)
    modes: Counter[str] = field(default_factory=Counter)
    sample: dict[int, np.ndarray] = field(default_factory=dict)  # position -> pixels
    kind: str = "image"
    feature_names: list[str] | None = None

    @property
    def labels(self) -> np.ndarray:
        return np.array([e.label for e in self.entries], dtype=np.int64)

    def manifest_columns(self, rows: np.ndarray) -> dict[str, Any]:
        """The manifest's columns but the label for the files at ``rows``."""
        return {
            "uri": [self.entries[p].uri for p in rows.tolist()],
            "sha256": self.hashes[rows].tolist(),
        }

    def scaling_statistics(self, rows: np.ndarray, method: str) -> tuple[list[float], list[float]]:
        return streamed_scaling_statistics(self, rows, method)

    def reference_rows(self, train: np.ndarray) -> tuple[DriftView, np.ndarray]:
        """The drift columns of every file at ``train``, and those positions."""
        return image_view(self.drift[train], self.shape), train


def _s3_entries(source: str) -> tuple[list[str], list[StreamEntry]]:
    """The image files under an s3:// prefix, by the rules of a local image folder."""
    root = source.rstrip("/")
    keys = [
        k for k in storage.list_s3_keys(source) if not any(p.startswith(".") for p in k.split("/"))
    ]
    stray = [k for k in keys if "/" not in k]
    if stray:
        raise DatasetError(
            f"{root}/{stray[0]} is a file at the top of the image folder, where only class "
            "folders belong; move it into a class folder or out of the folder"
        )
    classes = sorted({k.split("/", 1)[0] for k in keys})
    if len(classes) < 2:
        raise DatasetError(
            f"{root} holds {len(classes)} class folder(s) {classes}; an image folder needs one "
            "subfolder per class and at least 2 classes"
        )
    labels = {name: label for label, name in enumerate(classes)}
    entries = []
    for key in keys:  # sorted, so class by class as a local folder lists them
        if not key.lower().endswith(IMAGE_SUFFIXES):
            raise DatasetError(
                f"{root}/{key} is not a .png/.jpg/.jpeg image; remove it or convert it"
            )
        entries.append(StreamEntry(f"{root}/{key}", f"{root}/{key}", labels[key.split("/", 1)[0]]))
    return classes, entries


def list_entries(source: str) -> tuple[list[str], list[StreamEntry]]:
    """Class names and every image file of the folder ``source`` (local or s3://)."""
    if storage.is_s3(source):
        return _s3_entries(source)
    root = Path(source)
    if not root.is_dir():
        raise DatasetError(
            f"{source} is not a folder; data.loader=streaming reads an image folder (one "
            "subfolder per class) or Parquet (a .parquet file or a folder of them), locally or "
            "under s3://"
        )
    classes, files = list_image_files(root, source.rstrip("/"))
    return classes, [StreamEntry(str(f.path), f.shown, f.label) for f in files]


def _read_window(entries: list[StreamEntry], threads: int) -> Iterator[bytes]:
    """The files' bytes, in order, ``threads`` reads at a time (S3 latency overlaps)."""
    client: Any = storage.s3_client() if any(storage.is_s3(e.uri) for e in entries) else None
    with ThreadPoolExecutor(max_workers=threads) as pool:
        yield from pool.map(lambda e: storage.read_bytes(e.uri, client), entries)


def scan_folder(config: DataConfig, seed: int, sample_limit: int | None = None) -> FolderScan:
    """Read, hash and decode every file of the image folder ``config.source`` once, keeping
    the pixels of at most ``sample_limit`` files (default
    ``data.streaming.near_duplicate_sample``; the monitor keeps none)."""
    classes, entries = list_entries(config.source)
    first = storage.read_bytes(entries[0].uri)
    shape = target_shape(first, entries[0].shown, config.image)
    count, channels = len(entries), shape[0]
    scan = FolderScan(
        class_names=classes,
        entries=entries,
        shape=shape,
        hashes=np.empty(count, dtype=object),
        sums=np.zeros((count, channels)),
        squares=np.zeros((count, channels)),
        minimum=np.zeros((count, channels)),
        maximum=np.zeros((count, channels)),
        row_hash=np.zeros(count, dtype=np.uint64),
        drift=np.zeros((count, len(image_column_names(shape)))),
    )
    heap: list[tuple[float, int, np.ndarray]] = []  # the sample: max-heap on the sample key
    limit = config.streaming.near_duplicate_sample if sample_limit is None else sample_limit
    batch = _DriftBatch(scan)
    for start in range(0, count, WINDOW):
        window = entries[start : start + WINDOW]
        for offset, data in enumerate(_read_window(window, config.streaming.scan_threads)):
            position = start + offset
            scan.hashes[position] = hashlib.sha256(data).hexdigest()
            pixels, mode = decode_image(data, window[offset].shown, shape, config.image)
            _tally(scan, position, pixels, mode)
            batch.add(position, pixels)
            key = float(split_keys(scan.hashes[position : position + 1], seed, "sample")[0])
            if len(heap) < limit:
                heapq.heappush(heap, (-key, position, pixels))
            elif heap and -heap[0][0] > key:
                heapq.heapreplace(heap, (-key, position, pixels))
        log.debug("streaming scan: %d / %d files", min(start + WINDOW, count), count)
    batch.flush()
    scan.hashes = scan.hashes.astype(str)
    scan.sample = {position: pixels for _, position, pixels in heap}
    _warn_mixed_modes(scan, config)
    log.info(
        "%s: %d images in %d classes, streamed as %d x %d x %d",
        config.source,
        count,
        len(classes),
        *shape,
    )
    return scan


@dataclass
class _DriftBatch:
    """Decoded images waiting for their drift columns and pixel hashes, computed a batch at a
    time: image by image, numpy's call overhead made the columns cost 8 times as much (122 us
    against 16 us for a 28 x 28 image)."""

    scan: FolderScan
    positions: list[int] = field(default_factory=list)
    pixels: list[np.ndarray] = field(default_factory=list)
    held: int = 0  # bytes of decoded pixels

    def add(self, position: int, pixels: np.ndarray) -> None:
        self.positions.append(position)
        self.pixels.append(pixels)
        self.held += pixels.nbytes
        if self.held >= DRIFT_BATCH_BYTES or len(self.positions) >= WINDOW:
            self.flush()

    def flush(self) -> None:
        if not self.positions:
            return
        images, rows = np.stack(self.pixels), np.asarray(self.positions)
        self.scan.drift[rows] = drift_view(images, "image").values
        self.scan.row_hash[rows] = hash_numbers(row_hashes(images))
        self.positions, self.pixels, self.held = [], [], 0


def _tally(scan: FolderScan, position: int, pixels: np.ndarray, mode: str) -> None:
    flat = pixels.reshape(pixels.shape[0], -1).astype(np.float64)
    scan.sums[position] = flat.sum(axis=1)
    scan.squares[position] = (flat * flat).sum(axis=1)
    scan.minimum[position] = flat.min(axis=1)
    scan.maximum[position] = flat.max(axis=1)
    scan.modes[mode] += 1


def _warn_mixed_modes(scan: FolderScan, config: DataConfig) -> None:
    if len({mode in GREY_MODES for mode in scan.modes}) > 1:  # only with data.image.channels set
        log.warning(
            "%s mixes image modes %s; every image was converted to %s (data.image.channels=%d)",
            config.source,
            dict(scan.modes),
            "greyscale" if scan.shape[0] == 1 else "RGB",
            scan.shape[0],
        )


def streamed_scaling_statistics(
    scan: FolderScan, rows: np.ndarray, method: str
) -> tuple[list[float], list[float]]:
    """:func:`graft.data.preprocessing.scaling_statistics` of the images at ``rows`` (the
    train split), from the per-file tallies instead of the pixels: the same figures up to
    float rounding (float64 sums here, float32 arrays there)."""
    if method not in ("standardize", "minmax"):  # constants, whatever the data
        return scaling_statistics(np.zeros((1, scan.shape[0], 1, 1)), "image", method)
    if method == "minmax":
        center = scan.minimum[rows].min(axis=0)
        scale = scan.maximum[rows].max(axis=0) - center
    else:
        pixels = len(rows) * scan.shape[1] * scan.shape[2]
        center = scan.sums[rows].sum(axis=0) / pixels
        variance = scan.squares[rows].sum(axis=0) / pixels - center * center
        scale = np.sqrt(np.maximum(variance, 0.0))
    scale = np.where(scale < 1e-8, 1.0, scale)
    return center.astype(float).tolist(), scale.astype(float).tolist()
