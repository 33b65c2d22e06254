"""A second common-sense baseline: a linear model a model with hidden layers should beat."""

from __future__ import annotations

import logging
import warnings

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

log = logging.getLogger(__name__)


def linear_baseline(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_test: np.ndarray,
    y_test: np.ndarray,
    max_iter: int,
    max_rows: int,
    seed: int,
) -> float:
    """Test accuracy of :func:`linear_baseline_predictions`."""
    predicted = linear_baseline_predictions(x_train, y_train, x_test, max_iter, max_rows, seed)
    return float((predicted == y_test).mean())


def linear_baseline_predictions(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_test: np.ndarray,
    max_iter: int,
    max_rows: int,
    seed: int,
) -> np.ndarray:
    """Per-row test predictions of LogisticRegression on flattened features standardized on
    train (what a paired test against the model needs).

    Fits on at most ``max_rows`` train rows (a seeded sample) so a large dataset stays cheap.
    A train split holding one class predicts that class everywhere.
    """
    flat_train = x_train.reshape(len(x_train), -1).astype(np.float64)
    flat_test = x_test.reshape(len(x_test), -1).astype(np.float64)
    if len(flat_train) > max_rows:
        rows = np.random.default_rng(seed).choice(len(flat_train), size=max_rows, replace=False)
        flat_train, y_train = flat_train[rows], y_train[rows]
    classes = np.unique(y_train)
    if len(classes) < 2:
        # no train rows at all: predict a label no row has (accuracy 0, as before)
        only = classes[0] if len(classes) else -1
        return np.full(len(flat_test), only, dtype=np.int64)
    scaler = StandardScaler().fit(flat_train)
    model = LogisticRegression(max_iter=max_iter, random_state=seed)
    with warnings.catch_warnings():
        # a small max_iter is the point of a cheap baseline; say so once instead of warning
        warnings.filterwarnings("ignore", category=ConvergenceWarning)
        model.fit(scaler.transform(flat_train), y_train)
    if int(np.max(model.n_iter_)) >= max_iter:
        log.info("linear baseline stopped at max_iter=%d before converging", max_iter)
    return np.asarray(model.predict(scaler.transform(flat_test)))
