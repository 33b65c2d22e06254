"""A one-worker pretrain or finetune stage trains in the stage's own process
(``*.runner``): the same stage gives bit-identical weights and history as its Ray Train fit,
and it neither starts nor joins a Ray to do so."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import ray
import torch

from graft import stages
from graft.config import GraftConfig, load_config
from graft.data.prepare import prepare_dataset
from graft.io import tracking
from graft.io.ray_runtime import shutdown_ray
from graft.train.model_dir import HISTORY_FILE, MODEL_FILE

pytestmark = [pytest.mark.ray, pytest.mark.timeout(400)]

TIMINGS = {"epoch_seconds", "epoch_cpu_seconds"}  # differ run to run


def _config(work: Path, runner: str) -> GraftConfig:
    return load_config(
        preset="tiny",
        overrides=[f"work_dir={work}", f"finetune.runner={runner}", "finetune.num_workers=1"],
    )


def _without_timings(history: list[dict[str, float]]) -> list[dict[str, float]]:
    return [{k: v for k, v in row.items() if k not in TIMINGS} for row in history]


def test_a_finetune_stage_in_process_matches_its_ray_train_fit_bit_for_bit(
    tmp_path: Path, untrained_model_dir: Callable[..., Path]
) -> None:
    base = load_config(preset="tiny")
    dataset = tmp_path / "dataset"
    prepare_dataset(base.data, base.seed, dataset)
    pretrained = untrained_model_dir(base, dataset, tmp_path / "pretrained")
    weights: dict[str, dict[str, torch.Tensor]] = {}
    histories: dict[str, list[dict[str, float]]] = {}
    shutdown_ray()
    try:
        # in process first: with no Ray up, the stage must not start one
        for runner in ("in_process", "ray_train"):
            config = _config(tmp_path / runner, runner)
            parent = tracking.start_pipeline_run(config, "test")
            out = stages.finetune.run(
                config, str(dataset), str(pretrained), str(tmp_path / runner / "out"), parent
            )
            if runner == "in_process":
                assert not ray.is_initialized(), "an in-process fit started or joined a Ray"
            model_dir = Path(out.model_dir)
            weights[runner] = torch.load(model_dir / MODEL_FILE, weights_only=True)
            histories[runner] = json.loads((model_dir / HISTORY_FILE).read_text())
            tags = tracking.client_for(config).get_run(out.run_id).data.tags
            assert tags["graft.runner"] == runner
            # its checkpoints: Ray Train's run folder, or the in-process fit's own
            assert Path(tags["graft.checkpoint_path"]).is_dir()
    finally:
        shutdown_ray()

    differ = [
        n
        for n in weights["ray_train"]
        if not torch.equal(weights["ray_train"][n], weights["in_process"][n])
    ]
    assert not differ, f"tensors that differ between the runners: {differ}"
    assert len(histories["in_process"]) == sum(p.epochs for p in base.finetune.phases)
    assert _without_timings(histories["ray_train"]) == _without_timings(histories["in_process"])
