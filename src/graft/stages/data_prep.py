"""The data-prep stage: the dataset, its sealed test rows and the pipeline's MLflow run."""

from __future__ import annotations

import logging
from pathlib import Path

from graft.config import GraftConfig
from graft.data.holdout import default_holdout_dir
from graft.data.manifest import DataManifest
from graft.data.prepare import prepare_dataset
from graft.data.splits import SPLIT_MANIFEST_FILE, read_task_splits
from graft.io import tracking
from graft.stages.outputs import DataPrepOutput
from graft.stages.run_records import write_run_record

log = logging.getLogger(__name__)


def run(
    config: GraftConfig,
    output_dir: str,
    kfp_run_id: str = "local",
    parent_run_id: str = "",
    test_split_dir: str = "",
) -> DataPrepOutput:
    """Prepare the dataset (train/val) into ``output_dir`` and the sealed test rows into
    ``test_split_dir`` (default ``<output_dir>-test``); log each task's split manifests as
    MLflow dataset inputs of the data-prep run."""
    holdout = test_split_dir or str(default_holdout_dir(output_dir))
    manifest = prepare_dataset(config.data, config.seed, output_dir, holdout)
    parent = parent_run_id or tracking.start_pipeline_run(config, kfp_run_id)
    tracking.logger_for(config, parent).tags({"graft.dataset_hash": manifest.dataset_hash})
    with tracking.stage_run(config, parent, "data-prep") as run_id:
        _log_dataset(config, run_id, manifest, Path(output_dir))
    write_run_record(output_dir, "data-prep", run_id, parent)
    log.info("data-prep: %d rows, hash %s", manifest.num_rows, manifest.dataset_hash)
    return DataPrepOutput(str(output_dir), parent, manifest.dataset_hash, holdout)


def _log_dataset(config: GraftConfig, run_id: str, manifest: DataManifest, out: Path) -> None:
    logger = tracking.logger_for(config, run_id)
    logger.tags({"graft.dataset_hash": manifest.dataset_hash})
    sizes = {
        f"{task}_{split}_rows": float(n)
        for task, info in manifest.tasks.items()
        for split, n in info.sizes.items()
    }
    logger.metrics(
        {**sizes, "duplicates_dropped": manifest.duplicates.exact_duplicates_dropped}, step=0
    )
    for name in ("manifest.json", "report.json", "report.html"):
        logger.artifact(out / name, "data")
    splits = read_task_splits(out / SPLIT_MANIFEST_FILE)
    tracking.log_split_inputs(config, run_id, splits, manifest.dataset_hash)
