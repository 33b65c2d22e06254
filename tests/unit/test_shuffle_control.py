"""The label-shuffle control and the gate rules it and calibration feed."""

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from graft.config import EvaluateConfig, load_config
from graft.data.prepare import load_split, prepare_dataset
from graft.evaluate.gate import decide
from graft.evaluate.shuffle_control import label_shuffle_control
from graft.stages.retraining import finetune_retraining
from graft.train.in_process import FinetuneStart, train_fresh_model
from graft.train.rows import evaluate_model
from graft.train.stage_requests import finetune_request


def test_gate_refuses_a_model_no_better_than_its_shuffled_label_control() -> None:
    config = EvaluateConfig.model_validate({"label_shuffle_control": {"margin": 0.05}})
    learned = decide(config, 0.90, 0.50, None, control_accuracy=0.55)
    assert learned.passed
    assert any("label-shuffle control" in r for r in learned.reasons)
    noise = decide(config, 0.58, 0.50, None, control_accuracy=0.55)
    assert not noise.passed
    assert any("shuffled labels" in r and "0.6000" in r for r in noise.reasons)


def test_gate_enforces_a_maximum_calibration_error() -> None:
    config = EvaluateConfig(max_calibration_error=0.05)
    assert decide(config, 0.9, 0.5, None, calibration_error=0.04).passed
    refused = decide(config, 0.9, 0.5, None, calibration_error=0.08)
    assert not refused.passed
    assert any("ECE 0.0800 > 0.05" in r for r in refused.reasons)
    # not configured: calibration never blocks
    assert decide(EvaluateConfig(), 0.9, 0.5, None, calibration_error=0.5).passed


def test_shuffled_labels_reach_chance_while_real_labels_learn(
    tmp_path: Path, untrained_model_dir: Callable[..., Path]
) -> None:
    config = load_config(
        preset="tiny",
        overrides=[f"work_dir={tmp_path}", "data.transfer.target_train_size=300"],
    )
    dataset = tmp_path / "dataset"
    prepare_dataset(config.data, config.seed, dataset)
    pretrained = untrained_model_dir(config, dataset, tmp_path / "pretrained")
    request = finetune_request(config, str(dataset), str(pretrained), tmp_path / "s", None)
    retraining = finetune_retraining(request)
    train = load_split(dataset, "target", "train")
    val = load_split(dataset, "target", "val")
    control = label_shuffle_control(retraining, train, val, seed=0)
    real, _ = train_fresh_model(FinetuneStart.from_request(request), *train, 0)
    data = torch.utils.data.TensorDataset(torch.from_numpy(val[0]), torch.from_numpy(val[1]))
    real_accuracy = evaluate_model(real, data)["accuracy"]
    majority = np.bincount(val[1]).max() / len(val[1])
    assert control <= majority + 0.2  # no signal to learn from
    assert real_accuracy >= control + 0.2
    assert label_shuffle_control(retraining, train, val, seed=0) == pytest.approx(control)
