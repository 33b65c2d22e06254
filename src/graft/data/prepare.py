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
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.model_selection import train_test_split

from graft.config import DataConfig
from graft.data.holdout import HoldoutManifest, default_holdout_dir
from graft.data.manifest import DataManifest, TaskInfo
from graft.data.near_duplicates import resolve_near_duplicates
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
from graft.data.report import SplitSummary, write_report
from graft.data.sources import RawDataset, load_source
from graft.data.splits import (
    SPLIT_MANIFEST_FILE,
    SPLITS,
    check_split_labels,
    split_manifest_digest,
    split_rows,
    write_split_manifest,
)
from graft.data.validation import (
    assert_disjoint,
    dataset_hash,
    drop_exact_duplicates,
    validate_raw,
    validate_target_classes,
)
from graft.errors import DatasetError

log = logging.getLogger(__name__)

TASKS = ("source", "target")


def _subsample(y: np.ndarray, limit: int | None, seed: int) -> np.ndarray:
    indices = np.arange(len(y))
    if limit is None or limit >= len(y):
        return indices
    kept, _ = train_test_split(indices, train_size=limit, stratify=y, random_state=seed)
    return np.sort(kept)


def _task_labels(raw: RawDataset, target_classes: list[int]) -> dict[str, list[int]]:
    all_classes = sorted(np.unique(raw.y).tolist())
    if not target_classes:
        return {"source": all_classes, "target": all_classes}
    return {
        "source": [c for c in all_classes if c not in target_classes],
        "target": sorted(target_classes),
    }


def _read(config: DataConfig) -> RawDataset:
    raw = load_source(config.source, config.label_column, config.time_column, config.group_column)
    validate_raw(raw, allow_missing=config.missing_values == "fill_median")
    validate_target_classes(raw, config.transfer.target_classes)
    return raw


def _quality_checks(
    raw: RawDataset,
    x: np.ndarray,
    x_names: list[str],
    splits: dict[str, np.ndarray],
    config: DataConfig,
) -> QualityReport:
    """Findings on the prepared rows; leakage is an error only under leakage_policy: error."""
    flat = raw.x.reshape(len(raw.x), -1)
    names = column_names(flat.shape[1], raw.feature_names)
    report = QualityReport(
        missing_values=missing_per_column(flat, names),
        constant_columns=constant_columns(flat, names),
        imbalance=imbalance_finding(raw.y, raw.class_names, config.max_imbalance_ratio),
    )
    x_flat = x.reshape(len(x), -1)
    if raw.kind == "tabular" and x_flat.shape[1] <= MAX_LEAKAGE_FEATURES:
        report.leakage = leakage_findings(
            x_flat[splits["train"]],
            raw.y[splits["train"]],
            x_flat[splits["val"]],
            raw.y[splits["val"]],
            x_names,
            config.leakage_threshold,
        )
        report.leakage_checked = True
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
    return report


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
    raw = _read(config)
    raw, duplicates, hashes = drop_exact_duplicates(raw)
    keep = _subsample(raw.y, config.max_rows, seed)
    raw, hashes = raw.take(keep), hashes[keep]
    if not raw.class_names:
        raw.class_names = [str(c) for c in range(int(raw.y.max()) + 1)]
    y, row_ids = raw.y, raw.ids()

    result = split_rows(raw, config, seed)
    check_split_labels(y, result)
    x = raw.x
    fill: MissingValueFill | None = None
    feature_names = raw.feature_names
    if raw.kind == "tabular" and config.missing_values == "fill_median":
        names = column_names(x.shape[1], raw.feature_names)
        fill = fit_missing_fill(x[result.indices["train"]], names)
        x = apply_missing_fill(x, fill)
        feature_names = names + [f"{names[i]}_missing" for i in fill.indicator_columns]
    result.indices, near_dropped, near_report = resolve_near_duplicates(
        x,
        result.indices,
        row_ids,
        config.near_duplicate_threshold,
        config.near_duplicate_policy,
    )
    splits = result.indices
    check_split_labels(y, result)
    assert_disjoint({name: hashes[idx] for name, idx in splits.items()})
    x_names = column_names(x.reshape(len(x), -1).shape[1], feature_names)
    quality = _quality_checks(raw, x, x_names, splits, config)

    digest = dataset_hash(raw.x, y)
    dropped = {"time_gap": result.dropped_by_time_gap, "near_duplicates": near_dropped}
    manifest = DataManifest(
        dataset_hash=digest,
        source=config.source,
        kind=raw.kind,
        input_shape=list(x.shape[1:]),
        num_rows=len(x),
        duplicates=duplicates,
        split_strategy=result.strategy,
        normalize=config.normalize,
        missing_fill=fill,
        feature_names=feature_names,
        near_duplicates_found=near_report.found,
        warnings=list(quality.warnings),
    )
    if config.allow_shuffled_time and raw.time is not None and result.strategy != "time":
        manifest.warnings.insert(
            0, "OVERRIDE: time-ordered data split with shuffling (allow_shuffled_time=true)"
        )
    for warning in manifest.warnings:
        log.warning("data-prep: %s", warning)
    rng = np.random.default_rng(seed)
    task_positions: dict[str, dict[str, np.ndarray]] = {}
    for task, labels in _task_labels(raw, config.transfer.target_classes).items():
        remap = {label: new for new, label in enumerate(labels)}
        task_positions[task] = {}
        sizes: dict[str, int] = {}
        stats: tuple[list[float], list[float]] = ([], [])
        for split in SPLITS:
            idx = splits[split][np.isin(y[splits[split]], labels)]
            if task == "target" and split == "train" and config.transfer.target_classes:
                idx = idx[_subsample(y[idx], config.transfer.target_train_size, seed)]
            idx = rng.permutation(idx)
            task_y = np.array([remap[int(v)] for v in y[idx]], dtype=np.int64)
            missing = sorted(set(range(len(labels))) - set(task_y.tolist()))
            if missing:
                raise DatasetError(
                    f"the {task} task's {split} split has no examples of classes "
                    f"{[labels[m] for m in missing]}; add data or lower the split fractions"
                )
            # test rows never enter the dataset directory the training stages receive
            task_dir = (holdout if split == "test" else out) / task
            task_dir.mkdir(parents=True, exist_ok=True)
            np.savez(task_dir / f"{split}.npz", x=x[idx], y=task_y, row_hash=hashes[idx])
            task_positions[task][split] = idx
            sizes[split] = len(idx)
            if split == "train":
                stats = scaling_statistics(x[idx], raw.kind, config.normalize)
        manifest.tasks[task] = TaskInfo(
            classes=labels,
            class_names=[raw.class_names[c] for c in labels],
            sizes=sizes,
            mean=stats[0],
            std=stats[1],
        )
    split_manifest = out / SPLIT_MANIFEST_FILE
    digests = write_split_manifest(
        split_manifest, result, row_ids, hashes, seed, digest, dropped, task_positions
    )
    HoldoutManifest(
        dataset_hash=digest,
        split_manifest_digest=split_manifest_digest(split_manifest),
        rows={task: info.sizes["test"] for task, info in manifest.tasks.items()},
        digests={task: by_split["test"] for task, by_split in digests.items()},
    ).write(holdout)
    (out / "manifest.json").write_text(json.dumps(asdict(manifest), indent=2))
    summary = SplitSummary.build(raw, result, dropped)
    report: dict[str, Any] = {
        "manifest": asdict(manifest),
        "quality": asdict(quality),
        "near_duplicates": asdict(near_report),
        "splits": asdict(summary),
    }
    (out / "report.json").write_text(json.dumps(report, indent=2))
    # the gallery shows actual rows: train ones only, the test rows are sealed
    gallery = raw.take(np.sort(splits["train"]))
    write_report(out / "report.html", manifest, quality, near_report, summary, raw, x, gallery)
    return manifest


def load_split(dataset_dir: str | Path, task: str, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Train or val rows of a task; test rows are sealed (:func:`graft.data.holdout.load_holdout`
    reads them, in evaluate only)."""
    if split == "test":
        raise DatasetError(
            "the dataset directory holds no test rows: they are sealed in data-prep's "
            "test_split output, which only evaluate reads (graft.data.holdout.load_holdout)"
        )
    with np.load(Path(dataset_dir) / task / f"{split}.npz") as archive:
        return archive["x"], archive["y"]


def check_source(config: DataConfig) -> None:
    """Read and validate the source without writing anything: the CLI's fail-fast check."""
    _read(config)
