"""data-prep: read, validate, deduplicate, split, build the A/B transfer tasks, write artifacts.

Layout of a prepared dataset directory::

    manifest.json                 dataset hash, sizes, class names, stats per task
    report.json / report.html     what a person reads: counts, duplicates, splits
    splits.json                   row ids and hashes per split and per task, with digests
    source/{train,val}.npz         task A (pretrain)
    target/{train,val}.npz         task B (transfer-finetune, tune, export)

The test rows are not in it: they go to a separate directory (:mod:`graft.data.holdout`),
which in the pipeline only evaluate receives.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from graft.config import DataConfig
from graft.data.holdout import default_holdout_dir, write_split_records
from graft.data.manifest import DataManifest, TaskInfo
from graft.data.near_duplicates import NearDuplicateReport, resolve_near_duplicates
from graft.data.preprocessing import (
    MissingValueFill,
    apply_missing_fill,
    fit_missing_fill,
    scaling_statistics,
)
from graft.data.quality import (
    MAX_LEAKAGE_FEATURES,
    QualityReport,
    column_names,
    constant_columns,
    imbalance_finding,
    leakage_findings,
    missing_per_column,
)
from graft.data.reference import REFERENCE_FOLDER, build_reference, write_reference
from graft.data.report import SplitSummary, write_report
from graft.data.sources import RawDataset, load_source
from graft.data.splits import (
    SPLITS,
    check_split_labels,
    split_rows,
    target_shares,
)
from graft.data.streaming_manifest import manifest_path
from graft.data.streaming_prepare import check_streaming_source, prepare_streaming
from graft.data.streaming_read import load_streamed_split
from graft.data.tasks import remapped_labels, stratified_subsample, task_labels
from graft.data.validation import (
    DuplicateReport,
    assert_disjoint,
    dataset_hash,
    drop_exact_duplicates,
    validate_raw,
    validate_target_classes,
)
from graft.errors import DatasetError

log = logging.getLogger(__name__)

TASKS = ("source", "target")


@dataclass
class _PreparedRows:
    """The rows data-prep writes, split, with every per-row array aligned to ``raw``."""

    raw: RawDataset  # after exact-duplicate removal and the max_rows subsample
    x: np.ndarray  # raw.x with missing values filled (tabular, fill_median), else raw.x
    feature_names: list[str] | None  # names of x's columns, indicator columns included
    fill: MissingValueFill | None
    hashes: np.ndarray  # one row hash per row
    splits: dict[str, np.ndarray]  # split -> positions, after the near-duplicate policy


def read_validated(config: DataConfig) -> RawDataset:
    """Every row of ``config.source`` (no deduplication, no subsample), validated as
    data-prep validates them; the monitor reads a snapshot this way too."""
    raw = load_source(
        config.source,
        config.label_column,
        config.time_column,
        config.group_column,
        image=config.image,
    )
    validate_raw(raw, config.source, allow_missing=config.missing_values == "fill_median")
    return raw


def _read(config: DataConfig) -> RawDataset:
    raw = read_validated(config)
    validate_target_classes(raw, config.transfer.target_classes, config.source)
    return raw


def _deduplicated_sample(
    config: DataConfig, seed: int
) -> tuple[RawDataset, DuplicateReport, np.ndarray]:
    """The source's rows without exact duplicates, subsampled to max_rows, with their hashes."""
    raw = _read(config)
    raw, duplicates, hashes = drop_exact_duplicates(raw)
    keep = stratified_subsample(raw.y, config.max_rows, seed)
    raw, hashes = raw.take(keep), hashes[keep]
    if not raw.class_names:
        raw.class_names = [str(c) for c in range(int(raw.y.max()) + 1)]
    return raw, duplicates, hashes


def _filled_features(
    raw: RawDataset, train: np.ndarray, config: DataConfig
) -> tuple[np.ndarray, MissingValueFill | None, list[str] | None]:
    """``raw.x`` with missing values filled by medians fitted on the ``train`` rows (tabular,
    fill_median only), the fill, and the column names with the indicator columns added."""
    if raw.kind != "tabular" or config.missing_values != "fill_median":
        return raw.x, None, raw.feature_names
    names = column_names(raw.x.shape[1], raw.feature_names)
    fill = fit_missing_fill(raw.x[train], names)
    feature_names = names + [f"{names[i]}_missing" for i in fill.indicator_columns]
    return apply_missing_fill(raw.x, fill), fill, feature_names


def _quality_checks(rows: _PreparedRows, config: DataConfig) -> QualityReport:
    """Findings on the prepared rows; leakage is an error only under leakage_policy: error."""
    raw, splits = rows.raw, rows.splits
    flat = raw.x.reshape(len(raw.x), -1)
    names = column_names(flat.shape[1], raw.feature_names)
    report = QualityReport(
        missing_values=missing_per_column(flat, names),
        constant_columns=constant_columns(flat, names),
        imbalance=imbalance_finding(raw.y, raw.class_names, config.max_imbalance_ratio),
    )
    x_flat = rows.x.reshape(len(rows.x), -1)
    if raw.kind == "tabular" and x_flat.shape[1] <= MAX_LEAKAGE_FEATURES:
        report.leakage = leakage_findings(
            x_flat[splits["train"]],
            raw.y[splits["train"]],
            x_flat[splits["val"]],
            raw.y[splits["val"]],
            column_names(x_flat.shape[1], rows.feature_names),
            config.leakage_threshold,
        )
        report.leakage_checked = True
    _add_warnings(report, config)
    return report


def _add_warnings(report: QualityReport, config: DataConfig) -> None:
    """The findings a person must see, as warnings; raises on leakage under policy error."""
    for finding in report.leakage:
        message = (
            f"feature '{finding.feature}' alone predicts the label (val balanced accuracy "
            f"{finding.val_balanced_accuracy:.3f} >= {config.leakage_threshold}): is it "
            "available at prediction time, or derived from the label?"
        )
        if config.leakage_policy == "error":
            raise DatasetError(
                message + " Drop the column, or set data.leakage_policy=warn if it is legitimate"
            )
        report.warnings.append("leakage: " + message)
    if report.constant_columns:
        report.warnings.append(
            f"{len(report.constant_columns)} constant columns carry no information: "
            + ", ".join(report.constant_columns[:10])
            + (" ..." if len(report.constant_columns) > 10 else "")
        )
    if report.imbalance is not None and report.imbalance.imbalanced:
        report.warnings.append(
            f"class imbalance (largest/smallest = {report.imbalance.ratio}): "
            + report.imbalance.suggestion
        )


def prepare_dataset(
    config: DataConfig,
    seed: int,
    output_dir: str | Path,
    test_split_dir: str | Path | None = None,
) -> DataManifest:
    """Write the dataset directory (train/val) to ``output_dir`` and the sealed test rows to
    ``test_split_dir`` (default: the sibling ``<output_dir>-test``)."""
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    holdout = Path(test_split_dir) if test_split_dir is not None else default_holdout_dir(out)
    holdout.mkdir(parents=True, exist_ok=True)
    if config.loader == "streaming":
        return prepare_streaming(config, seed, out, holdout)
    raw, duplicates, hashes = _deduplicated_sample(config, seed)
    result = split_rows(raw, hashes, config, seed)
    check_split_labels(raw.y, result)
    x, fill, feature_names = _filled_features(raw, result.indices["train"], config)
    result.indices, near_dropped, near_report = resolve_near_duplicates(
        x,
        result.indices,
        raw.ids(),
        config.near_duplicate_threshold,
        config.near_duplicate_policy,
    )
    check_split_labels(raw.y, result)
    assert_disjoint({name: hashes[idx] for name, idx in result.indices.items()})
    rows = _PreparedRows(raw, x, feature_names, fill, hashes, result.indices)
    quality = _quality_checks(rows, config)
    manifest = _manifest(rows, config, result.strategy, duplicates, near_report, quality)
    task_positions = _write_tasks(rows, manifest, config, seed, out, holdout)
    dropped = {"time_gap": result.dropped_by_time_gap, "near_duplicates": near_dropped}
    write_split_records(
        manifest, result, rows.raw.ids(), rows.hashes, dropped, task_positions, seed, out, holdout
    )
    summary = SplitSummary.build(raw, result, dropped, target_shares(config))
    _write_reports(rows, manifest, quality, near_report, summary, out)
    # what the monitor compares a later snapshot with: train rows only (graft.data.reference)
    reference = build_reference(
        raw, result.indices["train"], hashes, seed, manifest.dataset_hash, config.source
    )
    write_reference(reference, out / REFERENCE_FOLDER)
    return manifest


def _manifest(
    rows: _PreparedRows,
    config: DataConfig,
    split_strategy: str,
    duplicates: DuplicateReport,
    near_report: NearDuplicateReport,
    quality: QualityReport,
) -> DataManifest:
    """The manifest without its tasks (:func:`_write_tasks` adds them); logs its warnings."""
    manifest = DataManifest(
        dataset_hash=dataset_hash(rows.raw.x, rows.raw.y),
        source=config.source,
        kind=rows.raw.kind,
        input_shape=list(rows.x.shape[1:]),
        num_rows=len(rows.x),
        duplicates=duplicates,
        split_strategy=split_strategy,
        normalize=config.normalize,
        missing_fill=rows.fill,
        feature_names=rows.feature_names,
        near_duplicates_found=near_report.found,
        warnings=list(quality.warnings),
    )
    if config.allow_shuffled_time and rows.raw.time is not None and split_strategy != "time":
        manifest.warnings.insert(
            0, "OVERRIDE: time-ordered data split with shuffling (allow_shuffled_time=true)"
        )
    for warning in manifest.warnings:
        log.warning("data-prep: %s", warning)
    return manifest


def _write_tasks(
    rows: _PreparedRows,
    manifest: DataManifest,
    config: DataConfig,
    seed: int,
    out: Path,
    holdout: Path,
) -> dict[str, dict[str, np.ndarray]]:
    """Write every task's splits and add each task to ``manifest.tasks``; returns task ->
    split -> the positions written, in their written order."""
    # one generator for all the shuffles: each task's rows depend on the tasks written before
    rng = np.random.default_rng(seed)
    task_positions: dict[str, dict[str, np.ndarray]] = {}
    for task, labels in task_labels(rows.raw.y, config.transfer.target_classes).items():
        manifest.tasks[task], task_positions[task] = _write_task(
            task, labels, rows, config, seed, rng, out, holdout
        )
    return task_positions


def _write_task(
    task: str,
    labels: list[int],
    rows: _PreparedRows,
    config: DataConfig,
    seed: int,
    rng: np.random.Generator,
    out: Path,
    holdout: Path,
) -> tuple[TaskInfo, dict[str, np.ndarray]]:
    """``<task>/<split>.npz`` for each split of one task (labels remapped to 0..K-1)."""
    y = rows.raw.y
    positions: dict[str, np.ndarray] = {}
    stats: tuple[list[float], list[float]] = ([], [])
    for split in SPLITS:
        idx = rows.splits[split][np.isin(y[rows.splits[split]], labels)]
        if task == "target" and split == "train" and config.transfer.target_classes:
            idx = idx[stratified_subsample(y[idx], config.transfer.target_train_size, seed)]
        idx = rng.permutation(idx)
        task_y = remapped_labels(y[idx], labels, task, split)
        # test rows never enter the dataset directory the training stages receive
        task_dir = (holdout if split == "test" else out) / task
        task_dir.mkdir(parents=True, exist_ok=True)
        np.savez(task_dir / f"{split}.npz", x=rows.x[idx], y=task_y, row_hash=rows.hashes[idx])
        positions[split] = idx
        if split == "train":
            stats = scaling_statistics(rows.x[idx], rows.raw.kind, config.normalize)
    info = TaskInfo(
        classes=labels,
        class_names=[rows.raw.class_names[c] for c in labels],
        sizes={split: len(idx) for split, idx in positions.items()},
        mean=stats[0],
        std=stats[1],
    )
    return info, positions


def _write_reports(
    rows: _PreparedRows,
    manifest: DataManifest,
    quality: QualityReport,
    near_report: NearDuplicateReport,
    summary: SplitSummary,
    out: Path,
) -> None:
    """report.json and report.html in ``out``."""
    report: dict[str, Any] = {
        "manifest": asdict(manifest),
        "quality": asdict(quality),
        "near_duplicates": asdict(near_report),
        "splits": asdict(summary),
    }
    (out / "report.json").write_text(json.dumps(report, indent=2))
    # the gallery shows actual rows: train ones only, the test rows are sealed
    gallery = rows.raw.take(np.sort(rows.splits["train"]))
    write_report(
        out / "report.html", manifest, quality, near_report, summary, rows.raw, rows.x, gallery
    )


def load_split(dataset_dir: str | Path, task: str, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Train or val rows of a task; test rows are sealed (:func:`graft.data.holdout.load_holdout`
    reads them, in evaluate only)."""
    if split == "test":
        raise DatasetError(
            "the dataset directory holds no test rows: they are sealed in data-prep's "
            "test_split output, which only evaluate reads (graft.data.holdout.load_holdout)"
        )
    listed = manifest_path(dataset_dir, task, split)
    if listed.exists():  # data.loader: streaming, decoded whole here (a val split, say)
        return load_streamed_split(listed, dataset_dir)
    with np.load(Path(dataset_dir) / task / f"{split}.npz") as archive:
        return archive["x"], archive["y"]


def check_source(config: DataConfig) -> None:
    """Read and validate the source without writing anything: the CLI's fail-fast check (a
    streamed source is only listed, and a table's first file's columns checked)."""
    if config.loader == "streaming":
        check_streaming_source(config)
        return
    _read(config)
