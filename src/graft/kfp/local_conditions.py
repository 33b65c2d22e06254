"""``dsl.If`` on a sibling task's output in KFP's local runner.

A condition whose ``dsl.If`` has no ``dsl.Else`` compiles to a condition task in the DAG of
the task it reads (``inputs.parameter_values['pipelinechannel--monitor-retrain']``: task
``monitor``, output ``retrain``). KFP 2.17's local orchestrator parses such a channel as a
task output only when its name holds ``--`` or ``-Output``; anything else it looks up among
the enclosing DAG's inputs, finds nothing, and skips the branch with a warning, although the
compiled IR is valid and a KFP server evaluates it. While a local run executes, this resolves
such a channel as a task output when one of the DAG's tasks has produced it: exactly one way
of cutting the name into a task and an output key must match.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

_CHANNEL = "pipelinechannel--"


@contextmanager
def sibling_output_conditions() -> Iterator[None]:
    from kfp.local.orchestrator.enhanced_dag_orchestrator import ConditionEvaluator

    original = ConditionEvaluator.__dict__["_resolve_pipeline_channel"]
    resolve = original.__func__

    def resolved(channel_ref: str, io_store: Any) -> Any:
        value = resolve(channel_ref, io_store)
        return value if value is not None else _sibling_output(channel_ref, io_store)

    ConditionEvaluator._resolve_pipeline_channel = staticmethod(resolved)
    try:
        yield
    finally:
        ConditionEvaluator._resolve_pipeline_channel = original


def _sibling_output(channel_ref: str, io_store: Any) -> Any:
    name = channel_ref.removeprefix(_CHANNEL)
    found = []
    for cut in range(1, len(name)):
        if name[cut] != "-":
            continue
        try:
            found.append(io_store.get_task_output(name[:cut], name[cut + 1 :]))
        except (KeyError, ValueError):
            continue
    return found[0] if len(found) == 1 else None
