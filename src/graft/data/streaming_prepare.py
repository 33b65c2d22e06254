"""data-prep for data larger than memory (``data.loader: streaming``): split manifests, not
arrays.

The dataset directory holds what the in-memory data-prep writes, with one difference: each
task's ``<split>.npz`` is a ``<split>.manifest.parquet`` listing files (see
:mod:`graft.data.streaming_manifest`), and the test manifests go to the sealed test-split
directory. The checks, and how far each one holds at scale:

* exact duplicates: exact, over every file (SHA-256 of its bytes; of a table row's float32
  features); the first copy in listing order is kept, and copies share their split anyway
  because the split follows the hash;
* cross-split disjointness: exact, over every file's hash;
* normalization statistics: exact (up to float rounding), from the train split only, summed
  from per-file tallies taken in the one pass over an image folder
  (:mod:`graft.data.streaming_scan`), or merged over a table's train rows read back by row
  group (:mod:`graft.data.streaming_table_scan`);
* near duplicates: approximate. Only a seeded sample of ``data.streaming.near_duplicate_sample``
  files (spread over all splits) is compared pairwise, so a pair is found only when both files
  are in the sample: with a sample share ``s`` of the files, about ``s**2`` of the pairs are
  looked at. The report says so and gives the sample size;
* stratification: in expectation only; each file's split is drawn from its hash alone, so the
  class proportions of each split follow the fractions up to binomial noise;
* single-feature leakage (tables): approximate, the in-memory check on the same seeded sample's
  train and val rows (a feature equal to the label scores 1 on any sample; one that nearly
  gives the label away may score either side of ``data.leakage_threshold``);
* the report's histograms and gallery show the sample's train files.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from graft.config.data import DataConfig
from graft.data.drift_view import DriftView
from graft.data.holdout import write_split_records
from graft.data.manifest import DataManifest, TaskInfo
from graft.data.near_duplicates import NearDuplicateReport, resolve_near_duplicates
from graft.data.quality import (
    MAX_LEAKAGE_FEATURES,
    QualityReport,
    apply_leakage_policy,
    column_names,
    imbalance_finding,
    leakage_findings,
)
from graft.data.reference import (
    REFERENCE_FOLDER,
    ReferenceRows,
    ReferenceSource,
    ReferenceStatistics,
    reference_statistics,
    write_reference,
)
from graft.data.report import SplitSummary, write_report
from graft.data.sources import RawDataset
from graft.data.splits import (
    SPLITS,
    SplitResult,
    check_split_labels,
)
from graft.data.streaming_manifest import (
    assign_splits,
    manifest_path,
    stream_order,
    write_manifest,
)
from graft.data.streaming_scan import list_entries, scan_folder
from graft.data.streaming_table import (
    TableColumns,
    is_table_source,
    open_parquet,
    table_files,
)
from graft.data.streaming_table_scan import scan_table
from graft.data.tasks import remapped_labels, stratified_subsample, task_labels
from graft.data.validation import (
    DuplicateReport,
    assert_disjoint,
    validate_target_classes,
)
from graft.errors import DatasetError

log = logging.getLogger(__name__)

SPLIT_STRATEGY = "hash"  # each file's split drawn from its content hash and the seed


class StreamScan(Protocol):
    """What the one pass over a source found, per example (a file, or a table's row): an image
    folder's :class:`~graft.data.streaming_scan.FolderScan` or a Parquet source's
    :class:`~graft.data.streaming_table_scan.TableScan`."""

    class_names: list[str]
    hashes: np.ndarray
    row_hash: np.ndarray  # uint64, as graft.data.reference hashes the in-memory reader's rows
    sample: dict[int, np.ndarray]
    kind: str

    @property
    def labels(self) -> np.ndarray: ...
    @property
    def shape(self) -> tuple[int, ...]: ...
    @property
    def feature_names(self) -> list[str] | None: ...
    def manifest_columns(self, rows: np.ndarray) -> dict[str, Any]: ...
    def scaling_statistics(
        self, rows: np.ndarray, method: str
    ) -> tuple[list[float], list[float]]: ...
    def reference_rows(self, train: np.ndarray) -> tuple[DriftView, np.ndarray]: ...


def prepare_streaming(config: DataConfig, seed: int, out: Path, holdout: Path) -> DataManifest:
    """Scan ``config.source`` once and write the split manifests, ``splits.json``,
    ``manifest.json`` and the reports to ``out``, the test manifests to ``holdout``."""
    scan: StreamScan = (
        scan_table(config, seed) if is_table_source(config.source) else scan_folder(config, seed)
    )
    labels = scan.labels
    validate_target_classes(
        _label_rows(scan, labels), config.transfer.target_classes, config.source
    )
    kept, duplicates = _first_copies(scan.hashes, labels)
    kept = kept[stratified_subsample(labels[kept], config.max_rows, seed)]
    split_seed = config.resolved_split_seed(seed)
    parts = assign_splits(scan.hashes[kept], split_seed, config.val_fraction, config.test_fraction)
    result = SplitResult(
        SPLIT_STRATEGY, {name: kept[rows] for name, rows in parts.items()}, seed=split_seed
    )
    check_split_labels(labels, result)
    result.indices, near_dropped, near_report = _near_duplicates(scan, result.indices, config)
    check_split_labels(labels, result)
    assert_disjoint({name: scan.hashes[rows] for name, rows in result.indices.items()})
    quality = _quality(scan, kept, result.indices, config)  # leakage may refuse: nothing written
    manifest = DataManifest(
        dataset_hash=_dataset_hash(scan, np.sort(np.concatenate(list(result.indices.values())))),
        source=config.source,
        kind=scan.kind,
        input_shape=list(scan.shape),
        num_rows=len(kept),
        duplicates=duplicates,
        split_strategy=SPLIT_STRATEGY,
        normalize=config.normalize,
        near_duplicates_found=near_report.found,
        loader="streaming",
        feature_names=scan.feature_names,
        label_column=config.label_column if scan.kind == "tabular" else None,
    )
    task_positions = {}
    for task, task_classes in task_labels(labels[kept], config.transfer.target_classes).items():
        manifest.tasks[task], task_positions[task] = _write_task(
            scan, task, task_classes, result, config, seed, out, holdout
        )
    dropped = {"near_duplicates": near_dropped}
    manifest.warnings.extend(quality.warnings)
    for warning in manifest.warnings:
        log.warning("data-prep: %s", warning)
    row_ids = np.arange(len(scan.hashes))  # row ids are positions in the listing
    write_split_records(
        manifest, result, row_ids, scan.hashes, dropped, task_positions, seed, out, holdout
    )
    _write_reports(scan, manifest, quality, result, dropped, near_report, out)
    write_reference(
        streamed_reference(scan, result.indices, seed, manifest.dataset_hash, config.source),
        out / REFERENCE_FOLDER,
    )
    log.info("data-prep (streaming): %d files, split manifests in %s", len(kept), out)
    return manifest


def check_streaming_source(config: DataConfig) -> None:
    """A cheap look before a run: the files are listed, a table's first file's columns
    checked; nothing is read whole (the source may be larger than memory)."""
    if not is_table_source(config.source):
        list_entries(config.source)
        return
    files = table_files(config.source)
    if not files:
        raise DatasetError(f"{config.source} holds no .parquet file")
    roles = config.role_columns
    TableColumns.of(open_parquet(files[0]).schema_arrow, files[0], config.label_column, roles)


def _label_rows(scan: StreamScan, labels: np.ndarray) -> RawDataset:
    """The files as a RawDataset of labels only (no features), for the label checks."""
    return RawDataset(
        x=np.empty((len(labels), 0), np.float32),
        y=labels,
        class_names=scan.class_names,
        kind=scan.kind,
    )


def _first_copies(hashes: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, DuplicateReport]:
    """Positions of the first file of each content hash, and what the copies were."""
    _, first = np.unique(hashes, return_index=True)
    kept = np.sort(first)
    label_sets: dict[str, set[int]] = {}
    for value, label in zip(hashes.tolist(), labels.tolist(), strict=True):
        label_sets.setdefault(value, set()).add(label)
    conflicting = sum(1 for found in label_sets.values() if len(found) > 1)
    return kept, DuplicateReport(len(hashes) - len(kept), conflicting)


def _near_duplicates(
    scan: StreamScan, splits: dict[str, np.ndarray], config: DataConfig
) -> tuple[dict[str, np.ndarray], np.ndarray, NearDuplicateReport]:
    """The in-memory check (:func:`resolve_near_duplicates`) on the sampled files, its
    verdicts applied to the whole split lists."""
    split_of = {int(p): name for name, rows in splits.items() for p in rows}
    sampled = np.array(sorted(p for p in scan.sample if p in split_of), dtype=np.int64)
    x = np.stack([scan.sample[int(p)] for p in sampled]) if len(sampled) else np.empty((0, 1))
    local = {name: np.flatnonzero([split_of[int(p)] == name for p in sampled]) for name in SPLITS}
    new_local, dropped_local, report = resolve_near_duplicates(
        x, local, sampled, config.near_duplicate_threshold, config.near_duplicate_policy
    )
    report.sampled_rows = len(sampled)
    moved = {int(sampled[i]): name for name, rows in new_local.items() for i in rows}
    moved = {p: name for p, name in moved.items() if split_of[p] != name}
    dropped = sampled[dropped_local]
    gone = set(dropped.tolist()) | set(moved)
    new_splits = {
        name: np.array([p for p in rows if int(p) not in gone], np.int64)
        for name, rows in splits.items()
    }
    for position, name in moved.items():
        new_splits[name] = np.sort(np.append(new_splits[name], position))
    return new_splits, np.sort(dropped), report


def streamed_reference(
    scan: StreamScan, splits: dict[str, np.ndarray], seed: int, dataset_hash: str, source: str
) -> ReferenceStatistics:
    """What the monitor compares a later snapshot with (graft.data.reference), from the train
    split only: an image folder's histograms over every train file (the pass kept each file's
    drift columns), a table's over the sampled train rows; the class counts over every train
    row; the content hash of every kept row."""
    train = splits["train"]
    view, positions = scan.reference_rows(train)
    rows = ReferenceRows(
        view=view,
        hashes_of=lambda picked: scan.row_hash[positions[picked]],
        labels=np.asarray(scan.class_names)[scan.labels[train]],
    )
    kept = np.sort(np.concatenate(list(splits.values())))
    return reference_statistics(
        rows,
        scan.row_hash[kept],
        ReferenceSource(
            kind=scan.kind,
            source=source,
            dataset_hash=dataset_hash,
            seed=seed,
            input_shape=list(scan.shape),
            feature_names=scan.feature_names,
        ),
    )


def _dataset_hash(scan: StreamScan, rows: np.ndarray) -> str:
    """16 hex digits naming the kept files' contents and labels, in listing order."""
    digest = hashlib.sha256()
    labels = scan.labels
    for position in rows.tolist():
        digest.update(f"{scan.hashes[position]}:{labels[position]}\n".encode())
    return digest.hexdigest()[:16]


def _write_task(
    scan: StreamScan,
    task: str,
    task_classes: list[int],
    result: SplitResult,
    config: DataConfig,
    seed: int,
    out: Path,
    holdout: Path,
) -> tuple[TaskInfo, dict[str, np.ndarray]]:
    """``<task>/<split>.manifest.parquet`` for each split (test under ``holdout``)."""
    labels = scan.labels
    positions: dict[str, np.ndarray] = {}
    for split in SPLITS:
        rows = result.indices[split]
        rows = rows[np.isin(labels[rows], task_classes)]
        if task == "target" and split == "train" and config.transfer.target_classes:
            rows = rows[stratified_subsample(labels[rows], config.transfer.target_train_size, seed)]
        rows = stream_order(rows, scan.hashes, seed)
        write_manifest(
            manifest_path(holdout if split == "test" else out, task, split),
            scan.manifest_columns(rows),
            remapped_labels(labels[rows], task_classes, task, split),
        )
        positions[split] = rows
    mean, std = scan.scaling_statistics(positions["train"], config.normalize)
    info = TaskInfo(
        classes=task_classes,
        class_names=[scan.class_names[c] for c in task_classes],
        sizes={split: len(rows) for split, rows in positions.items()},
        mean=mean,
        std=std,
    )
    return info, positions


def _quality(
    scan: StreamScan, kept: np.ndarray, splits: dict[str, np.ndarray], config: DataConfig
) -> QualityReport:
    """The label findings over every kept row, and a table's single-feature leakage check on
    the sample (the other per-column findings need every row in memory)."""
    quality = QualityReport(
        imbalance=imbalance_finding(scan.labels[kept], scan.class_names, config.max_imbalance_ratio)
    )
    if scan.kind == "tabular" and scan.shape[0] <= MAX_LEAKAGE_FEATURES:
        _sampled_leakage(scan, splits, config, quality)
        apply_leakage_policy(quality, config.leakage_threshold, config.leakage_policy)
    if quality.imbalance is not None and quality.imbalance.imbalanced:
        quality.warnings.append(
            f"class imbalance (largest/smallest = {quality.imbalance.ratio}): "
            + quality.imbalance.suggestion
        )
    return quality


def _sampled_leakage(
    scan: StreamScan, splits: dict[str, np.ndarray], config: DataConfig, quality: QualityReport
) -> None:
    """The in-memory single-feature leakage check (:func:`leakage_findings`) on the sampled
    rows (``data.streaming.near_duplicate_sample``, drawn by hash from every split) that are
    in train and in val after the near-duplicate check: approximate, as its scope says."""
    members = {name: set(splits[name].tolist()) for name in ("train", "val")}
    rows = {
        name: np.array(sorted(p for p in scan.sample if p in found), dtype=np.int64)
        for name, found in members.items()
    }
    counts = f"{len(rows['train'])} train and {len(rows['val'])} val rows"
    if not len(rows["train"]) or not len(rows["val"]):
        quality.leakage_scope = (
            f"the seeded sample holds {counts}; raise data.streaming.near_duplicate_sample"
        )
        quality.warnings.append(f"single-feature leakage check not run: {quality.leakage_scope}")
        return
    x = {name: np.stack([scan.sample[int(p)] for p in r]) for name, r in rows.items()}
    quality.leakage = leakage_findings(
        x["train"],
        scan.labels[rows["train"]],
        x["val"],
        scan.labels[rows["val"]],
        column_names(scan.shape[0], scan.feature_names),
        config.leakage_threshold,
    )
    quality.leakage_checked = True
    quality.leakage_scope = f"approximate: a seeded sample of {counts}"


def _write_reports(
    scan: StreamScan,
    manifest: DataManifest,
    quality: QualityReport,
    result: SplitResult,
    dropped: dict[str, np.ndarray],
    near_report: NearDuplicateReport,
    out: Path,
) -> None:
    """report.json and report.html; the figures that need pixels come from the sample's
    train files (no test image sits in the dataset artifact's report)."""
    labels = scan.labels
    summary = SplitSummary.build(_label_rows(scan, labels), result, dropped)
    report = {
        "manifest": asdict(manifest),
        "quality": asdict(quality),
        "near_duplicates": asdict(near_report),
        "splits": asdict(summary),
    }
    (out / "report.json").write_text(json.dumps(report, indent=2))
    train = set(result.indices["train"].tolist())
    shown = sorted(p for p in scan.sample if p in train)
    sample = RawDataset(
        x=np.stack([scan.sample[p] for p in shown]) if shown else np.zeros((0, *scan.shape)),
        y=labels[shown],
        class_names=scan.class_names,
        kind=scan.kind,
        feature_names=scan.feature_names,
    )
    write_report(out / "report.html", manifest, quality, near_report, summary, sample, sample.x)
