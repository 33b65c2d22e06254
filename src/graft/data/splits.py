"""Split strategies: random, stratified, time-ordered (with a gap), grouped, sequential.

Every strategy is a pure function of the rows and the seed, so the same input and seed give
the same split; :func:`write_split_manifest` records it (row ids and row hashes per split, and
per task and split) as ``splits.json`` with a byte-stable layout, plus a digest per task and
split that names exactly those rows (logged as MLflow dataset inputs, keyed on by the
test-split ledger).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from sklearn.model_selection import train_test_split

from graft.config import DataConfig
from graft.data.sources import RawDataset
from graft.errors import DatasetError

SPLITS = ("train", "val", "test")
SPLIT_MANIFEST_FILE = "splits.json"
SHUFFLED = ("random", "stratified")


@dataclass
class SplitResult:
    """Positions (into the prepared rows) of each split, and what the strategy left out."""

    strategy: str
    indices: dict[str, np.ndarray]
    dropped_by_time_gap: np.ndarray = field(default_factory=lambda: np.array([], dtype=np.int64))
    time_ranges: dict[str, tuple[float, float]] = field(default_factory=dict)
    cut_order: np.ndarray | None = None  # row order an unshuffled cut followed


def _counts(n: int, config: DataConfig) -> tuple[int, int, int]:
    n_test = round(n * config.test_fraction)
    n_val = round(n * config.val_fraction)
    return n - n_val - n_test, n_val, n_test


def shuffled_split(y: np.ndarray, config: DataConfig, seed: int) -> dict[str, np.ndarray]:
    """Train/val/test positions, stratified by label unless ``split: random``."""
    indices = np.arange(len(y))
    stratify = y if config.split == "stratified" else None
    try:
        rest, test = train_test_split(
            indices, test_size=config.test_fraction, stratify=stratify, random_state=seed
        )
        val_share = config.val_fraction / (1.0 - config.test_fraction)
        train, val = train_test_split(
            rest,
            test_size=val_share,
            stratify=None if stratify is None else y[rest],
            random_state=seed + 1,
        )
    except ValueError as exc:
        raise DatasetError(
            f"cannot split {len(y)} rows into train/val/test ({exc}); "
            "add rows or lower data.val_fraction / data.test_fraction"
        ) from None
    return {"train": np.sort(train), "val": np.sort(val), "test": np.sort(test)}


def sequential_split(n: int, config: DataConfig) -> dict[str, np.ndarray]:
    """The first rows train, the next val, the last test: file order, no shuffling."""
    n_train, n_val, _ = _counts(n, config)
    order = np.arange(n)
    return {
        "train": order[:n_train],
        "val": order[n_train : n_train + n_val],
        "test": order[n_train + n_val :],
    }


def time_split(time: np.ndarray, config: DataConfig) -> SplitResult:
    """Oldest rows train, then val, then test; every split strictly later than the one before.

    Rows sharing a timestamp never straddle a boundary (they go to the later split), and with
    ``time_gap`` the first rows of val/test closer than the gap to the previous split's last
    timestamp are dropped (an embargo against leakage through slowly changing features).
    """
    n = len(time)
    n_train, n_val, _ = _counts(n, config)
    order = np.argsort(time, kind="stable")
    sorted_time = time[order]
    first_val = sorted_time[n_train]
    first_test = sorted_time[min(n_train + n_val, n - 1)]
    parts = {
        "train": order[sorted_time < first_val],
        "val": order[(sorted_time >= first_val) & (sorted_time < first_test)],
        "test": order[sorted_time >= first_test],
    }
    dropped: list[np.ndarray] = []
    previous_end: float | None = None
    for name in SPLITS:
        rows = parts[name]
        if previous_end is not None and config.time_gap > 0:
            too_close = time[rows] - previous_end < config.time_gap
            dropped.append(rows[too_close])
            rows = rows[~too_close]
            parts[name] = rows
        if len(rows) == 0:
            raise DatasetError(
                f"split: time left the {name} split empty ({n} rows, time_gap "
                f"{config.time_gap}); lower data.time_gap or add rows"
            )
        previous_end = float(time[rows].max())
    return SplitResult(
        strategy="time",
        indices={name: np.sort(rows) for name, rows in parts.items()},
        dropped_by_time_gap=np.sort(np.concatenate(dropped)) if dropped else np.array([], int),
        time_ranges={
            name: (float(time[rows].min()), float(time[rows].max())) for name, rows in parts.items()
        },
        cut_order=order,
    )


def group_split(groups: np.ndarray, config: DataConfig, seed: int) -> dict[str, np.ndarray]:
    """Whole entities go to one split: groups are shuffled by the seed, then test and val are
    filled group by group up to their target row counts and the rest is train."""
    names, inverse, sizes = np.unique(groups, return_inverse=True, return_counts=True)
    if len(names) < 3:
        raise DatasetError(
            f"split: group needs at least 3 distinct groups, the data has {len(names)}; "
            "choose a finer data.group_column or another split"
        )
    _, n_val, n_test = _counts(len(groups), config)
    order = np.random.default_rng(seed).permutation(len(names))
    assignment = np.zeros(len(names), dtype=np.int64)  # 0 train, 1 val, 2 test
    position = 0
    for code, target in ((2, n_test), (1, n_val)):
        filled = 0
        # whole groups until the target row count is reached; one group always stays train
        while filled < max(target, 1) and position < len(order) - 1:
            assignment[order[position]] = code
            filled += int(sizes[order[position]])
            position += 1
    row_split = assignment[inverse]
    parts = {name: np.flatnonzero(row_split == code) for code, name in enumerate(SPLITS)}
    for name, rows in parts.items():
        if len(rows) == 0:
            raise DatasetError(
                f"split: group left the {name} split empty ({len(names)} groups); "
                "add groups or change data.val_fraction / data.test_fraction"
            )
    return parts


def split_rows(raw: RawDataset, config: DataConfig, seed: int) -> SplitResult:
    """Apply ``config.split``; refuse combinations that would leak (shuffled time series)."""
    strategy = config.split
    if raw.time is not None and strategy in SHUFFLED and not config.allow_shuffled_time:
        raise DatasetError(
            f"the data declares a time column but data.split is '{strategy}': shuffling "
            "time-ordered rows trains on the future; use split: time, or set "
            "data.allow_shuffled_time=true if the rows are truly exchangeable"
        )
    if strategy in SHUFFLED:
        return SplitResult(strategy, shuffled_split(raw.y, config, seed))
    if strategy == "sequential":
        n = len(raw.y)
        return SplitResult(strategy, sequential_split(n, config), cut_order=np.arange(n))
    if strategy == "time":
        if raw.time is None:
            raise DatasetError(
                "split: time needs timestamps: set data.time_column (Parquet) or add a 't' "
                "array to the .npz"
            )
        return time_split(raw.time, config)
    if raw.groups is None:
        raise DatasetError(
            "split: group needs entity ids: set data.group_column (Parquet) or add a "
            "'groups' array to the .npz"
        )
    return SplitResult(strategy, group_split(raw.groups, config, seed))


def check_split_labels(y: np.ndarray, result: SplitResult) -> None:
    """Errors for splits whose evaluation is meaningless: classes the model never trains on."""
    if result.strategy == "sequential" and result.cut_order is not None:
        labels = y[result.cut_order]
        steps = np.diff(labels)
        if len(np.unique(labels)) > 1 and ((steps >= 0).all() or (steps <= 0).all()):
            raise DatasetError(
                "the labels are sorted by class and split: sequential cuts in file order, so "
                "each split sees different classes; use split: stratified (or time, if the "
                "order is real time)"
            )
    train_classes = set(np.unique(y[result.indices["train"]]).tolist())
    for name in ("val", "test"):
        unseen = sorted(set(np.unique(y[result.indices[name]]).tolist()) - train_classes)
        if unseen:
            raise DatasetError(
                f"{name} classes unseen in train: {unseen}; the model can never predict them. "
                "Use split: stratified, or add training rows of those classes"
            )


def _rows(row_ids: np.ndarray, hashes: np.ndarray, positions: np.ndarray) -> dict[str, list]:
    order = np.sort(positions)
    return {
        "row_ids": row_ids[order].astype(int).tolist(),
        "row_hashes": hashes[order].tolist(),
    }


def rows_digest(rows: dict[str, list]) -> str:
    """32 hex digits (MLflow's dataset digest holds 36) naming one split's rows: the same row
    ids with the same contents give the same digest, whatever run or machine wrote them."""
    text = json.dumps(rows, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def write_split_manifest(
    path: Path,
    result: SplitResult,
    row_ids: np.ndarray,
    hashes: np.ndarray,
    seed: int,
    dataset_hash: str,
    dropped: dict[str, np.ndarray],
    tasks: dict[str, dict[str, np.ndarray]] | None = None,
) -> dict[str, dict[str, str]]:
    """``splits.json``: per split the source row ids and row hashes, sorted by row id; the
    same per task (``tasks`` maps task -> split -> positions of the rows it holds, e.g. after
    the class split and the target-train subsample) with a digest each. Returns the digests
    (task -> split -> digest).

    Same input and seed give the same bytes (sorted keys, fixed separators, no timestamps).
    ``dropped`` maps a reason to the positions removed for it.
    """
    task_rows = {
        task: {split: _rows(row_ids, hashes, positions) for split, positions in splits.items()}
        for task, splits in (tasks or {}).items()
    }
    digests = {
        task: {split: rows_digest(rows) for split, rows in splits.items()}
        for task, splits in task_rows.items()
    }
    body = {
        "dataset_hash": dataset_hash,
        "seed": seed,
        "strategy": result.strategy,
        "splits": {name: _rows(row_ids, hashes, result.indices[name]) for name in SPLITS},
        "tasks": task_rows,
        "digests": digests,
        "dropped": {
            reason: row_ids[np.sort(rows)].astype(int).tolist()
            for reason, rows in sorted(dropped.items())
        },
        "time_ranges": {name: list(span) for name, span in sorted(result.time_ranges.items())},
    }
    path.write_text(json.dumps(body, sort_keys=True, indent=1) + "\n")
    return digests


def split_manifest_digest(path: Path) -> str:
    """A digest of the whole ``splits.json``: two directories with the same one hold rows of
    the very same split."""
    return hashlib.sha256(path.read_bytes()).hexdigest()[:32]


@dataclass
class TaskSplit:
    """One task's rows of one split, as recorded in ``splits.json``."""

    task: str
    split: str
    row_ids: list[int]
    row_hashes: list[str]
    digest: str


def read_task_splits(path: Path) -> list[TaskSplit]:
    """Every (task, split) of a ``splits.json``, tasks in order, splits train/val/test."""
    body = json.loads(path.read_text())
    return [
        TaskSplit(
            task=task,
            split=split,
            row_ids=splits[split]["row_ids"],
            row_hashes=splits[split]["row_hashes"],
            digest=body["digests"][task][split],
        )
        for task, splits in sorted(body.get("tasks", {}).items())
        for split in SPLITS
        if split in splits
    ]
