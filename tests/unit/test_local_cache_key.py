"""What keys KFP's local cache on Graft's code: a local run hands data-prep and pretrain the
digest of the graft package (graft.kfp.local_run.graft_code_digest) as an env var, which KFP's
local cache puts in the task's key; the compiled YAML, whose image tag names the code, has
none."""

from __future__ import annotations

from pathlib import Path

import yaml
from compiled_pipeline import executor_label, pipeline_tasks
from kfp import compiler

from graft.config import load_config
from graft.kfp.compile import PIPELINE_FILE
from graft.kfp.local_run import graft_code_digest
from graft.kfp.pipeline import CODE_DIGEST_ENV, build_pipeline

ROOT = Path(__file__).resolve().parents[2]


def _task_env(spec: dict) -> dict[str, dict[str, str]]:
    executors = spec["deploymentSpec"]["executors"]
    return {
        name: {
            e["name"]: e["value"]
            for e in executors[executor_label(task)]["container"].get("env", [])
        }
        for name, task in pipeline_tasks(spec).items()
    }


def test_a_local_run_keys_only_the_cacheable_tasks_on_the_code(tmp_path: Path) -> None:
    path = tmp_path / "pipeline.yaml"
    pipeline = build_pipeline("graft:local", load_config(preset="tiny"), code_digest="0123abcd")
    compiler.Compiler().compile(pipeline, str(path))
    spec, _ = yaml.safe_load_all(path.read_text())
    env = _task_env(spec)
    keyed = {name for name, values in env.items() if CODE_DIGEST_ENV in values}
    assert keyed == {"data-prep", "pretrain"}
    assert env["data-prep"][CODE_DIGEST_ENV] == env["pretrain"][CODE_DIGEST_ENV] == "0123abcd"


def test_the_compiled_yaml_carries_no_code_digest() -> None:
    spec, _ = yaml.safe_load_all((ROOT / "pipelines" / PIPELINE_FILE).read_text())
    assert all(CODE_DIGEST_ENV not in values for values in _task_env(spec).values())


def test_the_digest_follows_the_package_s_sources_and_nothing_else(tmp_path: Path) -> None:
    package = tmp_path / "graft"
    (package / "data").mkdir(parents=True)
    (package / "__pycache__").mkdir()
    (package / "data" / "prepare.py").write_text("SPLITS = 3\n")
    (package / "presets.yaml").write_text("epochs: 5\n")
    first = graft_code_digest(package)
    assert graft_code_digest(package) == first and len(first) == 16
    # bytecode and other files do not count
    (package / "__pycache__" / "prepare.cpython-311.pyc").write_bytes(b"\x00")
    (package / "notes.txt").write_text("todo\n")
    assert graft_code_digest(package) == first
    (package / "data" / "prepare.py").write_text("SPLITS = 4\n")
    edited = graft_code_digest(package)
    assert edited != first
    (package / "presets.yaml").write_text("epochs: 6\n")
    before_move = graft_code_digest(package)
    assert before_move not in (first, edited)
    # a file moved keeps its bytes but not its path
    (package / "data" / "prepare.py").rename(package / "prepare.py")
    assert graft_code_digest(package) != before_move
