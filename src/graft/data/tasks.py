"""The A/B transfer tasks' rows: which labels each task holds, its class ids, subsamples."""

from __future__ import annotations

import numpy as np
from sklearn.model_selection import train_test_split

from graft.data.splits import FILL_SPLIT_FIX
from graft.errors import DatasetError


def stratified_subsample(y: np.ndarray, limit: int | None, seed: int) -> np.ndarray:
    """Sorted positions of at most ``limit`` rows, the class proportions kept (all if None)."""
    indices = np.arange(len(y))
    if limit is None or limit >= len(y):
        return indices
    kept, _ = train_test_split(indices, train_size=limit, stratify=y, random_state=seed)
    return np.sort(kept)


def task_labels(y: np.ndarray, target_classes: list[int]) -> dict[str, list[int]]:
    """Each task's original labels: all of them for both without a class split."""
    all_classes = sorted(np.unique(y).tolist())
    if not target_classes:
        return {"source": all_classes, "target": all_classes}
    return {
        "source": [c for c in all_classes if c not in target_classes],
        "target": sorted(target_classes),
    }


def remapped_labels(y: np.ndarray, labels: list[int], task: str, split: str) -> np.ndarray:
    """``y`` as positions in ``labels``; every label must occur."""
    remap = {label: new for new, label in enumerate(labels)}
    task_y = np.array([remap[int(v)] for v in y], dtype=np.int64)
    missing = sorted(set(range(len(labels))) - set(task_y.tolist()))
    if missing:
        raise DatasetError(
            f"the {task} task's {split} split has no examples of classes "
            f"{[labels[m] for m in missing]} (a shuffled split draws each row on its own, so "
            f"a class of few rows can miss a small split): add rows of those classes, or "
            f"{FILL_SPLIT_FIX.get(split, 'lower the split fractions')}"
        )
    return task_y
