"""The transfer-finetune stage's cross-validated accuracy estimate.

The target task is small (200 labelled images in the default preset), which is where one
holdout split is least reliable. When ``evaluate.protocol.name`` is not ``holdout``, the stage
also runs the protocol on the pooled target train+val rows (the test split is never read),
one fresh in-process model per fold, and records the mean ± std in its MLflow run and in
``cv.json`` next to the model. The fold trainer comes from the stage (graft.train's in-process
finetune loop): evaluate never imports graft.train.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from graft.config import GraftConfig
from graft.data.folds import FoldData
from graft.evaluate.protocols import ProtocolResult, linear_probe, run_protocol
from graft.io import tracking

log = logging.getLogger(__name__)

CV_FILE = "cv.json"


class FoldTrainer(Protocol):
    """Trains a fresh model on one fold's train rows and returns its accuracy on the fold's
    validation rows; ``records`` keeps each fit's audit trail (written to ``cv.json``)."""

    records: list[dict[str, Any]]

    def __call__(self, data: FoldData) -> float: ...


def _pooled_rows(train_path: str, val_path: str) -> tuple[np.ndarray, np.ndarray, int]:
    """Target train+val rows stacked, and the pipeline's own validation row count (the size
    of the holdout the protocol is compared with)."""
    parts = []
    for path in (train_path, val_path):
        with np.load(path) as archive:
            parts.append((archive["x"], archive["y"]))
    x = np.concatenate([parts[0][0], parts[1][0]])
    y = np.concatenate([parts[0][1], parts[1][1]])
    return x, y, len(parts[1][1])


def cross_validate_finetune(
    config: GraftConfig,
    trainer: FoldTrainer,
    split_paths: tuple[str, str],
    output_dir: Path,
    run_id: str,
) -> ProtocolResult:
    """Run ``evaluate.protocol`` with ``trainer`` (the finetune recipe) over the pooled rows
    of ``split_paths`` (the target train and val ``.npz``); log the ``cv_*`` metrics to the
    stage run ``run_id`` and write ``output_dir/cv.json``."""
    settings = config.evaluate.protocol
    x, y, val_rows = _pooled_rows(*split_paths)
    result = run_protocol(
        x,
        y,
        settings,
        trainer,
        config.seed,
        holdout_val_size=val_rows,
        probe_score=linear_probe(
            config.evaluate.linear_baseline_max_iter, config.evaluate.linear_baseline_max_rows
        ),
    )
    log.info(
        "transfer-finetune %s (%s): val accuracy %.4f ± %.4f over %d fits on %d pooled rows",
        result.protocol,
        result.reason,
        result.mean,
        result.std,
        result.fits,
        len(y),
    )
    report = {**result.to_dict(), "pooled_rows": len(y), "fold_records": trainer.records}
    output_dir.mkdir(parents=True, exist_ok=True)
    path = output_dir / CV_FILE
    path.write_text(json.dumps(report, indent=2))

    logger = tracking.logger_for(config, run_id)
    logger.tags({"cv_protocol": result.protocol, "cv_protocol_reason": result.reason[:5000]})
    summary = {
        "cv_mean_val_accuracy": result.mean,
        "cv_std_val_accuracy": result.std,
        "cv_folds": float(settings.folds if result.protocol != "holdout" else 1),
        "cv_fits": float(result.fits),
        "cv_pooled_rows": float(len(y)),
    }
    if result.probe is not None:
        summary["cv_probe_mean_val_accuracy"] = result.probe.mean
        summary["cv_probe_std_val_accuracy"] = result.probe.std
    logger.metrics(summary, step=0)
    # one point per fit: the fold's score at step = its position (repeat * k + fold)
    for step, fold in enumerate(result.folds):
        logger.metrics({"cv_fold_val_accuracy": fold.score}, step=step)
    for repeat, mean in enumerate(result.repeat_means):
        logger.metrics({"cv_repeat_mean_val_accuracy": mean}, step=repeat)
    logger.artifact(path, "cv")
    return result
