"""Split strategies: random, stratified, time-ordered (with a gap), grouped, sequential.

Every strategy is a pure function of the rows and the seed, so the same input and seed give
the same split. The shuffled ones (random, stratified) go further: a row's split is a function
of its content hash and the split seed alone (:func:`assign_splits`, which the streaming
data-prep uses too), so a row keeps its split in every snapshot of the data, and a group's
split is one of its id. :func:`write_split_manifest` records the split (row ids and row hashes
per split, and per task and split) as ``splits.json`` with a byte-stable layout, plus a digest
per task and split that names exactly those rows (logged as MLflow dataset inputs, keyed on by
the test-split ledger). docs/splits.md says what is exact and what holds in expectation.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from graft.config import DataConfig
from graft.data.sources import RawDataset
from graft.errors import DatasetError

SPLITS = ("train", "val", "test")
SPLIT_MANIFEST_FILE = "splits.json"
SHUFFLED = ("random", "stratified")
_KEY_SCALE = float(2**64)
# what makes a split less likely to come out empty or without a class, besides more rows
FILL_SPLIT_FIX = {
    "train": "lower data.val_fraction / data.test_fraction",
    "val": "raise data.val_fraction",
    "test": "raise data.test_fraction",
}

_KEYED_UNSEEN_FIX = (
    "Each row's split is drawn from its content hash, so a class with few rows can miss "
    "train by chance: add rows of those classes or lower data.val_fraction / "
    "data.test_fraction"
)
_UNSEEN_FIX = {
    "ordered": "Use split: stratified, or add training rows of those classes",
    "random": _KEYED_UNSEEN_FIX + ", or pick another data.split_seed",
    "stratified": _KEYED_UNSEEN_FIX + ", or pick another data.split_seed",
    "group": "Add groups holding those classes, or pick another data.split_seed",
    "hash": _KEYED_UNSEEN_FIX,  # the streaming data-prep's split
}


@dataclass
class SplitResult:
    """Positions (into the prepared rows) of each split, and what the strategy left out."""

    strategy: str
    indices: dict[str, np.ndarray]
    dropped_by_time_gap: np.ndarray = field(default_factory=lambda: np.array([], dtype=np.int64))
    time_ranges: dict[str, tuple[float, float]] = field(default_factory=dict)
    cut_order: np.ndarray | None = None  # row order an unshuffled cut followed
    seed: int | None = None  # the split seed a keyed split (random, stratified, group) used


def target_shares(config: DataConfig) -> dict[str, float]:
    """The share of the rows each split is meant to hold."""
    test, val = config.test_fraction, config.val_fraction
    return {"train": 1.0 - val - test, "val": val, "test": test}


def _counts(n: int, config: DataConfig) -> tuple[int, int, int]:
    n_test = round(n * config.test_fraction)
    n_val = round(n * config.val_fraction)
    return n - n_val - n_test, n_val, n_test


def split_keys(hashes: np.ndarray, seed: int, purpose: str) -> np.ndarray:
    """A number in [0, 1) per content hash, uniform and fixed by (seed, purpose, hash):
    ``purpose`` keeps the split, the row order and the near-duplicate sample independent."""
    keys = np.empty(len(hashes), dtype=np.float64)
    for i, value in enumerate(np.asarray(hashes).tolist()):
        digest = hashlib.sha256(f"{seed}:{purpose}:{value}".encode()).digest()
        keys[i] = int.from_bytes(digest[:8], "big") / _KEY_SCALE
    return keys


def split_codes(keys: np.ndarray, val_fraction: float, test_fraction: float) -> np.ndarray:
    """0 (train), 1 (val) or 2 (test) per key: test below ``test_fraction`` of the key range,
    then val, then train. A key never moves, so neither does its split."""
    return np.where(keys < test_fraction, 2, np.where(keys < test_fraction + val_fraction, 1, 0))


def assign_splits(
    hashes: np.ndarray, seed: int, val_fraction: float, test_fraction: float
) -> dict[str, np.ndarray]:
    """Positions of each split, each example assigned on its own by its content hash
    (:func:`split_codes` of the ``"split"`` keys). So the split sizes, and the class
    proportions in each split, match the fractions in expectation, not exactly: stratified
    only on average, with binomial spread (about ``2 sqrt(f (1 - f) / n)`` for a class of
    ``n`` rows and a fraction ``f``)."""
    code = split_codes(split_keys(hashes, seed, "split"), val_fraction, test_fraction)
    parts = {name: np.flatnonzero(code == index) for index, name in enumerate(SPLITS)}
    for name, rows in parts.items():
        if len(rows) == 0:
            raise DatasetError(
                f"the {name} split is empty ({len(hashes)} examples, each assigned by its "
                f"content hash): add examples, or {FILL_SPLIT_FIX[name]}"
            )
    return parts


def shuffled_split(hashes: np.ndarray, config: DataConfig, seed: int) -> dict[str, np.ndarray]:
    """Train/val/test positions of ``split: random`` and ``split: stratified`` (the same
    draw: a function of one row cannot look at the other rows' labels, so stratification
    holds in expectation and the data report shows each class's shares)."""
    return assign_splits(hashes, seed, config.val_fraction, config.test_fraction)


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
    """Whole entities go to one split: each group's split is drawn from its id and the seed
    (:func:`split_codes` of the ``"group"`` keys), so a group keeps its split when others are
    added. The row shares follow the fractions in expectation, closer the more groups."""
    names, inverse = np.unique(groups, return_inverse=True)
    if len(names) < 3:
        raise DatasetError(
            f"split: group needs at least 3 distinct groups, the data has {len(names)}; "
            "choose a finer data.group_column or another split"
        )
    keys = split_keys(names, seed, "group")
    row_split = split_codes(keys, config.val_fraction, config.test_fraction)[inverse.ravel()]
    parts = {name: np.flatnonzero(row_split == code) for code, name in enumerate(SPLITS)}
    for name, rows in parts.items():
        if len(rows) == 0:
            raise DatasetError(
                f"split: group left the {name} split empty ({len(names)} groups, each "
                f"assigned by a hash of its id): add groups, {FILL_SPLIT_FIX[name]}, or pick "
                "another data.split_seed"
            )
    return parts


def split_rows(raw: RawDataset, hashes: np.ndarray, config: DataConfig, seed: int) -> SplitResult:
    """Apply ``config.split`` (``hashes``: each row's content hash; ``seed``: the run's, which
    ``data.split_seed`` overrides); refuse combinations that would leak (shuffled time)."""
    strategy = config.split
    if raw.time is not None and strategy in SHUFFLED and not config.allow_shuffled_time:
        raise DatasetError(
            f"the data declares a time column but data.split is '{strategy}': shuffling "
            "time-ordered rows trains on the future; use split: time, or set "
            "data.allow_shuffled_time=true if the rows are truly exchangeable"
        )
    split_seed = config.resolved_split_seed(seed)
    if strategy in SHUFFLED:
        return SplitResult(strategy, shuffled_split(hashes, config, split_seed), seed=split_seed)
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
    return SplitResult(strategy, group_split(raw.groups, config, split_seed), seed=split_seed)


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
                + _UNSEEN_FIX.get(result.strategy, _UNSEEN_FIX["ordered"])
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
        **({} if result.seed is None else {"split_seed": result.seed}),
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
