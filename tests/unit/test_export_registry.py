"""Registry aliases, version tags and the champion warm start, without a pipeline run: the
export stage against a SQLite MLflow in tmp_path, with a hand-written evaluation folder."""

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from local_tracking import tiny_config_tracked_in
from mlflow.tracking import MlflowClient

from graft import stages
from graft.config import GraftConfig
from graft.data.manifest import DataManifest
from graft.io import tracking
from graft.io.registry import champion_version, register_model
from graft.train.champion import WEIGHTS_FOLDER
from graft.train.model_dir import MODEL_FILE
from graft.train.stage_requests import finetune_request
from onnx_models import served_onnx

MODEL_NAME = "graft-unit"


def _config(tmp_path: Path, *overrides: str) -> GraftConfig:
    return tiny_config_tracked_in(
        tmp_path, f"export.model_name={MODEL_NAME}", "export.latency_runs=1", *overrides
    )


def _evaluation(out: Path, passed: bool, reasons: list[str]) -> Path:
    out.mkdir(parents=True)
    (out / "gate.json").write_text(json.dumps({"passed": passed, "reasons": reasons}))
    (out / "metrics.json").write_text(
        json.dumps({"test_accuracy": 0.9, "baseline_accuracy": 0.5, "test_ece": 0.05})
    )
    return out


@pytest.fixture(scope="module")
def registry(
    tmp_path_factory: pytest.TempPathFactory, untrained_model_dir: Callable[..., Path]
) -> dict[str, object]:
    """Two exports back to back: v1 through the gate, v2 refused against the champion."""
    tmp_path = tmp_path_factory.mktemp("registry")
    config = _config(tmp_path)
    data = stages.data_prep.run(config, str(tmp_path / "data"))
    manifest = DataManifest.read(data.dataset_dir)
    model_dir = untrained_model_dir(config, data.dataset_dir, tmp_path / "model", "target", seed=1)
    first = stages.export.run(
        config,
        data.dataset_dir,
        str(model_dir),
        str(_evaluation(tmp_path / "eval1", True, ["no current champion: nothing else to beat"])),
        str(tmp_path / "export1"),
        data.parent_run_id,
    )
    refused = "does not beat the champion: 0.9000 < 1.9000"
    second = stages.export.run(
        config,
        data.dataset_dir,
        str(model_dir),
        str(_evaluation(tmp_path / "eval2", False, ["beats the majority baseline", refused])),
        str(tmp_path / "export2"),
        tracking.start_pipeline_run(config, "local-2"),
    )
    return {
        "config": config,
        "tmp_path": tmp_path,
        "data": data,
        "manifest": manifest,
        "first": first,
        "second": second,
        "refused": refused,
    }


def _client(config: GraftConfig) -> MlflowClient:
    uri = config.resolved_tracking_uri()
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def test_champion_moves_only_through_the_gate(registry: dict) -> None:
    first, second = registry["first"], registry["second"]
    assert (first.model_version, sorted(first.aliases)) == ("1", ["challenger", "champion"])
    assert (second.model_version, second.aliases) == ("2", ["challenger"])
    client = _client(registry["config"])
    assert str(client.get_model_version_by_alias(MODEL_NAME, "champion").version) == "1"
    assert str(client.get_model_version_by_alias(MODEL_NAME, "challenger").version) == "2"
    champion = champion_version(registry["config"])
    assert champion is not None and str(champion.version) == "1"


def test_versions_carry_gate_data_hash_and_quantized_delta_tags(registry: dict) -> None:
    client = _client(registry["config"])
    data_hash = registry["manifest"].dataset_hash
    v1 = client.get_model_version(MODEL_NAME, "1").tags
    v2 = client.get_model_version(MODEL_NAME, "2").tags
    assert v1["gate"] == "True" and v2["gate"] == "False"
    assert registry["refused"] in v2["gate_reasons"]
    for tags in (v1, v2):
        assert tags["dataset_hash"] == data_hash
        assert abs(float(tags["quantized_val_accuracy_delta"])) <= 0.05
        assert abs(float(tags["fp16_val_accuracy_delta"])) <= 0.05
        assert tags["onnx_opset"] == str(registry["config"].export.onnx_opset)


def test_model_card_and_variants_are_logged_next_to_the_files(registry: dict) -> None:
    second = registry["second"]
    card = json.loads((Path(second.export_dir) / "model_card.json").read_text())
    assert card["model_version"] == "2"
    assert card["aliases"] == ["challenger"]
    assert card["dataset_hash"] == registry["manifest"].dataset_hash
    assert card["gate"]["passed"] is False
    assert registry["refused"] in card["gate"]["reasons"]
    assert card["calibration"] == {"ece": 0.05}
    assert card["export"]["onnx_max_abs_diff"] <= 1e-4
    client = _client(registry["config"])
    logged = {Path(a.path).name for a in client.list_artifacts(second.run_id, "exported")}
    assert {
        "model.torchscript.pt",
        "model.onnx",
        "model.int8.torchscript.pt",
        "model.fp16.onnx",
        "model_card.md",
        "model_card.json",
        "export_report.json",
    } <= logged
    run = client.get_run(second.run_id)
    assert run.data.metrics["onnx_max_abs_diff"] <= 1e-4
    assert "int8_dynamic_val_accuracy_delta" in run.data.metrics
    assert run.data.metrics["int8_dynamic_latency_ms_batch_64"] > 0


def _init_weights(request_path: str | None) -> dict[str, torch.Tensor]:
    assert request_path is not None
    return dict(torch.load(request_path, weights_only=True))


def test_finetune_warm_starts_from_the_champion(
    registry: dict, untrained_model_dir: Callable[..., Path]
) -> None:
    tmp_path: Path = registry["tmp_path"]
    config = _config(tmp_path, "finetune.warm_start_from_champion=true")
    data = registry["data"]
    pretrained = untrained_model_dir(config, data.dataset_dir, tmp_path / "pretrained-warm", seed=2)
    client = _client(config)
    run_id = client.create_run(client.get_experiment_by_name("unit").experiment_id).info.run_id
    request = finetune_request(
        config, data.dataset_dir, str(pretrained), tmp_path / "scratch-warm", run_id
    )
    champion = torch.load(Path(tmp_path / "model" / MODEL_FILE), weights_only=True)
    init = _init_weights(request.init_weights_path)
    assert init.keys() == champion.keys()
    assert all(torch.equal(init[k], champion[k]) for k in champion)
    assert client.get_run(run_id).data.tags["graft.init"] == "champion:1"


def test_warm_start_falls_back_to_the_backbone_when_the_architecture_differs(
    registry: dict, caplog: pytest.LogCaptureFixture, untrained_model_dir: Callable[..., Path]
) -> None:
    tmp_path: Path = registry["tmp_path"]
    config = _config(tmp_path, "finetune.warm_start_from_champion=true", "model.hidden_sizes=[16]")
    data = registry["data"]
    pretrained = untrained_model_dir(
        config, data.dataset_dir, tmp_path / "pretrained-other", seed=3
    )
    request = finetune_request(
        config, data.dataset_dir, str(pretrained), tmp_path / "scratch-other", None
    )
    init = _init_weights(request.init_weights_path)
    source = torch.load(pretrained / MODEL_FILE, weights_only=True)
    assert init["backbone.0.0.weight"].shape == (16, 64)
    assert torch.equal(init["backbone.0.0.weight"], source["backbone.0.0.weight"])
    assert "has another architecture" in caplog.text


def test_warm_start_off_ignores_the_champion(
    registry: dict, untrained_model_dir: Callable[..., Path]
) -> None:
    tmp_path: Path = registry["tmp_path"]
    config = _config(tmp_path)
    assert config.finetune.warm_start_from_champion is False
    data = registry["data"]
    pretrained = untrained_model_dir(config, data.dataset_dir, tmp_path / "pretrained-off", seed=4)
    request = finetune_request(
        config, data.dataset_dir, str(pretrained), tmp_path / "scratch-off", None
    )
    init = _init_weights(request.init_weights_path)
    source = torch.load(pretrained / MODEL_FILE, weights_only=True)
    champion = torch.load(Path(tmp_path / "model" / MODEL_FILE), weights_only=True)
    assert torch.equal(init["backbone.0.0.weight"], source["backbone.0.0.weight"])
    assert not torch.equal(init["backbone.0.0.weight"], champion["backbone.0.0.weight"])


def test_a_retried_export_completes_the_version_its_failed_attempt_registered(
    registry: dict,
) -> None:
    """The first attempt of a pipeline run's export registered its version and was killed
    before the tags and aliases; the retry (a new export run under the same pipeline run)
    finds that version, registers none, and completes it."""
    tmp_path: Path = registry["tmp_path"]
    config = _config(tmp_path, "export.model_name=graft-unit-retried")
    data, model_dir = registry["data"], tmp_path / "model"
    parent = tracking.start_pipeline_run(config, "local-retried")
    killed = pytest.raises(RuntimeError, match="killed")
    with killed, tracking.stage_run(config, parent, "export") as first_attempt:
        tracking.logger_for(config, first_attempt).artifact(model_dir, WEIGHTS_FOLDER)
        onnx = served_onnx(tmp_path / "retried-onnx")
        registered = register_model(config, first_attempt, *onnx)
        raise RuntimeError("killed between log_model and the version's tags")

    evaluation = _evaluation(tmp_path / "eval-retried", True, ["no current champion"])
    gate = json.loads((evaluation / "gate.json").read_text())
    (evaluation / "gate.json").write_text(json.dumps({**gate, "champion_version": None}))
    out = tmp_path / "export-retried"
    retried = stages.export.run(
        config, data.dataset_dir, str(model_dir), str(evaluation), str(out), parent
    )
    assert retried.model_version == registered
    assert retried.run_id != first_attempt
    client = _client(config)
    assert len(client.search_model_versions("name = 'graft-unit-retried'")) == 1
    tags = client.get_model_version("graft-unit-retried", registered).tags
    assert tags["gate"] == "True" and tags["pipeline_run_id"] == parent
    assert tags["dataset_hash"] == registry["manifest"].dataset_hash
    assert sorted(retried.aliases) == ["challenger", "champion"]
    assert str(client.get_model_version_by_alias("graft-unit-retried", "champion").version) == (
        registered
    )
