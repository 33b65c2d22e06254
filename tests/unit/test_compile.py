"""The committed pipeline IR and component specs are generated: a stale file fails here."""

from pathlib import Path

import yaml
from compiled_pipeline import (
    compile_tiny,
    condition_of,
    conditions_of,
    stage_group,
    stage_tasks,
)

from graft.config import FINALIZE_TASK
from graft.kfp.compile import PIPELINE_FILE, compile_all
from graft.kfp.components import STAGE_FUNCTIONS

ROOT = Path(__file__).resolve().parents[2]


def test_committed_yaml_is_not_stale(tmp_path: Path) -> None:
    written = compile_all(tmp_path / "pipelines", tmp_path / "components")
    for path in written:
        committed = ROOT / path.parent.name / path.name
        assert committed.exists(), f"{committed} missing: run `graft compile`"
        assert committed.read_text() == path.read_text(), f"{committed} stale: run `graft compile`"


def test_pipeline_ir_has_the_stages_in_order() -> None:
    spec, platform = yaml.safe_load_all((ROOT / "pipelines" / PIPELINE_FILE).read_text())
    executors = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    assert len(executors) == 10  # open-run, monitor, the stages (two backbone branches), exit
    assert all(
        e["podMetadata"]["labels"] == {"graft.dev/pipeline": "true"} for e in executors.values()
    )
    # cluster.shm_size's default: Ray in a task's pod gets more than 64 MiB of /dev/shm
    assert all(
        [(m["mountPath"], m["medium"]) for m in e["emptyDirMounts"]] == [("/dev/shm", "Memory")]
        for e in executors.values()
    )
    tasks = stage_tasks(spec)
    assert set(tasks) == set(STAGE_FUNCTIONS)
    # the monitor decides whether the training stages run at all (monitor.retrain_when)
    retrain = "inputs.parameter_values['pipelinechannel--monitor-retrain'] == 'true'"
    assert conditions_of(spec, "open-run") == conditions_of(spec, "monitor") == []
    for stage in set(STAGE_FUNCTIONS) - {"open-run", "monitor"}:
        assert conditions_of(spec, stage)[0] == retrain, stage
    # the backbone branch: pretrain, or import-backbone for an external one or the warm
    # start's champion (dsl.If/Else on open-run's `backbone` output), and finetune, tune and
    # evaluate take whichever ran
    assert condition_of(spec, "pretrain") == (
        "inputs.parameter_values['pipelinechannel--open-run-backbone'] == 'pretrain'"
    )
    assert condition_of(spec, "import-backbone") == (
        "!(inputs.parameter_values['pipelinechannel--open-run-backbone'] == 'pretrain')"
    )
    for consumer in ("transfer-finetune", "tune", "evaluate"):
        backbone = tasks[consumer]["inputs"]["artifacts"]["pretrained"]["taskOutputArtifact"]
        assert backbone["producerTask"].startswith("condition-branches")
        assert "oneof" in backbone["outputArtifactKey"]
    # (open-run's outputs reach the training stages through the monitor's dsl.If)
    assert set(tasks["transfer-finetune"]["dependentTasks"]) == {
        backbone["producerTask"],
        "data-prep",
    }
    assert set(tasks["export"]["dependentTasks"]) == {"data-prep", "evaluate", "tune"}
    # stages that read "the current champion" must never be served from cache
    assert tasks["evaluate"]["cachingOptions"].get("enableCache", False) is False
    assert tasks["export"]["cachingOptions"].get("enableCache", False) is False
    # the config travels as an editable pipeline parameter with the default preset
    default = spec["root"]["inputDefinitions"]["parameters"]["config_json"]["defaultValue"]
    assert '"builtin:fashion_mnist"' in default


def test_the_exit_task_runs_after_the_stages_whatever_became_of_them(tmp_path: Path) -> None:
    spec, platform = compile_tiny(tmp_path)
    group_name, group = stage_group(spec)
    root = spec["root"]["dag"]["tasks"]
    assert set(root) == {group_name, FINALIZE_TASK}  # every stage runs inside the handler
    assert set(stage_tasks(spec)) == set(STAGE_FUNCTIONS)
    exit_task = root[FINALIZE_TASK]
    # KFP's mark of an exit handler: it runs once the group is done, failed or not
    assert exit_task["dependentTasks"] == [group_name]
    assert exit_task["triggerPolicy"] == {"strategy": "ALL_UPSTREAM_TASKS_COMPLETED"}
    parameters = exit_task["inputs"]["parameters"]
    assert parameters["status"] == {"taskFinalStatus": {"producerTask": group_name}}
    # it finds the parent run by the KFP run's id, the one open-run tags the run with
    opened = stage_tasks(spec)["open-run"]["inputs"]["parameters"]
    assert parameters["kfp_run_id"] == opened["kfp_run_id"]
    assert parameters["kfp_run_id"] == {"runtimeValue": {"constant": "{{$.pipeline_job_uuid}}"}}
    assert exit_task["cachingOptions"].get("enableCache", False) is False
    assert not group.get("triggerPolicy")  # the stages themselves run as before
    # the same pod settings as every stage: the label MLflow's NetworkPolicy admits, the
    # MLflow user (required) and its own small resources
    executor = platform["exec-finalize-run"]
    assert executor["podMetadata"]["labels"] == {"graft.dev/pipeline": "true"}
    (mlflow_user,) = [s for s in executor["secretAsEnv"] if s["secretName"] == "graft-mlflow-auth"]
    assert mlflow_user["optional"] is False
    resources = spec["deploymentSpec"]["executors"]["exec-finalize-run"]["container"]["resources"]
    assert (resources["resourceCpuRequest"], resources["resourceMemoryLimit"]) == ("250m", "2Gi")


def test_component_specs_run_the_graft_image() -> None:
    for name in STAGE_FUNCTIONS:
        spec = yaml.safe_load((ROOT / "components" / f"{name}.yaml").read_text())
        executor = next(iter(spec["deploymentSpec"]["executors"].values()))
        assert executor["container"]["image"].startswith("ghcr.io/graft-ml/graft:")
        assert "pip install" not in " ".join(executor["container"]["command"])


# What a task's inputs may be for KFP's cache to serve it again on the same data and config:
# the config and the run parameters, the data's digest, and the artifacts of cacheable tasks.
RUN_PARAMETERS = {"config_json", "preset", "compiled_preset", "data_source", "overrides"}


CHANNEL = "pipelinechannel--"  # how a branch's sub-DAG names what it passes in


def _run_unique_inputs(task: dict, cacheable: set[str]) -> list[str]:
    """The inputs of ``task`` that differ between two runs of the same data and config."""
    unique = []
    for name, value in task["inputs"].get("parameters", {}).items():
        if "runtimeValue" in value:  # a constant, or a placeholder: the run's id, a timestamp
            if "{{$" in str(value["runtimeValue"]["constant"]):
                unique.append(name)
            continue
        if "componentInputParameter" in value:
            source = value["componentInputParameter"].removeprefix(CHANNEL)
        else:
            output = value["taskOutputParameter"]
            source = f"{output['producerTask']}-{output['outputParameterKey']}"
        # open-run's other outputs (its parent run) are per run
        if source not in RUN_PARAMETERS and source != "open-run-data_digest":
            unique.append(name)
    for name, value in task["inputs"].get("artifacts", {}).items():
        if "taskOutputArtifact" in value:
            producer = value["taskOutputArtifact"]["producerTask"]
        else:
            producer = value["componentInputArtifact"].removeprefix(CHANNEL)
        if not any(
            producer.startswith(f"{task_name}-") or producer == task_name for task_name in cacheable
        ):
            unique.append(name)
    return unique


def test_data_prep_and_pretrain_take_no_run_unique_input_so_kfp_can_cache_them() -> None:
    spec, _ = yaml.safe_load_all((ROOT / "pipelines" / PIPELINE_FILE).read_text())
    tasks = stage_tasks(spec)
    cacheable = {"data-prep", "pretrain"}
    for name in cacheable:
        assert _run_unique_inputs(tasks[name], cacheable) == [], name
        assert tasks[name]["cachingOptions"].get("enableCache", True) is not False
    # the data's digest comes from open-run, which runs every time (it reads the data now),
    # through the monitor's dsl.If
    assert tasks["data-prep"]["inputs"]["parameters"]["data_digest"] == {
        "componentInputParameter": "pipelinechannel--open-run-data_digest"
    }
    assert tasks["open-run"]["cachingOptions"].get("enableCache", False) is False
    # the check itself sees a run-unique input: open-run's and every later stage's
    assert _run_unique_inputs(tasks["open-run"], cacheable) == ["kfp_run_id"]
    assert "parent_run_id" in _run_unique_inputs(tasks["transfer-finetune"], cacheable)
