"""Serving applies the NaN fill: the exported TorchScript, ONNX and registered MLflow model take
raw rows with NaNs and answer what the trained network answers on the filled rows."""

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from graft import stages
from graft.config import GraftConfig, load_config
from graft.data.manifest import DataManifest
from graft.data.preprocessing import apply_missing_fill
from graft.export.raw_inputs import raw_rows
from graft.export.variants import onnx_logits, onnx_session, torch_logits
from graft.nn.models import GraftNet
from graft.train.model_dir import MODEL_FILE, load_checkpoint_model
from graft.train.stage_requests import finetune_request

MODEL_NAME = "graft-raw"


def _table(path: Path) -> pd.DataFrame:
    """Three classes; NaNs in 'b' (about 15%) and 'd' (about 5%), none in 'a' and 'c'."""
    rng = np.random.default_rng(5)
    y = np.tile([0, 1, 2], 150)
    frame = pd.DataFrame(
        rng.normal(size=(450, 4)) + y[:, None] * [1.0, 0.5, 0.0, 2.0], columns=["a", "b", "c", "d"]
    )
    frame.loc[rng.choice(450, size=70, replace=False), "b"] = np.nan
    frame.loc[rng.choice(450, size=25, replace=False), "d"] = np.nan
    frame["label"] = y
    frame.to_parquet(path)
    return frame


def _config(tmp_path: Path, *overrides: str) -> GraftConfig:
    return load_config(
        preset="tiny",
        overrides=[
            f"work_dir={tmp_path / 'work'}",
            f"tracking.tracking_uri=sqlite:///{tmp_path / 'mlflow.db'}",
            "tracking.experiment_name=raw",
            f"export.model_name={MODEL_NAME}",
            "export.latency_runs=1",
            f"data.source={tmp_path / 'table.parquet'}",
            "data.missing_values=fill_median",
            "data.transfer.target_classes=[]",
            "model.batch_norm.enabled=true",
            # these tests call stages.evaluate without a pretrained model to retrain from
            "evaluate.label_shuffle_control.enabled=false",
            "evaluate.transfer_report.enabled=false",
            *overrides,
        ],
    )


def _warm_batch_norm(input_shape: list[int]) -> Callable[[GraftNet], None]:
    """Gives a new model non-trivial BN running statistics, so folding has work to do."""

    def warm_up(model: GraftNet) -> None:
        model.train()
        with torch.no_grad():
            for _ in range(5):
                model(torch.randn(64, *input_shape) * 2)

    return warm_up


@pytest.fixture(scope="module")
def exported(
    tmp_path_factory: pytest.TempPathFactory, untrained_model_dir: Callable[..., Path]
) -> dict:
    tmp_path = tmp_path_factory.mktemp("raw")
    frame = _table(tmp_path / "table.parquet")
    config = _config(tmp_path)
    data = stages.data_prep.run(config, str(tmp_path / "data"))
    manifest = DataManifest.read(data.dataset_dir)
    model_dir = untrained_model_dir(
        config,
        data.dataset_dir,
        tmp_path / "model",
        "target",
        seed=1,
        warm_up=_warm_batch_norm(manifest.input_shape),
    )
    network, _ = load_checkpoint_model(model_dir)
    network.eval()
    evaluation = tmp_path / "eval"
    evaluation.mkdir()
    (evaluation / "gate.json").write_text(json.dumps({"passed": True, "reasons": []}))
    (evaluation / "metrics.json").write_text(
        json.dumps({"test_accuracy": 0.9, "baseline_accuracy": 0.34})
    )
    result = stages.export.run(
        config,
        data.dataset_dir,
        str(model_dir),
        str(evaluation),
        str(tmp_path / "export"),
        data.parent_run_id,
    )
    raw = frame[["a", "b", "c", "d"]].to_numpy(dtype=np.float32)
    return {
        "tmp_path": tmp_path,
        "config": config,
        "data": data,
        "manifest": manifest,
        "network": network,
        "model_dir": model_dir,
        "result": result,
        "raw": raw,
    }


def test_exported_files_take_raw_rows_with_nans(exported: dict) -> None:
    manifest: DataManifest = exported["manifest"]
    fill = manifest.missing_fill
    assert fill is not None and fill.indicator_columns == [1, 3]
    raw: np.ndarray = exported["raw"]
    holes = np.isnan(raw).any(axis=1)
    assert holes.sum() > 50  # the parity below covers many rows with gaps
    # what training saw: data-prep's fill, then the trained network
    reference = torch_logits(exported["network"], apply_missing_fill(raw, fill))
    assert np.isfinite(reference).all()
    # the bare network cannot take raw rows (no indicator columns): the served graph fills them
    with pytest.raises(RuntimeError):
        torch_logits(exported["network"], raw)

    result = exported["result"]
    scripted = torch.jit.load(result.torchscript).eval()
    served = {
        "torchscript": torch_logits(scripted, raw),
        "onnx": onnx_logits(onnx_session(result.onnx), raw),
    }
    for name, logits in served.items():
        assert np.isfinite(logits).all(), name
        assert np.abs(logits - reference).max() <= 1e-4, name
        assert (logits.argmax(1) == reference.argmax(1)).all(), name
    export_dir = Path(result.export_dir)
    int8 = torch_logits(torch.jit.load(str(export_dir / "model.int8.torchscript.pt")), raw)
    fp16 = onnx_logits(onnx_session(export_dir / "model.fp16.onnx"), raw)
    for name, logits in {"int8": int8, "fp16": fp16}.items():
        assert np.isfinite(logits).all(), name
        assert np.abs(logits - reference).max() < 0.5, name


def test_registered_model_takes_raw_rows(exported: dict) -> None:
    """The registry holds the ONNX graph with the fill inside, and answers class names."""
    import mlflow.pyfunc

    config: GraftConfig = exported["config"]
    mlflow.set_tracking_uri(config.resolved_tracking_uri())
    registered = mlflow.pyfunc.load_model(f"models:/{MODEL_NAME}/1")
    assert registered.metadata.flavors.keys() == {"onnx", "python_function"}
    raw = exported["raw"]
    fill = exported["manifest"].missing_fill
    reference = torch_logits(exported["network"], apply_missing_fill(raw, fill))
    answer = registered.predict(raw.astype(np.float32))
    class_names = exported["manifest"].tasks["target"].class_names
    assert list(answer["label"]) == [class_names[i] for i in reference.argmax(1)]
    softmax = np.exp(reference) / np.exp(reference).sum(axis=1, keepdims=True)
    assert np.abs(answer["probabilities"] - softmax).max() <= 1e-5
    # the wrapper is added at export only: the checkpoint still holds the bare network
    state = torch.load(Path(exported["model_dir"]) / MODEL_FILE, weights_only=True)
    assert set(state) == set(exported["network"].state_dict())


def test_stored_rows_round_trip_to_raw_rows(exported: dict) -> None:
    manifest: DataManifest = exported["manifest"]
    fill = manifest.missing_fill
    raw = exported["raw"]
    filled = apply_missing_fill(raw, fill)
    rebuilt = raw_rows(filled, fill)
    # NaNs back exactly where they were (every gappy column has an indicator here)
    assert np.array_equal(np.isnan(rebuilt), np.isnan(raw))
    assert np.array_equal(apply_missing_fill(rebuilt, fill), filled)


def test_evaluate_scores_a_raw_input_champion_on_raw_rows(exported: dict) -> None:
    """The champion is the exported (wrapped) model: evaluate must hand it raw test rows."""
    data = exported["data"]
    tmp_path: Path = exported["tmp_path"]
    out = stages.evaluate.run(
        exported["config"],
        data.dataset_dir,
        data.test_split_dir,
        str(exported["model_dir"]),
        str(tmp_path / "evaluation"),
        data.parent_run_id,
    )
    # the champion is this very model, so it scores exactly the same
    assert out.champion_accuracy == out.accuracy


def test_warm_start_loads_the_network_inside_a_raw_input_champion(
    exported: dict, untrained_model_dir: Callable[..., Path]
) -> None:
    tmp_path: Path = exported["tmp_path"]
    config = _config(tmp_path, "finetune.warm_start_from_champion=true")
    manifest: DataManifest = exported["manifest"]
    pretrained = untrained_model_dir(
        config,
        exported["data"].dataset_dir,
        tmp_path / "pretrained",
        seed=3,
        warm_up=_warm_batch_norm(manifest.input_shape),
    )
    request = finetune_request(
        config, exported["data"].dataset_dir, str(pretrained), tmp_path / "scratch", None
    )
    assert request.init_weights_path is not None
    init = torch.load(request.init_weights_path, weights_only=True)
    champion = exported["network"].state_dict()
    assert init.keys() == champion.keys()
    assert all(torch.equal(init[k], champion[k]) for k in champion)


def test_graft_serve_takes_rows_with_nans_for_a_model_that_fills_them(
    exported: dict, tmp_path: Path
) -> None:
    """The export stage marks the graph as filling NaNs; `graft serve` reads the mark and
    scores raw rows with nulls as the registered model does (tests/integration/test_serve.py
    serves a model without a fill, which refuses them)."""
    from graft.export.scoring_request import rows_from_body
    from graft.export.scoring_server import load_served_model

    config: GraftConfig = exported["config"]
    served = load_served_model(config, f"models:/{MODEL_NAME}/1", tmp_path, threads=1)
    assert served.spec.fills_missing is True
    raw: np.ndarray = exported["raw"]
    rows = raw[np.isnan(raw).any(axis=1)][:32]
    body = {"inputs": [[None if np.isnan(v) else float(v) for v in row] for row in rows]}
    answer = served.predict(rows_from_body(json.dumps(body).encode(), served.spec))
    fill = exported["manifest"].missing_fill
    reference = torch_logits(exported["network"], apply_missing_fill(rows, fill))
    class_names = exported["manifest"].tasks["target"].class_names
    assert answer["label"] == [class_names[i] for i in reference.argmax(1)]
