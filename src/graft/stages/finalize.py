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
    """End FAILED each run of KFP run ``kfp_run_id`` still RUNNING, tagged ``graft.failure``
    with why. After a success only runs under the parent can be left (the killed attempt of a
    stage KFP retried): export ended the parent FINISHED, and it stays so. Raises
    TrackingError, naming the pipeline's own failure first, when MLflow cannot be reached
    after a failure; after a success that is only a warning (the pipeline did its work)."""
    state = state or "UNKNOWN"
    succeeded = state in SUCCEEDED_STATES
    if succeeded:
        failure = f"KFP run {kfp_run_id} ended {state} without this run: a killed attempt"
    else:
        failure = f"KFP run {kfp_run_id} ended {state}"
        if error_message:
            failure += f": {error_message}"
        log.error("%s; ending FAILED the MLflow runs it left RUNNING", failure)
    try:
        parents = tracking.pipeline_run_ids(config, kfp_run_id)
        ended = [
            run_id
            for parent in parents
            for run_id in tracking.fail_unfinished_runs(
                config, parent, failure, parent_too=not succeeded
            )
        ]
    except Exception as exc:  # whatever MLflow raised: re-raised with the pipeline's failure
        cause = " ".join(str(exc).split())[:500]
        if succeeded:
            log.warning(
                "KFP run %s ended %s; MLflow not reachable to check: %s", kfp_run_id, state, cause
            )
            return FinalizeOutput(state, succeeded=True)
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
    return FinalizeOutput(state, succeeded, parents, ended)
