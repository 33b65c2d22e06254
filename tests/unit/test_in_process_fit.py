"""A one-worker stage fit in this process (graft.train.local_fit.fit_in_process): its
checkpoints are kept as Ray Train keeps them, a failure restarts it from the newest one up to
``checkpoint.max_failures`` times and ends with the weights of a fit that never failed, and a
runner the settings cannot honour is refused at load."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from graft.config import GraftConfig, load_config
from graft.errors import ConfigError, TrainingError
from graft.io import tracking
from graft.io.ray_runtime import TrainStorage
from graft.train.local_fit import CHECKPOINT_FOLDER, fit_in_process
from graft.train.model_dir import MODEL_FILE
from graft.train.request import FitRequest, FitRun
from graft.train.stage_requests import finetune_request

FAIL_AT = 3  # epochs done when the injected failure strikes


@pytest.fixture
def inputs(tiny_dataset_and_source: tuple[str, str]) -> tuple[Path, Path]:
    """The tiny preset's dataset and an untrained source model (shared, read-only: the
    injected failure's marker is removed again by the test that leaves it)."""
    dataset, pretrained = tiny_dataset_and_source
    return Path(dataset), Path(pretrained)


def _request(
    work: Path, inputs: tuple[Path, Path], **changes: object
) -> tuple[GraftConfig, FitRequest]:
    config = load_config(preset="tiny", overrides=[f"work_dir={work}"])
    parent = tracking.start_pipeline_run(config, "test")
    dataset, pretrained = inputs
    request = finetune_request(config, str(dataset), str(pretrained), work / "scratch", parent)
    return config, request.model_copy(update=changes)


def _run(config: GraftConfig, name: str, **changes: object) -> FitRun:
    run = FitRun.for_stage(
        config.finetune,
        run_name=name,
        output_dir=config.work_path / "model",
        storage=TrainStorage(str(config.work_path / "checkpoints")),
    )
    return FitRun(**{**run.__dict__, **changes})


def test_a_failed_in_process_fit_restarts_from_its_newest_checkpoint(
    inputs: tuple[Path, Path], tmp_path: Path
) -> None:
    config, clean = _request(tmp_path / "clean", inputs)
    fit_in_process(clean, _run(config, "clean"))
    failing_config, failing = _request(tmp_path / "failed", inputs, fail_at_epoch=FAIL_AT)
    marker = inputs[0] / "target" / f".failed-{FAIL_AT}"
    try:
        result = fit_in_process(failing, _run(failing_config, "failed", max_failures=1))
        assert marker.exists()  # the failure struck
    finally:
        marker.unlink(missing_ok=True)

    old = torch.load(config.work_path / "model" / MODEL_FILE, weights_only=True)
    new = torch.load(Path(result.model_dir) / MODEL_FILE, weights_only=True)
    assert [n for n in old if not torch.equal(old[n], new[n])] == []
    epochs = sum(p.epochs for p in config.finetune.phases)
    assert [row["epoch"] for row in result.history] == list(range(1, epochs + 1))
    # the newest num_to_keep checkpoints stay, numbered by report
    kept = sorted(
        (failing_config.work_path / "checkpoints" / "failed").glob(f"{CHECKPOINT_FOLDER}_*")
    )
    assert len(kept) == config.finetune.checkpoint.num_to_keep
    assert result.checkpoint_path == str(kept[-1])
    assert kept[-1].name == f"{CHECKPOINT_FOLDER}_{epochs:06d}"


def test_an_in_process_fit_out_of_restarts_names_the_setting(
    inputs: tuple[Path, Path], tmp_path: Path
) -> None:
    config, failing = _request(tmp_path, inputs, fail_at_epoch=FAIL_AT)
    try:
        with pytest.raises(TrainingError, match=r"checkpoint.max_failures=0"):
            fit_in_process(failing, _run(config, "failed", max_failures=0))
    finally:
        (inputs[0] / "target" / f".failed-{FAIL_AT}").unlink(missing_ok=True)


def test_an_in_process_fit_refuses_s3_storage(inputs: tuple[Path, Path], tmp_path: Path) -> None:
    config, request = _request(tmp_path, inputs)
    run = _run(config, "s3", storage=TrainStorage("bucket/prefix", filesystem=object()))
    with pytest.raises(TrainingError, match="Ray Train runner"):
        fit_in_process(request, run)


@pytest.mark.parametrize("override", ["finetune.num_workers=2", "finetune.resources.gpus=1"])
def test_runner_in_process_is_refused_for_ddp_or_gpu_fits(override: str) -> None:
    with pytest.raises(ConfigError, match="runner=in_process trains one CPU worker"):
        load_config(preset="tiny", overrides=["finetune.runner=in_process", override])


@pytest.mark.parametrize(
    ("overrides", "in_process"),
    [
        ([], True),  # the tiny preset's finetune: one CPU worker, in memory, local storage
        # graft run's one Ray: each stage's process is a driver of it
        (["ray.mode=address", "ray.address=10.0.0.1:6379", "ray.submit=driver"], True),
        (["finetune.num_workers=2"], False),
        (["finetune.resources.gpus=1"], False),
        (["data.loader=streaming", "data.source=/data/table.parquet"], False),
        (["ray.mode=address", "ray.address=10.0.0.1:6379", "ray.submit=job"], False),
        (["ray.mode=rayjob", "ray.staging_uri=s3://b/p"], False),
        (["finetune.runner=ray_train"], False),
    ],
)
def test_auto_trains_one_cpu_worker_in_process_only_where_the_stage_runs(
    overrides: list[str], in_process: bool, tmp_path: Path
) -> None:
    from graft.stages.training import trains_in_process

    config = load_config(preset="tiny", overrides=overrides)
    local = TrainStorage(str(tmp_path))
    assert trains_in_process(config, config.finetune, local) is in_process


def test_auto_keeps_checkpoints_on_s3_with_ray_train(tmp_path: Path) -> None:
    from graft.stages.training import trains_in_process

    config = load_config(preset="tiny")
    s3 = TrainStorage("bucket/prefix", filesystem=object())
    assert not trains_in_process(config, config.finetune, s3)
    explicit = load_config(preset="tiny", overrides=["finetune.runner=in_process"])
    assert trains_in_process(explicit, explicit.finetune, TrainStorage(str(tmp_path)))
