"""A CNN trains channels-last on the CPU (graft.train.workers.channels_last_on_cpu): the loop's
model holds its convolution weights in that layout, the fit stays bit-reproducible, a fit that
fails resumes from its checkpoint to the never-failed weights, and the saved weights load into
a model of the usual layout."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from graft.config import GraftConfig, load_config
from graft.io.ray_runtime import TrainStorage
from graft.nn.models import ModelSpec, build_model
from graft.train import recipe
from graft.train.local_fit import fit_in_process
from graft.train.model_dir import MODEL_FILE, SPEC_FILE
from graft.train.request import FitRun
from graft.train.stage_requests import pretrain_request
from graft.train.workers import channels_last_on_cpu

FAIL_AT = 2


def test_only_a_convolutional_model_on_the_cpu_is_converted() -> None:
    cnn = nn.Sequential(nn.Conv2d(2, 4, 3), nn.Flatten(), nn.Linear(64, 2))
    mlp = nn.Sequential(nn.Flatten(), nn.Linear(16, 2))
    assert channels_last_on_cpu(cnn, torch.device("cpu"))
    assert cnn[0].weight.is_contiguous(memory_format=torch.channels_last)
    assert not cnn[0].weight.is_contiguous()
    assert not channels_last_on_cpu(mlp, torch.device("cpu"))
    assert not channels_last_on_cpu(
        nn.Sequential(nn.Conv2d(1, 4, 3)), torch.device("cuda")
    )  # a GPU keeps its layout (checked without touching a device)


@pytest.fixture(scope="module")
def cnn_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from graft.data.prepare import prepare_dataset

    config = _config(tmp_path_factory.mktemp("prep"))
    dataset = tmp_path_factory.mktemp("cnn-data") / "dataset"
    prepare_dataset(config.data, config.seed, dataset)
    return dataset


def _config(work: Path) -> GraftConfig:
    return load_config(
        preset="tiny",
        overrides=[
            f"work_dir={work}",
            "model.family=cnn",
            "pretrain.epochs=3",
            "pretrain.early_stopping.enabled=false",
            "pretrain.preflight_overfit_batch=false",
        ],
    )


def _fit(dataset: Path, work: Path, **changes: Any) -> Path:
    config = _config(work)
    request = pretrain_request(config, str(dataset), None).model_copy(update=changes)
    run = FitRun.for_stage(
        config.pretrain,
        run_name="fit",
        output_dir=work / "model",
        storage=TrainStorage(str(work / "checkpoints")),
    )
    result = fit_in_process(request, FitRun(**{**run.__dict__, "max_failures": 1}))
    return Path(result.model_dir)


def test_a_cnn_fit_trains_channels_last_reproducibly_and_resumes_exactly(
    cnn_dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    layouts: list[bool] = []
    original = recipe.WorkerFit.run

    def run_and_look(self: recipe.WorkerFit) -> None:
        # a one-channel kernel is both layouts at once: look at the second block's
        convs = [m for m in self.model.modules() if isinstance(m, nn.Conv2d) and m.in_channels > 1]
        layouts.extend(
            c.weight.is_contiguous(memory_format=torch.channels_last)
            and not c.weight.is_contiguous()
            for c in convs
        )
        original(self)

    monkeypatch.setattr(recipe.WorkerFit, "run", run_and_look)
    first = _fit(cnn_dataset, tmp_path / "first")
    again = _fit(cnn_dataset, tmp_path / "again")
    marker = cnn_dataset / "source" / f".failed-{FAIL_AT}"
    try:
        resumed = _fit(cnn_dataset, tmp_path / "resumed", fail_at_epoch=FAIL_AT)
        assert marker.exists()  # the failure struck, and the fit restarted
    finally:
        marker.unlink(missing_ok=True)
    assert layouts and all(layouts)

    weights = [torch.load(d / MODEL_FILE, weights_only=True) for d in (first, again, resumed)]
    for other in weights[1:]:
        assert [n for n in weights[0] if not torch.equal(weights[0][n], other[n])] == []

    # the saved weights load into a model of the usual layout and give the same scores
    spec = ModelSpec.from_json((first / SPEC_FILE).read_text())
    plain = build_model(spec)
    plain.load_state_dict(weights[0])
    converted = build_model(spec)
    converted.load_state_dict(weights[0])
    channels_last_on_cpu(converted, torch.device("cpu"))
    batch = torch.rand(8, *spec.input_shape) * 255
    plain.eval(), converted.eval()
    with torch.no_grad():
        torch.testing.assert_close(plain(batch), converted(batch), rtol=1e-4, atol=1e-5)
