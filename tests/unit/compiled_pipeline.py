"""The tiny preset's pipeline compiled by KFP's compiler, as the tests of its IR read it.

The stage tasks run inside the pipeline's ``dsl.ExitHandler`` group, a sub-DAG of the root
DAG; the exit task sits next to that group in the root DAG.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from kfp import compiler

from graft.config import load_config
from graft.kfp.pipeline import build_pipeline


def compile_tiny(tmp_path: Path, *overrides: str) -> tuple[dict, dict]:
    """The pipeline spec and the Kubernetes platform spec's executors."""
    config = load_config(preset="tiny", overrides=list(overrides))
    path = tmp_path / "pipeline.yaml"
    compiler.Compiler().compile(build_pipeline("registry.example/graft:test", config), str(path))
    spec, platform = yaml.safe_load_all(path.read_text())
    return spec, platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]


def stage_group(spec: dict) -> tuple[str, dict[str, Any]]:
    """The root DAG's task that runs the stages' group (its name and its task spec)."""
    (name,) = [
        name
        for name, task in spec["root"]["dag"]["tasks"].items()
        if "dag" in spec["components"][task["componentRef"]["name"]]
    ]
    return name, spec["root"]["dag"]["tasks"][name]


def stage_tasks(spec: dict) -> dict[str, dict[str, Any]]:
    """The stage tasks, by name, the two backbone branches' (pretrain, import-backbone)
    included: each sits in its own ``dsl.If`` sub-DAG."""
    _, group = stage_group(spec)
    return _container_tasks(spec, group["componentRef"]["name"])


def _container_tasks(spec: dict, component: str) -> dict[str, dict[str, Any]]:
    tasks: dict[str, dict[str, Any]] = {}
    for name, task in spec["components"][component]["dag"]["tasks"].items():
        reference = task["componentRef"]["name"]
        if "dag" in spec["components"][reference]:
            tasks.update(_container_tasks(spec, reference))
        else:
            tasks[name] = task
    return tasks


def conditions_of(spec: dict, task: str) -> list[str]:
    """The ``dsl.If`` expressions a task runs under, outermost first ([] outside any)."""
    _, group = stage_group(spec)
    return _conditions(spec, group["componentRef"]["name"], task) or []


def condition_of(spec: dict, task: str) -> str:
    """The innermost ``dsl.If`` expression a task runs under ("" outside any branch)."""
    found = conditions_of(spec, task)
    return found[-1] if found else ""


def _conditions(spec: dict, component: str, task: str) -> list[str] | None:
    """The conditions on the way from ``component``'s DAG down to ``task``; None if it is
    not in there."""
    tasks = spec["components"][component].get("dag", {}).get("tasks", {})
    if task in tasks:
        return []
    for child in tasks.values():
        inner = _conditions(spec, child["componentRef"]["name"], task)
        if inner is not None:
            condition = child.get("triggerPolicy", {}).get("condition")
            return ([condition] if condition else []) + inner
    return None


def pipeline_tasks(spec: dict) -> dict[str, dict[str, Any]]:
    """Every task that runs a container: the stages and the exit task."""
    group, _ = stage_group(spec)
    root = {name: task for name, task in spec["root"]["dag"]["tasks"].items() if name != group}
    return {**stage_tasks(spec), **root}


def executor_label(task: dict[str, Any]) -> str:
    return str(task["componentRef"]["name"]).replace("comp-", "exec-", 1)


def parameter_source(spec: dict, task: str, parameter: str) -> dict[str, Any]:
    """Where ``task``'s input ``parameter`` comes from, followed out of the stages' group to
    the pipeline: ``{"componentInputParameter": <pipeline parameter>}``, a runtime constant,
    or another task's output."""
    source = dict(pipeline_tasks(spec)[task]["inputs"]["parameters"][parameter])
    if task in stage_tasks(spec) and "componentInputParameter" in source:
        _, group = stage_group(spec)
        source = group["inputs"]["parameters"][source["componentInputParameter"]]
    return source
