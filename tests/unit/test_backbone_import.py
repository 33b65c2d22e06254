"""import_backbone: an external pretrained backbone (model.family hf or graft) becomes the model
folder that finetune_request takes as its pretrained_dir, and the finetune trains on it."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from local_tracking import tiny_config_tracked_in
from mlflow.tracking import MlflowClient

from graft.config import GraftConfig, load_config
from graft.data.manifest import DataManifest
from graft.errors import ConfigError, RegistryError
from graft.train.backbone_import import import_backbone
from graft.train.champion import WEIGHTS_FOLDER
from graft.train.in_process import FinetuneStart, state_sha, train_fresh_model
from graft.train.model_dir import load_checkpoint_model
from graft.train.rows import array_rows, evaluate_model
from graft.train.stage_requests import finetune_request, pretrain_request
from hf_models import saved_hf_model

REGISTERED = "graft-import-source"


# these models are a few thousand weights: one intra-op thread (tests/conftest.py)
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _rows(dataset: str, split: str) -> tuple[np.ndarray, np.ndarray]:
    with np.load(Path(dataset) / "target" / f"{split}.npz") as arrays:
        return arrays["x"], arrays["y"]


def _hf_reference(hf: Any, dataset: str, x: np.ndarray) -> torch.Tensor:
    """The HF model's pooled features of the target rows, standardized and made RGB as the
    imported stem does."""
    task = DataManifest.read(dataset).tasks["target"]
    mean = torch.tensor(task.mean).reshape(1, -1, 1, 1)
    std = torch.tensor(task.std).reshape(1, -1, 1, 1)
    pixels = ((torch.from_numpy(x) - mean) / std).repeat(1, 3, 1, 1)
    with torch.no_grad():
        return hf(pixels).pooler_output.flatten(1)


def _features(model_dir: Path, x: np.ndarray) -> torch.Tensor:
    network, _ = load_checkpoint_model(model_dir)
    with torch.no_grad():
        return network.eval().features(torch.from_numpy(x))


def test_an_hf_backbone_is_imported_finetuned_and_trained(
    tiny_dataset_and_source: tuple[str, str], tmp_path: Path
) -> None:
    dataset, _ = tiny_dataset_and_source
    hf, folder = saved_hf_model("resnet", tmp_path / "resnet")
    config = load_config(
        preset="tiny",
        overrides=[f"work_dir={tmp_path}", "model.family=hf", f"model.pretrained={folder}"],
    )
    with pytest.raises(ConfigError, match="pretrain does not run for it"):
        pretrain_request(config, dataset, None)
    model_dir = import_backbone(config, dataset, tmp_path / "imported")
    _, spec = load_checkpoint_model(model_dir)
    task = DataManifest.read(dataset).tasks["target"]
    assert (spec.mean, spec.std, spec.num_classes) == (task.mean, task.std, len(task.classes))
    x_val, _ = _rows(dataset, "val")
    assert torch.allclose(_features(model_dir, x_val), _hf_reference(hf, dataset, x_val), atol=1e-5)

    request = finetune_request(config, dataset, str(model_dir), tmp_path / "scratch", None)
    start = FinetuneStart.from_request(request)
    assert start.model.spec.hf_config == spec.hf_config
    assert start.model.spec.model["family"] == "hf"
    x, y = _rows(dataset, "train")
    before = evaluate_model(start.model.fresh_model().eval(), array_rows(x, y))
    trained, init_sha = train_fresh_model(start, x, y, seed=0)  # the head phase, then all
    after = evaluate_model(trained, array_rows(x, y))
    assert state_sha(trained) != init_sha
    assert after["loss"] < before["loss"] - 0.05, (before, after)


def test_a_native_family_has_nothing_to_import(
    tiny_dataset_and_source: tuple[str, str], tmp_path: Path
) -> None:
    with pytest.raises(ConfigError, match=r"model.family=mlp pretrains its backbone"):
        import_backbone(load_config(preset="tiny"), tiny_dataset_and_source[0], tmp_path)


def _pretrained(config: GraftConfig, uri: str) -> GraftConfig:
    return config.model_copy(update={"model": config.model.model_copy(update={"pretrained": uri})})


def _client(config: GraftConfig, tmp_path: Path) -> tuple[MlflowClient, str]:
    uri = config.resolved_tracking_uri()
    client = MlflowClient(uri, registry_uri=uri)  # not a URI an earlier test set globally
    experiment = client.create_experiment("imports", artifact_location=str(tmp_path / "artifacts"))
    return client, client.create_run(experiment).info.run_id


def test_an_hf_folder_logged_to_mlflow_is_imported_by_its_runs_uri(
    tiny_dataset_and_source: tuple[str, str], tmp_path: Path
) -> None:
    dataset, _ = tiny_dataset_and_source
    hf, folder = saved_hf_model("resnet", tmp_path / "resnet")
    config = tiny_config_tracked_in(tmp_path, "model.family=hf", "model.pretrained=/unused")
    client, run_id = _client(config, tmp_path)
    client.log_artifacts(run_id, str(folder), "backbone")
    client.log_artifacts(run_id, str(folder), "flavour/model")  # MLflow transformers' layout
    x_val, _ = _rows(dataset, "val")
    for uri in (f"runs:/{run_id}/backbone", f"runs:/{run_id}/flavour"):
        model_dir = import_backbone(
            _pretrained(config, uri), dataset, tmp_path / uri.rsplit("/", 1)[1]
        )
        assert torch.allclose(
            _features(model_dir, x_val), _hf_reference(hf, dataset, x_val), atol=1e-5
        )


@pytest.fixture
def registered(
    tiny_dataset_and_source: tuple[str, str],
    tmp_path: Path,
    untrained_model_dir: Callable[..., Path],
) -> dict[str, Any]:
    """A Graft model folder (an mlp of other widths than the preset's) registered as version 1
    of REGISTERED, with the alias 'champion', as export logs it (its weights/ files)."""
    dataset, _ = tiny_dataset_and_source
    source_config = load_config(preset="tiny", overrides=["model.hidden_sizes=[16]"])
    folder = untrained_model_dir(source_config, dataset, tmp_path / "weights", "target", seed=3)
    config = tiny_config_tracked_in(
        tmp_path,
        "model.family=graft",
        f"model.pretrained=models:/{REGISTERED}@champion",
        "model.dropout.rate=0.25",
    )
    client, run_id = _client(config, tmp_path)
    client.log_artifacts(run_id, str(folder), WEIGHTS_FOLDER)
    client.create_registered_model(REGISTERED)
    version = client.create_model_version(REGISTERED, f"runs:/{run_id}/model", run_id=run_id)
    client.set_registered_model_alias(REGISTERED, "champion", version.version)
    return {"config": config, "dataset": dataset, "folder": folder}


def test_a_registered_graft_model_is_imported_with_its_own_architecture(
    registered: dict[str, Any], tmp_path: Path
) -> None:
    config, dataset = registered["config"], registered["dataset"]
    source, source_spec = load_checkpoint_model(registered["folder"])
    for uri in (f"models:/{REGISTERED}@champion", f"models:/{REGISTERED}/1"):
        model_dir = import_backbone(
            _pretrained(config, uri), dataset, tmp_path / uri.replace("/", "_")
        )
        network, spec = load_checkpoint_model(model_dir)
        assert spec == source_spec  # the registered architecture and stem statistics
        assert all(
            torch.equal(tensor, source.state_dict()[name])
            for name, tensor in network.state_dict().items()
        )
    request = finetune_request(config, dataset, str(model_dir), tmp_path / "scratch", None)
    model_block = FinetuneStart.from_request(request).model.spec.model
    # the registered block (family mlp, widths [16]) with the config's dropout, not the
    # config's family=graft block
    assert (model_block["family"], model_block["hidden_sizes"]) == ("mlp", [16])
    assert model_block["dropout"]["rate"] == 0.25
    target = FinetuneStart.from_request(request).model.fresh_model()
    assert target(torch.zeros(2, 1, 8, 8)).shape == (2, 2)


def test_a_missing_alias_or_version_names_the_uri(
    registered: dict[str, Any], tmp_path: Path
) -> None:
    config = registered["config"]
    for uri in (f"models:/{REGISTERED}@staging", f"models:/{REGISTERED}/7", "models:/absent@x"):
        with pytest.raises(RegistryError, match=f"{uri} is not in the registry"):
            import_backbone(_pretrained(config, uri), registered["dataset"], tmp_path / "out")
