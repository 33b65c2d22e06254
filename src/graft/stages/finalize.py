"""The pipeline's exit task: after the six stages, whatever became of them, end FAILED the
MLflow runs that a failed, cancelled or killed pipeline run left RUNNING.

A stage that raises ends its own run and the parent run FAILED (``tracking.stage_run``). A
stage that is killed (the OOM killer, SIGKILL after the grace period, an evicted pod, a lost
node) gets no chance to, and its run and the parent would show RUNNING for ever. KFP runs this
through ``dsl.ExitHandler`` with the final status of the stages' group. An exit task cannot
take the stages' outputs, so it finds the parent run by its ``graft.kfp_run_id`` tag.
"""

from __future__ import annotations

import logging

from graft.config import GraftConfig
from graft.errors import TrackingError
from graft.io import tracking
from graft.stages.outputs import FinalizeOutput

log = logging.getLogger(__name__)

# What a group that succeeded reports: SUCCEEDED from KFP's local runner, Vertex and the
# backends that keep task states; COMPLETE or CACHED, ML Metadata's execution states, from the
# backends that read those (KFP 2.14, the one infra/bootstrap.sh installs). Any other state,
# RUNNING included (a killed task's execution is never closed), ends the runs left RUNNING.
SUCCEEDED_STATES = frozenset({"SUCCEEDED", "COMPLETE", "CACHED"})


def run(
    config: GraftConfig, kfp_run_id: str, state: str, error_message: str = ""
) -> FinalizeOutput:
    """Nothing when the stages succeeded (export ended the parent run FINISHED). Otherwise end
    FAILED each run of KFP run ``kfp_run_id`` still RUNNING, tagged ``graft.failure`` with
    why. Raises TrackingError, naming the pipeline's own failure first, when MLflow cannot
    be reached."""
    state = state or "UNKNOWN"
    if state in SUCCEEDED_STATES:
        log.info("KFP run %s ended %s: export ended its MLflow run", kfp_run_id, state)
        return FinalizeOutput(state, succeeded=True)
    failure = f"KFP run {kfp_run_id} ended {state}"
    if error_message:
        failure += f": {error_message}"
    log.error("%s; ending FAILED the MLflow runs it left RUNNING", failure)
    try:
        parents = tracking.pipeline_run_ids(config, kfp_run_id)
        ended = [
            run_id
            for parent in parents
            for run_id in tracking.fail_unfinished_runs(config, parent, failure)
        ]
    except Exception as exc:  # whatever MLflow raised: re-raised with the pipeline's failure
        cause = " ".join(str(exc).split())[:500]
        raise TrackingError(
            f"{failure}; its MLflow runs at {config.resolved_tracking_uri()} could not be "
            f"ended FAILED and may show RUNNING: {type(exc).__name__}: {cause}"
        ) from exc
    if not parents:
        log.warning(
            "no MLflow run is tagged %s=%s: data-prep ended before it opened the pipeline's "
            "run, so there is none to end",
            tracking.KFP_RUN_ID_TAG,
            kfp_run_id,
        )
    else:
        log.info("MLflow runs %s: ended FAILED %s", parents, ended or "none (none was RUNNING)")
    return FinalizeOutput(state, False, parents, ended)
