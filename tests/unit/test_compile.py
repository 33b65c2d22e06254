"""The committed pipeline IR and component specs are generated: a stale file fails here."""

from pathlib import Path

import yaml

from graft.kfp.compile import PIPELINE_FILE, compile_all
from graft.kfp.components import STAGE_FUNCTIONS

ROOT = Path(__file__).resolve().parents[2]


def test_committed_yaml_is_not_stale(tmp_path: Path) -> None:
    written = compile_all(tmp_path / "pipelines", tmp_path / "components")
    for path in written:
        committed = ROOT / path.parent.name / path.name
        assert committed.exists(), f"{committed} missing: run `graft compile`"
        assert committed.read_text() == path.read_text(), f"{committed} stale: run `graft compile`"


def test_pipeline_ir_has_the_six_stages_in_order() -> None:
    spec, platform = yaml.safe_load_all((ROOT / "pipelines" / PIPELINE_FILE).read_text())
    executors = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    assert len(executors) == 6
    assert all(
        e["podMetadata"]["labels"] == {"graft.dev/pipeline": "true"} for e in executors.values()
    )
    # cluster.shm_size's default: Ray in a task's pod gets more than 64 MiB of /dev/shm
    assert all(
        [(m["mountPath"], m["medium"]) for m in e["emptyDirMounts"]] == [("/dev/shm", "Memory")]
        for e in executors.values()
    )
    tasks = spec["root"]["dag"]["tasks"]
    assert set(tasks) == set(STAGE_FUNCTIONS)
    assert tasks["pretrain"]["dependentTasks"] == ["data-prep"]
    assert tasks["transfer-finetune"]["dependentTasks"] == ["data-prep", "pretrain"]
    assert set(tasks["export"]["dependentTasks"]) == {"data-prep", "evaluate", "tune"}
    # stages that read "the current champion" must never be served from cache
    assert tasks["evaluate"]["cachingOptions"].get("enableCache", False) is False
    assert tasks["export"]["cachingOptions"].get("enableCache", False) is False
    # the config travels as an editable pipeline parameter with the default preset
    default = spec["root"]["inputDefinitions"]["parameters"]["config_json"]["defaultValue"]
    assert '"builtin:fashion_mnist"' in default


def test_component_specs_run_the_graft_image() -> None:
    for name in STAGE_FUNCTIONS:
        spec = yaml.safe_load((ROOT / "components" / f"{name}.yaml").read_text())
        executor = next(iter(spec["deploymentSpec"]["executors"].values()))
        assert executor["container"]["image"].startswith("ghcr.io/graft-ml/graft:")
        assert "pip install" not in " ".join(executor["container"]["command"])
