"""The domain classifier: can a model tell the train rows from the snapshot's rows?

Gradient-boosted trees (they model interactions, so a change in how two features move
together is visible even when each feature's histogram is not) are fitted in stratified 5-fold
cross-validation on the reference's sample (label 0) and a seeded sample of the snapshot
(label 1); the AUC of the held-out predicted probabilities is the figure. 0.5: the two are
indistinguishable; 1.0: every row gives away where it came from.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.metrics import roc_auc_score, roc_curve
from sklearn.model_selection import StratifiedKFold, cross_val_predict
from threadpoolctl import threadpool_limits

FOLDS = 5
# OpenMP threads of the trees: one. A pod's CPU limit is not what the library sees as the
# machine's cores, and on 2 busy cores the default of one thread per core took 8-20 s where
# one thread takes about 1.5 s (3,000 rows)
THREADS = 1
ROC_POINTS = 101  # the curve as the report draws it, at evenly spaced false positive rates


@dataclass(frozen=True)
class DomainCheck:
    auc: float
    reference_rows: int
    snapshot_rows: int
    false_positive_rate: list[float]  # the ROC curve, for the report (ROC_POINTS points)
    true_positive_rate: list[float]


def domain_auc(
    reference: np.ndarray, snapshot: np.ndarray, max_rows: int, seed: int
) -> DomainCheck | None:
    """The cross-validated AUC of reference rows against at most ``max_rows`` snapshot rows
    (both as drift columns, NaN allowed); None when either side has fewer rows than folds."""
    rng = np.random.default_rng(seed)
    current = snapshot[np.sort(rng.permutation(len(snapshot))[:max_rows])]
    if min(len(reference), len(current)) < FOLDS:
        return None
    x = np.vstack([reference, current])
    y = np.concatenate([np.zeros(len(reference)), np.ones(len(current))]).astype(np.int64)
    model = HistGradientBoostingClassifier(
        max_iter=100, max_leaf_nodes=15, early_stopping=False, random_state=seed
    )
    folds = StratifiedKFold(n_splits=FOLDS, shuffle=True, random_state=seed)
    with threadpool_limits(limits=THREADS):
        scores = cross_val_predict(model, x, y, cv=folds, method="predict_proba")[:, 1]
    fpr, tpr, _ = roc_curve(y, scores)
    grid = np.linspace(0.0, 1.0, ROC_POINTS)
    return DomainCheck(
        auc=float(roc_auc_score(y, scores)),
        reference_rows=len(reference),
        snapshot_rows=len(current),
        false_positive_rate=grid.tolist(),
        true_positive_rate=np.interp(grid, fpr, tpr).tolist(),
    )
