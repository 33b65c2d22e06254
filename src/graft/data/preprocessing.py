"""Preprocessing fitted on the train split only, saved as state so serving repeats it.

Two parts. Missing-value filling (tabular) rewrites the stored features: NaNs become the
train median and columns with gaps in train gain a 0/1 indicator. Scaling is not applied to
the stored arrays: the model's ``Standardize`` stem computes ``(x - mean) / std`` from
``manifest.tasks[task].mean/std``, so every method is expressed in that form.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from graft.errors import DatasetError

NormalizeMethod = str  # "standardize" | "minmax" | "divide_by_255" | "none"


@dataclass
class MissingValueFill:
    """Per source column: the train median used for NaNs; indicator columns are appended in
    the order of ``indicator_columns`` (named ``<column>_missing``)."""

    medians: list[float] = field(default_factory=list)
    indicator_columns: list[int] = field(default_factory=list)


def fit_missing_fill(x_train: np.ndarray, names: list[str]) -> MissingValueFill:
    missing = np.isnan(x_train)
    all_missing = np.flatnonzero(missing.all(axis=0))
    if len(all_missing):
        raise DatasetError(
            f"columns {[names[i] for i in all_missing]} have no value in the train split, "
            "so no fill value can be learned; drop them"
        )
    medians = np.nanmedian(x_train, axis=0) if missing.any() else np.median(x_train, axis=0)
    return MissingValueFill(
        medians=medians.astype(float).tolist(),
        indicator_columns=np.flatnonzero(missing.any(axis=0)).astype(int).tolist(),
    )


def apply_missing_fill(x: np.ndarray, fill: MissingValueFill) -> np.ndarray:
    """NaN -> train median, plus one 0/1 column per indicator; the same on every split."""
    missing = np.isnan(x)
    filled = np.where(missing, np.asarray(fill.medians, dtype=x.dtype)[None, :], x)
    indicators = missing[:, fill.indicator_columns].astype(x.dtype)
    return np.concatenate([filled, indicators], axis=1)


def scaling_statistics(
    x_train: np.ndarray, kind: str, method: NormalizeMethod
) -> tuple[list[float], list[float]]:
    """``(mean, std)`` per channel (images) or column (tables), from train rows only.

    The model stem always computes ``(x - mean) / std``; the other methods are written as
    equivalents so that stem applies them unchanged: min-max is ``mean = min`` and
    ``std = max - min``; divide-by-255 is ``mean = 0``, ``std = 255``; none is ``0`` / ``1``.
    Zero spreads become 1 so constant columns pass through without NaN.
    """
    axes = (0, 2, 3) if kind == "image" else (0,)
    channels = x_train.shape[1]
    if method == "standardize":
        center, scale = x_train.mean(axis=axes), x_train.std(axis=axes)
    elif method == "minmax":
        center = x_train.min(axis=axes)
        scale = x_train.max(axis=axes) - center
    elif method == "divide_by_255":
        center, scale = np.zeros(channels), np.full(channels, 255.0)
    elif method == "none":
        center, scale = np.zeros(channels), np.ones(channels)
    else:
        raise DatasetError(f"unknown normalization '{method}'")
    scale = np.where(scale < 1e-8, 1.0, scale)
    return np.asarray(center, dtype=float).tolist(), np.asarray(scale, dtype=float).tolist()
