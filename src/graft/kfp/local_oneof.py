"""``dsl.OneOf`` over artifacts in KFP's local runner.

KFP 2.17's local orchestrator resolves a ``dsl.OneOf`` of parameters (the branch that ran
wins) but refuses one of artifacts ("Expected 1 artifact in ArtifactSelectorSpec"), although
the compiled IR is valid and a KFP server runs it. Graft's DAG hands on its backbone, pretrained
or imported, through such a ``OneOf``; while a local run executes, this resolves artifact
selectors the way KFP resolves parameter ones: exactly one branch must have produced it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


@contextmanager
def oneof_artifacts() -> Iterator[None]:
    from kfp.local.orchestrator.orchestrator_utils import OrchestratorUtils

    original = OrchestratorUtils.__dict__["get_dag_output_artifacts"]
    OrchestratorUtils.get_dag_output_artifacts = classmethod(_dag_output_artifacts)
    try:
        yield
    finally:
        OrchestratorUtils.get_dag_output_artifacts = original


def _dag_output_artifacts(cls: Any, dag_outputs_spec: Any, io_store: Any) -> dict[str, Any]:
    outputs: dict[str, Any] = {}
    for key, selector_spec in dag_outputs_spec.artifacts.items():
        produced = []
        for selector in selector_spec.artifact_selectors:
            try:
                produced.append(
                    io_store.get_task_output(
                        selector.producer_subtask, selector.output_artifact_key
                    )
                )
            except (KeyError, ValueError):  # that branch was skipped
                continue
        if len(produced) != 1:
            raise ValueError(
                f"DAG output artifact '{key}': {len(produced)} branches produced it, expected 1"
            )
        outputs[key] = produced[0]
    return outputs
