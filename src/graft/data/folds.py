"""A fold of the rows: the train/validation partition a protocol deals, and the data a
``train_and_score`` function receives for it (graft.evaluate.protocols deals them, the
in-process trainers of graft.train consume them)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Fold:
    """One train/validation partition of the rows, by row index."""

    repeat: int
    index: int
    train: np.ndarray
    val: np.ndarray


@dataclass(frozen=True)
class FoldData:
    """What ``train_and_score`` receives: the fold's rows and the model's init seed (the same
    for every fold, so every fold starts from identical weights under a fixed seed)."""

    fold: Fold
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    seed: int
