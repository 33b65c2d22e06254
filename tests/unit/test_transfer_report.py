"""The A/B report: transfer vs from-scratch over seeds, both arms trained in process."""

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from graft.config import load_config
from graft.data.prepare import load_split, prepare_dataset
from graft.evaluate.retrain import Retraining
from graft.evaluate.transfer_report import (
    _scratch_start,
    _transfer_start,
    plot_transfer_report,
    transfer_vs_scratch,
)
from graft.stages.retraining import finetune_retraining
from graft.train.stage_requests import finetune_request


@pytest.fixture(scope="module")
def start_and_data(
    tmp_path_factory: pytest.TempPathFactory, untrained_model_dir: Callable[..., Path]
) -> tuple[Retraining, str]:
    root = tmp_path_factory.mktemp("ab")
    config = load_config(preset="tiny", overrides=[f"work_dir={root}"])
    dataset = root / "dataset"
    prepare_dataset(config.data, config.seed, dataset)
    pretrained = untrained_model_dir(config, dataset, root / "pretrained")
    request = finetune_request(config, str(dataset), str(pretrained), root / "scratch", None)
    return finetune_retraining(request), str(dataset)


def test_transfer_arm_keeps_the_backbone_and_scratch_arm_redraws_everything(
    start_and_data: tuple[Retraining, str],
) -> None:
    start = start_and_data[0].start
    transfer_a, transfer_b = _transfer_start(start, 1), _transfer_start(start, 2)
    scratch = _scratch_start(start, 1)
    for key, value in start.init_state.items():
        if key.startswith("backbone.") and key.endswith("weight"):
            assert torch.equal(transfer_a.init_state[key], value)
            assert not torch.equal(scratch.init_state[key], value)
    assert not torch.equal(
        transfer_a.init_state["head.weight"], transfer_b.init_state["head.weight"]
    )
    # scratch trains everything for the phases' total epochs
    assert [(p.trainable, p.epochs) for p in scratch.phases] == [
        ("all", sum(p.epochs for p in start.phases))
    ]


def test_report_is_per_seed_deterministic_and_summarized(
    start_and_data: tuple[Retraining, str], tmp_path: Path
) -> None:
    retraining, dataset = start_and_data
    train = load_split(dataset, "target", "train")
    val = load_split(dataset, "target", "val")
    report = transfer_vs_scratch(retraining, train, val, seeds=[0, 1, 2])
    again = transfer_vs_scratch(retraining, train, val, seeds=[0, 1, 2])
    assert report.transfer_accuracy == again.transfer_accuracy
    assert report.scratch_accuracy == again.scratch_accuracy
    assert len(report.transfer_accuracy) == len(report.scratch_accuracy) == 3
    chance = np.bincount(val[1]).max() / len(val[1])
    assert np.mean(report.scratch_accuracy) > chance  # the arms learn
    metrics = report.metrics()
    assert metrics["ab_mean_difference"] == pytest.approx(
        np.mean(report.transfer_accuracy) - np.mean(report.scratch_accuracy)
    )
    assert metrics["ab_scratch_std_accuracy"] == pytest.approx(
        np.std(report.scratch_accuracy, ddof=1)
    )
    assert metrics["ab_transfer_wins"] == sum(d > 0 for d in report.differences)
    plot = plot_transfer_report(report, tmp_path / "ab.png", "val")
    assert plot.stat().st_size > 0
