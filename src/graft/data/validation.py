"""Checks a dataset must pass before any training: each failure names the problem and the fix."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from graft.config.data import MAX_CLASS_ID
from graft.data.sources import RawDataset
from graft.errors import DatasetError


def _rows_preview(rows: np.ndarray, limit: int = 5) -> str:
    shown = ", ".join(str(int(r)) for r in rows[:limit])
    return shown + (", ..." if len(rows) > limit else "")


def validate_raw(raw: RawDataset, source: str, allow_missing: bool = False) -> None:
    """Shape, emptiness, finiteness and label sanity of a freshly read dataset.

    Every error starts with ``source``, the data source as the user gave it. ``allow_missing``
    lets NaNs through in tabular data (``missing_values: fill_median`` fills them later from
    train statistics); infinities are refused either way.
    """
    try:
        _validate_rows(raw, allow_missing)
        _validate_labels(raw)
    except DatasetError as exc:
        raise DatasetError(f"{source}: {exc}") from None


def _validate_rows(raw: RawDataset, allow_missing: bool) -> None:
    if len(raw.x) == 0:
        raise DatasetError("the dataset is empty; point data.source at a file with rows")
    if len(raw.x) != len(raw.y):
        raise DatasetError(
            f"features have {len(raw.x)} rows but labels have {len(raw.y)}; they must match"
        )
    flat = raw.x.reshape(len(raw.x), -1)
    if allow_missing and raw.kind == "tabular":
        bad, what = np.isinf(flat), "inf"
    else:
        bad, what = ~np.isfinite(flat), "NaN/inf"
    if bad.any():
        bad_rows = np.flatnonzero(bad.any(axis=1))
        raise DatasetError(
            f"{int(bad.sum())} {what} values in the features (rows {_rows_preview(bad_rows)}); "
            "drop or impute them (tabular NaNs: data.missing_values=fill_median)"
        )
    if flat.shape[1] == 0:
        raise DatasetError("the dataset has no feature columns; a model needs at least one input")


def _validate_labels(raw: RawDataset) -> None:
    if (raw.y < 0).any():
        rows = np.flatnonzero(raw.y < 0)
        raise DatasetError(
            f"negative labels in rows {_rows_preview(rows)}; labels must be class ids 0..K-1"
        )
    classes = np.unique(raw.y)
    if classes.max() > MAX_CLASS_ID:
        rows = np.flatnonzero(raw.y > MAX_CLASS_ID)
        raise DatasetError(
            f"label {int(classes.max())} in rows {_rows_preview(rows)} is not a class id: ids run "
            f"0..K-1 (at most {MAX_CLASS_ID}); encode the labels as 0..K-1"
        )
    if len(classes) < 2:
        raise DatasetError(f"only one class ({classes.tolist()}) in the labels; need at least 2")
    if raw.class_names and classes.max() >= len(raw.class_names):
        raise DatasetError(
            f"label {int(classes.max())} is outside the {len(raw.class_names)} known classes"
        )


def validate_target_classes(raw: RawDataset, target_classes: list[int], source: str) -> None:
    present = set(np.unique(raw.y).tolist())
    named = [
        f"{c} ({raw.class_names[c]})" if c < len(raw.class_names) else str(c)
        for c in sorted(present)
    ]
    if len(named) > 20:  # a long list would bury the fix
        named = [*named[:20], f"... {len(named) - 20} more"]
    switch_off = "or turn the class split off with --set 'data.transfer.target_classes=[]'"
    unknown = sorted(set(target_classes) - present)
    if unknown:
        raise DatasetError(
            f"data.transfer.target_classes {unknown} are not labels of {source} "
            f"(labels: {', '.join(named)}); pick existing labels, {switch_off}"
        )
    if target_classes and len(set(target_classes)) < 2:
        raise DatasetError(
            f"data.transfer.target_classes needs at least two distinct labels of {source} "
            f"(labels: {', '.join(named)}); name two, {switch_off}"
        )
    if target_classes and len(present - set(target_classes)) < 2:
        raise DatasetError(
            f"data.transfer.target_classes leaves fewer than two classes of {source} for the "
            f"source task (labels: {', '.join(named)}); name fewer, {switch_off}"
        )


def row_hashes(x: np.ndarray) -> np.ndarray:
    """A content hash per row: identical examples get identical hashes."""
    flat = np.ascontiguousarray(x.reshape(len(x), -1))
    return np.array([hashlib.blake2b(row.tobytes(), digest_size=8).hexdigest() for row in flat])


@dataclass
class DuplicateReport:
    exact_duplicates_dropped: int
    conflicting_labels: int


def drop_exact_duplicates(raw: RawDataset) -> tuple[RawDataset, DuplicateReport, np.ndarray]:
    """Keep the first copy of each identical example so no copy can land in two splits.

    Returns the deduplicated dataset, the report, and the kept row hashes.
    """
    hashes = row_hashes(raw.x)
    _, first = np.unique(hashes, return_index=True)
    keep = np.sort(first)
    # copies whose labels disagree are label noise worth counting
    label_sets: dict[str, set[int]] = {}
    for h, label in zip(hashes, raw.y.tolist(), strict=True):
        label_sets.setdefault(h, set()).add(label)
    conflicting = sum(1 for labels in label_sets.values() if len(labels) > 1)
    deduped = raw.take(keep)
    report = DuplicateReport(
        exact_duplicates_dropped=int(len(raw.x) - len(keep)), conflicting_labels=conflicting
    )
    return deduped, report, hashes[keep]


def assert_disjoint(split_hashes: dict[str, np.ndarray]) -> None:
    """No example may appear in two splits (train/test leakage)."""
    names = list(split_hashes)
    for i, first in enumerate(names):
        for second in names[i + 1 :]:
            shared = np.intersect1d(split_hashes[first], split_hashes[second])
            if len(shared):
                raise DatasetError(
                    f"{len(shared)} examples appear in both '{first}' and '{second}' splits; "
                    "deduplicate the data before splitting"
                )


def dataset_hash(x: np.ndarray, y: np.ndarray) -> str:
    digest = hashlib.sha256()
    digest.update(np.ascontiguousarray(x).tobytes())
    digest.update(np.ascontiguousarray(y).tobytes())
    return digest.hexdigest()[:16]
