"""The transfer-finetune stage's cross-validated accuracy estimate.

The target task is small (200 labelled images in the default preset), which is where one
holdout split is least reliable. When ``evaluate.protocol.name`` is not ``holdout``, the stage
also runs the protocol on the pooled target train+val rows (the test split is never read),
one fresh in-process model per fold, and records the mean ± std in its MLflow run and in
``cv.json`` next to the model. The fold trainer comes from the stage (graft.train's in-process
finetune loop): evaluate never imports graft.train.

Under ``data.loader: streaming`` the splits are manifests: their rows are decoded into memory
here (graft.data.streaming_read, each file's or row's hash checked), as evaluate decodes its
test split. The target task is small by design; one that would not fit is refused before the
finetune fit starts (:func:`check_pooled_rows_fit`), naming the settings that shrink it.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pyarrow.parquet as pq

from graft.config import GraftConfig
from graft.data.folds import FoldData
from graft.data.intake_limits import GIB, memory_headroom
from graft.data.manifest import DataManifest
from graft.data.streaming_manifest import MANIFEST_SUFFIX
from graft.data.streaming_read import load_streamed_split
from graft.errors import DatasetError
from graft.evaluate.protocols import ProtocolResult, linear_probe, run_protocol
from graft.io import tracking

log = logging.getLogger(__name__)

CV_FILE = "cv.json"
# float32 copies of the pooled rows held at the peak: both splits and their stack, then the
# stack and one fold's train and val rows (the fold trainer's tensors share that memory)
POOLED_COPIES = 2


class FoldTrainer(Protocol):
    """Trains a fresh model on one fold's train rows and returns its accuracy on the fold's
    validation rows; ``records`` keeps each fit's audit trail (written to ``cv.json``)."""

    records: list[dict[str, Any]]

    def __call__(self, data: FoldData) -> float: ...


def _streamed(path: str) -> bool:
    return path.endswith(MANIFEST_SUFFIX)


def check_pooled_rows_fit(config: GraftConfig, split_paths: tuple[str, str]) -> None:
    """Refuse a streamed target task whose pooled train+val rows would not fit in the memory
    this process has left (an in-memory dataset's did fit in data-prep). Cheap: it reads the
    manifests' row counts, no row; the finetune stage calls it before its fit."""
    if not all(_streamed(path) for path in split_paths):
        return
    rows = sum(pq.read_metadata(path).num_rows for path in split_paths)
    manifest = DataManifest.read(Path(split_paths[0]).parent.parent)
    needed = POOLED_COPIES * 4 * rows * int(np.prod(manifest.input_shape))
    headroom = memory_headroom()
    if headroom is not None and needed > headroom:
        raise DatasetError(
            f"evaluate.protocol.name={config.evaluate.protocol.name} trains on the target "
            f"task's {rows} train+val rows held in memory (data.loader=streaming decodes them "
            f"here), which needs {needed / GIB:.1f} GiB, more than the "
            f"{max(headroom, 0) / GIB:.1f} GiB this process has left; set "
            "evaluate.protocol.name=holdout, subsample the target train split with "
            "data.transfer.target_train_size, or give the stage more memory"
        )


def _split_rows(path: str) -> tuple[np.ndarray, np.ndarray]:
    if _streamed(path):  # data.loader: streaming: a manifest, its rows decoded here
        listed = Path(path)
        return load_streamed_split(listed, listed.parent.parent)
    with np.load(path) as archive:
        return archive["x"], archive["y"]


def _pooled_rows(train_path: str, val_path: str) -> tuple[np.ndarray, np.ndarray, int]:
    """Target train+val rows stacked, and the pipeline's own validation row count (the size
    of the holdout the protocol is compared with)."""
    parts = [_split_rows(path) for path in (train_path, val_path)]
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
    of ``split_paths`` (the target train and val ``.npz``, or their split manifests); log
    the ``cv_*`` metrics to the stage run ``run_id`` and write ``output_dir/cv.json``."""
    settings = config.evaluate.protocol
    check_pooled_rows_fit(config, split_paths)
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
