"""Reference statistics: what the train rows looked like, for the monitor to compare a new
snapshot with (graft.monitor, docs/monitoring.md).

Data-prep writes them from the TRAIN split only (validation and test rows never shape them)
into ``<dataset_dir>/reference/``, and export logs that folder next to the champion's
weights, so ``models:/NAME@champion`` carries the statistics of the data it learnt from::

    reference_stats.json    per compared column: quantile bin edges and the train rows'
                            shares per bin (for the PSI); the class counts; sizes, hash, seed
    reference_sample.npz    ``values``: a seeded sample of at most 2,000 train rows as drift
                            columns (graft.data.drift_view), for the KS tests and the domain
                            classifier, and ``sample_hash``, their content hashes;
                            ``row_hash``: every prepared row's content hash (all splits), to
                            count a snapshot's new rows

A streaming data-prep (graft.data.streaming_prepare) writes the same files from its one pass
over the source: an image folder's histograms over every train file, a table's over the train
rows of its seeded sample (per-row columns would be the table itself).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from graft.data.drift_view import DriftView, drift_view
from graft.data.sources import RawDataset
from graft.data.validation import row_hashes
from graft.errors import DatasetError

REFERENCE_FOLDER = "reference"
STATS_FILE = "reference_stats.json"
SAMPLE_FILE = "reference_sample.npz"
REFERENCE_BINS = 10  # quantile bins per column: deciles, the PSI's customary binning
REFERENCE_SAMPLE_ROWS = 2000


@dataclass
class ColumnHistogram:
    """Bins ``(-inf, e0], (e0, e1], ..., (ek, inf)`` over the train rows' quantile edges, and
    a last bin for missing values; ``shares`` sum to 1."""

    name: str
    edges: list[float]
    shares: list[float]


@dataclass
class ReferenceStatistics:
    kind: str  # "image" or "tabular"
    source: str
    dataset_hash: str
    seed: int
    train_rows: int
    input_shape: list[int]  # a raw row's shape: a snapshot must match it
    feature_names: list[str] | None  # a table's columns, as read
    columns: list[str]  # the drift columns (graft.data.drift_view)
    compared: int  # the first ``compared`` columns are tested one by one
    histograms: list[ColumnHistogram]
    label_counts: dict[str, int]  # train rows per class name
    sample: np.ndarray = field(repr=False)  # sampled train rows as drift columns
    sample_hash: np.ndarray = field(repr=False)  # uint64 content hash of each sampled row
    row_hash: np.ndarray = field(repr=False)  # uint64 content hash of every prepared row


def bin_edges(values: np.ndarray, bins: int = REFERENCE_BINS) -> np.ndarray:
    """Inner quantile edges of the finite ``values``; repeated quantiles (a column with few
    distinct values) merge their bins."""
    finite = values[np.isfinite(values)]
    if len(finite) == 0:
        return np.empty(0)
    # inverted_cdf: every edge is a value the rows hold, so a column of a few integers gets
    # no empty bin between two of them
    quantiles = np.linspace(0, 1, bins + 1)[1:-1]
    return np.unique(np.quantile(finite, quantiles, method="inverted_cdf"))


def bin_counts(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Rows per bin of ``edges`` (see :class:`ColumnHistogram`), missing values last."""
    missing = np.isnan(values)
    counts = np.bincount(
        np.searchsorted(edges, values[~missing], side="left"), minlength=len(edges) + 1
    )
    return np.append(counts, missing.sum()).astype(np.int64)


def hash_numbers(hashes: np.ndarray) -> np.ndarray:
    """graft.data.validation.row_hashes' hex digests as uint64, 8 bytes a row."""
    return np.array([int(h, 16) for h in hashes], dtype=np.uint64)


def build_reference(
    raw: RawDataset,
    train: np.ndarray,
    hashes: np.ndarray,
    seed: int,
    dataset_hash: str,
    source: str,
) -> ReferenceStatistics:
    """The statistics of ``raw``'s rows at positions ``train``; ``hashes``: every prepared
    row's content hash (all splits)."""
    return reference_statistics(
        ReferenceRows(
            view=drift_view(raw.x[train], raw.kind, raw.feature_names),
            hashes_of=lambda picked: hash_numbers(row_hashes(raw.x[train[picked]])),
            labels=np.asarray(raw.class_names)[raw.y[train]],
        ),
        hash_numbers(hashes),
        ReferenceSource(
            kind=raw.kind,
            source=source,
            dataset_hash=dataset_hash,
            seed=seed,
            input_shape=list(raw.x.shape[1:]),
            feature_names=raw.feature_names,
        ),
    )


@dataclass(frozen=True)
class ReferenceRows:
    """The train rows a reference describes: the drift columns of every train row (or of a
    sample of them, where the rows are not all at hand), their content hashes on demand, and
    the class name of EVERY train row."""

    view: DriftView
    hashes_of: Callable[[np.ndarray], np.ndarray]  # rows of ``view`` -> uint64 content hashes
    labels: np.ndarray


@dataclass(frozen=True)
class ReferenceSource:
    kind: str
    source: str
    dataset_hash: str
    seed: int
    input_shape: list[int]
    feature_names: list[str] | None


def reference_statistics(
    rows: ReferenceRows, row_hash: np.ndarray, source: ReferenceSource
) -> ReferenceStatistics:
    """The histograms of ``rows.view``'s compared columns, a seeded sample of at most
    REFERENCE_SAMPLE_ROWS of its rows, the class counts; ``row_hash``: uint64 content hash of
    every prepared row (all splits)."""
    view = rows.view
    histograms = []
    for column, name in enumerate(view.compared_names):
        edges = bin_edges(view.values[:, column])
        counts = bin_counts(view.values[:, column], edges)
        histograms.append(
            ColumnHistogram(name, edges.tolist(), (counts / max(1, counts.sum())).tolist())
        )
    names, counts = np.unique(np.asarray(rows.labels, dtype=str), return_counts=True)
    rng = np.random.default_rng(source.seed)
    picked = np.sort(rng.permutation(len(view.values))[:REFERENCE_SAMPLE_ROWS])
    return ReferenceStatistics(
        kind=source.kind,
        source=source.source,
        dataset_hash=source.dataset_hash,
        seed=source.seed,
        train_rows=len(rows.labels),
        input_shape=source.input_shape,
        feature_names=source.feature_names,
        columns=view.names,
        compared=view.compared,
        histograms=histograms,
        label_counts={str(n): int(c) for n, c in zip(names, counts, strict=True)},
        sample=view.values[picked],
        sample_hash=np.asarray(rows.hashes_of(picked), dtype=np.uint64),
        row_hash=np.asarray(row_hash, dtype=np.uint64),
    )


def write_reference(reference: ReferenceStatistics, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    data = asdict(reference)
    del data["sample"], data["sample_hash"], data["row_hash"]
    (folder / STATS_FILE).write_text(json.dumps(data, indent=1))
    np.savez(
        folder / SAMPLE_FILE,
        values=reference.sample,
        sample_hash=reference.sample_hash,
        row_hash=reference.row_hash,
    )
    return folder


def read_reference(folder: Path) -> ReferenceStatistics:
    """The statistics in ``folder``; DatasetError naming the folder when they are missing or
    unreadable."""
    try:
        data = json.loads((folder / STATS_FILE).read_text())
        with np.load(folder / SAMPLE_FILE, allow_pickle=False) as archive:
            arrays = {
                "sample": archive["values"],
                "sample_hash": archive["sample_hash"],
                "row_hash": archive["row_hash"],
            }
        data["histograms"] = [ColumnHistogram(**h) for h in data["histograms"]]
        return ReferenceStatistics(**data, **arrays)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DatasetError(
            f"{folder} holds no readable reference statistics ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else 'unreadable'}); they are written by "
            "data-prep and registered by export: run the pipeline again"
        ) from None
