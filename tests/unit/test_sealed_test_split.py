"""The test rows are sealed: data-prep writes them apart from the dataset artifact, and in the
compiled pipeline only evaluate receives them."""

from pathlib import Path

import numpy as np
import pytest
import yaml
from compiled_pipeline import stage_tasks
from kfp import compiler

from graft.config import DataConfig, load_config
from graft.data.holdout import HoldoutManifest, default_holdout_dir, holdout_path, load_holdout
from graft.data.prepare import load_split, prepare_dataset
from graft.data.splits import SPLIT_MANIFEST_FILE, read_task_splits
from graft.errors import DatasetError
from graft.kfp.pipeline import build_pipeline


def _consumers(spec: dict, producer: str, output: str) -> dict[str, list[str]]:
    """task -> its input names fed by ``producer``'s output artifact ``output``, directly or,
    inside a ``dsl.If`` branch, through the channel KFP names after it."""
    channel = f"pipelinechannel--{producer}-{output}"
    found: dict[str, list[str]] = {}
    for name, task in stage_tasks(spec).items():
        for input_name, source in task.get("inputs", {}).get("artifacts", {}).items():
            ref = source.get("taskOutputArtifact", {})
            direct = ref.get("producerTask") == producer and ref.get("outputArtifactKey") == output
            if direct or source.get("componentInputArtifact") == channel:
                found.setdefault(name, []).append(input_name)
    return found


@pytest.fixture(scope="module")
def pipeline_spec(tmp_path_factory: pytest.TempPathFactory) -> dict:
    path = tmp_path_factory.mktemp("ir") / "training.yaml"
    compiler.Compiler().compile(
        build_pipeline(default_config=load_config(preset="tiny")), str(path)
    )
    spec, _platform = yaml.safe_load_all(path.read_text())
    return spec


def test_only_evaluate_consumes_the_test_split_artifact(pipeline_spec: dict) -> None:
    assert _consumers(pipeline_spec, "data-prep", "test_split") == {"evaluate": ["test_split"]}
    # everything else gets the train/val artifact, evaluate too (for the train-split baselines)
    assert set(_consumers(pipeline_spec, "data-prep", "dataset")) == {
        "pretrain",
        "import-backbone",
        "transfer-finetune",
        "tune",
        "evaluate",
        "export",
    }
    prep = pipeline_spec["components"]["comp-data-prep"]["outputDefinitions"]["artifacts"]
    assert {"dataset", "test_split"} <= set(prep)


def _prepare(tmp_path: Path, seed: int = 7) -> tuple[Path, Path]:
    config = DataConfig(
        source="builtin:digits", transfer={"target_classes": [3, 8], "target_train_size": 50}
    )
    out, sealed = tmp_path / "dataset", tmp_path / "test_split"
    prepare_dataset(config, seed, out, sealed)
    return out, sealed


def _hashes(path: Path) -> set[str]:
    with np.load(path) as archive:
        return set(archive["row_hash"].tolist())


def test_dataset_directory_holds_no_test_rows(tmp_path: Path) -> None:
    out, sealed = _prepare(tmp_path)
    assert not list(out.rglob("test.npz"))
    assert sorted(p.relative_to(sealed).as_posix() for p in sealed.rglob("*.npz")) == [
        "source/test.npz",
        "target/test.npz",
    ]
    for task in ("source", "target"):
        test_hashes = _hashes(holdout_path(sealed, task))
        assert test_hashes
        # no test row anywhere in the dataset artifact: not in any task's train or val
        for npz in out.rglob("*.npz"):
            assert not test_hashes & _hashes(npz), npz
    with pytest.raises(DatasetError, match="no test rows"):
        load_split(out, "target", "test")
    x, y = load_holdout(sealed, "target", out)
    manifest = HoldoutManifest.read(sealed)
    assert len(x) == len(y) == manifest.rows["target"]
    # the ledger key is the split manifest's digest of exactly these rows
    digests = {(s.task, s.split): s.digest for s in read_task_splits(out / SPLIT_MANIFEST_FILE)}
    assert manifest.digests["target"] == digests[("target", "test")]


def test_test_split_of_another_split_is_refused(tmp_path: Path) -> None:
    out_a, sealed_a = _prepare(tmp_path / "a", seed=7)
    out_b, _ = _prepare(tmp_path / "b", seed=8)
    load_holdout(sealed_a, "target", out_a)
    # another seed's test rows may be this split's train rows
    with pytest.raises(DatasetError, match="same data-prep run"):
        load_holdout(sealed_a, "target", out_b)


def test_default_test_split_directory_is_a_sibling(tmp_path: Path) -> None:
    config = DataConfig(source="builtin:digits")
    prepare_dataset(config, 0, tmp_path / "data")
    sealed = default_holdout_dir(tmp_path / "data")
    assert sealed == tmp_path / "data-test"
    assert holdout_path(sealed, "target").exists()
    assert not (tmp_path / "data" / "target" / "test.npz").exists()
