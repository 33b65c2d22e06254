"""Which MLflow run produced a stage's output folder, so that a pipeline run that KFP served
that folder from its cache can name it.

data-prep and pretrain are cacheable (:mod:`graft.stages.open_run`). When KFP reuses their
outputs, their MLflow runs stay under the parent run of the pipeline run that computed them,
and the new parent run would hold no trace of them. Each writes a record of its run next to
its outputs; transfer-finetune, which runs every time, tags its own parent run with the runs
it reused (``graft.reused.<stage>``).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from graft.config import GraftConfig
from graft.io import tracking

log = logging.getLogger(__name__)

RUN_RECORD_FILE = "mlflow_run.json"
REUSED_TAG_PREFIX = "graft.reused."


def write_run_record(folder: str | Path, stage: str, run_id: str, parent_run_id: str) -> None:
    record = {"stage": stage, "run_id": run_id, "parent_run_id": parent_run_id}
    (Path(folder) / RUN_RECORD_FILE).write_text(json.dumps(record))


def link_reused_runs(
    config: GraftConfig, parent_run_id: str, folders: list[str | Path]
) -> dict[str, str]:
    """Tag ``parent_run_id`` with the run of each folder another pipeline run computed (KFP's
    cache served it here); stage -> run id of those tagged. A folder without a record (an
    imported backbone, an older release's) is skipped."""
    reused = {}
    for folder in folders:
        path = Path(folder) / RUN_RECORD_FILE
        if not path.is_file():
            continue
        record = json.loads(path.read_text())
        if record["parent_run_id"] != parent_run_id:
            reused[record["stage"]] = record["run_id"]
    if reused:
        tracking.logger_for(config, parent_run_id).tags(
            {f"{REUSED_TAG_PREFIX}{stage}": run_id for stage, run_id in reused.items()}
        )
        log.info("reused from KFP's cache: %s", ", ".join(f"{s} ({r})" for s, r in reused.items()))
    return reused
