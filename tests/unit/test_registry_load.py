"""No code from data: Graft loads the champion from its weights files, never by unpickling
the registered model, and refuses any model file that is more than tensors.

The canary: a champion and a staged model folder whose pickles would create a marker file
when unpickled. Evaluate's champion lookup, the warm start and a stage reading the folder all
refuse with a GraftError, and the marker never appears."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from local_tracking import tiny_config_tracked_in
from mlflow.tracking import MlflowClient

from graft import stages
from graft.config import GraftConfig
from graft.errors import GraftError, RegistryError
from graft.io import registry, tracking
from graft.train.champion import WEIGHTS_FOLDER, load_champion
from graft.train.model_dir import MODEL_FILE, load_checkpoint_model
from graft.train.stage_requests import finetune_request
from onnx_models import served_onnx
from servers import free_port

MODEL_NAME = "graft-canary"


class _WritesMarker:
    """Unpickling this runs ``touch <marker>``: what a crafted file in a shared store does."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (f"touch {self.marker}",))


def _canary(path: Path, marker: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"weight": _WritesMarker(marker)}, path)
    return path


def _config(tmp_path: Path, *overrides: str) -> GraftConfig:
    return tiny_config_tracked_in(
        tmp_path, f"export.model_name={MODEL_NAME}", "export.latency_runs=1", *overrides
    )


@pytest.fixture(scope="module")
def champion(
    tmp_path_factory: pytest.TempPathFactory, untrained_model_dir: Callable[..., Path]
) -> dict[str, Any]:
    """A real champion, exported by the export stage, then its files swapped for canaries."""
    tmp_path = tmp_path_factory.mktemp("canary")
    config = _config(tmp_path)
    data = stages.data_prep.run(config, str(tmp_path / "data"))
    model_dir = untrained_model_dir(config, data.dataset_dir, tmp_path / "model", "target")
    evaluation = tmp_path / "eval"
    evaluation.mkdir()
    (evaluation / "gate.json").write_text('{"passed": true, "reasons": []}')
    (evaluation / "metrics.json").write_text('{"test_accuracy": 0.9, "baseline_accuracy": 0.5}')
    stages.export.run(
        config,
        data.dataset_dir,
        str(model_dir),
        str(evaluation),
        str(tmp_path / "export"),
        data.parent_run_id,
    )
    return {"tmp_path": tmp_path, "config": config, "data": data, "model_dir": model_dir}


def test_the_champion_loads_from_its_weights_as_exported(champion: dict[str, Any]) -> None:
    loaded = load_champion(champion["config"])
    assert loaded is not None and loaded.version == "1"
    exported = torch.load(champion["model_dir"] / MODEL_FILE, weights_only=True)
    state = loaded.network.state_dict()
    assert all(torch.equal(state[key], exported[key]) for key in exported)


def test_a_crafted_champion_is_refused_by_evaluate_and_the_warm_start(
    champion: dict[str, Any], untrained_model_dir: Callable[..., Path]
) -> None:
    tmp_path: Path = champion["tmp_path"]
    config: GraftConfig = champion["config"]
    marker = tmp_path / "code-ran"
    version = registry.champion_version(config)
    client = MlflowClient(config.resolved_tracking_uri(), config.resolved_tracking_uri())
    # the weights Graft reads; Graft has no code path that unpickles the registered model
    crafted = tmp_path / "crafted"
    client.log_artifact(version.run_id, str(_canary(crafted / MODEL_FILE, marker)), WEIGHTS_FOLDER)

    with pytest.raises(RegistryError, match=r"champion models:/graft-canary/1 cannot be loaded"):
        load_champion(config)  # what evaluate's champion comparison calls
    warm = _config(tmp_path, "finetune.warm_start_from_champion=true")
    data = champion["data"]
    pretrained = untrained_model_dir(warm, data.dataset_dir, tmp_path / "pretrained")
    with pytest.raises(GraftError, match="holds more than tensors"):
        finetune_request(warm, data.dataset_dir, str(pretrained), tmp_path / "scratch", None)
    assert not marker.exists()


def test_a_crafted_staged_model_folder_is_refused(champion: dict[str, Any], tmp_path: Path) -> None:
    """A stage's input folder (a staged upload, a shared volume) with a crafted model.pt."""
    marker = tmp_path / "code-ran"
    staged = tmp_path / "staged"
    staged.mkdir()
    (staged / "spec.json").write_text((champion["model_dir"] / "spec.json").read_text())
    _canary(staged / MODEL_FILE, marker)
    with pytest.raises(GraftError, match=r"refusing to load .*model.pt: it holds more"):
        load_checkpoint_model(staged)
    assert not marker.exists()


def test_a_champion_registered_without_weights_fails_with_the_alias_to_delete(
    tmp_path: Path,
) -> None:
    """A version registered without Graft's weights (an older Graft kept only a pickled
    model; or a model registered by hand): Graft has nothing it may load, and the error
    names the way out and leaves the alias for the user to decide."""
    config = tiny_config_tracked_in(tmp_path, "export.model_name=graft-pickled-only")
    run_id = tracking.start_pipeline_run(config, "registry-load")
    version = registry.register_model(config, run_id, *served_onnx(tmp_path / "onnx"))
    registry.set_alias(config, "champion", version)

    with pytest.raises(RegistryError) as caught:
        load_champion(config)
    message = str(caught.value)
    assert "models:/graft-pickled-only/1 has no 'weights' files" in message
    assert "delete_registered_model_alias('graft-pickled-only', '<alias>')" in message
    client = MlflowClient(config.resolved_tracking_uri(), config.resolved_tracking_uri())
    assert str(client.get_model_version_by_alias("graft-pickled-only", "champion").version) == "1"


def test_only_not_found_means_no_champion(
    champion: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """No such model, or a model without the alias: no champion. A registry that does not
    answer is a RegistryError naming the server, never "no champion" (the gate would pass
    and promote during an outage)."""
    tmp_path: Path = champion["tmp_path"]
    config = _config(tmp_path, "export.model_name=graft-never-registered")
    assert registry.champion_version(config) is None
    assert load_champion(config) is None
    uri = config.resolved_tracking_uri()
    MlflowClient(uri, uri).create_registered_model("graft-without-champion")
    assert (
        registry.champion_alias(_config(tmp_path, "export.model_name=graft-without-champion"))
        is None
    )

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    nobody = f"http://127.0.0.1:{free_port()}"
    down = _config(tmp_path, f"tracking.tracking_uri={nobody}")
    with pytest.raises(RegistryError) as caught:
        load_champion(down)
    message = str(caught.value)
    assert f"cannot read model '{MODEL_NAME}' in the registry of {nobody}" in message
    assert "check that the tracking server is up" in message
