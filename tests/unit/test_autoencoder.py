"""Autoencoder pretraining: a decoder mirroring the dense backbone, a reconstruction loss
that falls, and an encoder the finetune reuses."""

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits
from torch import nn

from graft.config import load_config
from graft.errors import ConfigError
from graft.nn.models import ModelSpec, build_model
from graft.nn.transfer import transfer_model, transfer_spec
from graft.train.objectives import objective_loss


def _spec(objective: str = "autoencoder") -> ModelSpec:
    x = load_digits().data.astype(np.float32)
    config = load_config(preset="tiny")  # hidden sizes 64, 32
    return ModelSpec(
        model=config.model.model_dump(mode="json"),
        input_shape=[64],
        num_classes=8,
        mean=x.mean(0).tolist(),
        std=(x.std(0) + 1e-3).tolist(),
        objective=objective,
    )


def test_decoder_mirrors_the_encoder_back_to_the_input_width() -> None:
    model = build_model(_spec())
    widths = [(m.in_features, m.out_features) for m in model.head if isinstance(m, nn.Linear)]
    assert widths == [(32, 64), (64, 64)]  # code 32 -> hidden 64 -> input 64
    assert model(torch.zeros(5, 64)).shape == (5, 64)


def test_reconstruction_loss_falls_by_half_and_the_encoder_transfers() -> None:
    x = torch.from_numpy(load_digits().data.astype(np.float32))
    y = torch.zeros(len(x), dtype=torch.long)  # unused by the reconstruction objective
    torch.manual_seed(0)
    model = build_model(_spec())
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    with torch.no_grad():
        before = float(objective_loss(model, model(x), x, y, "autoencoder"))
    for _ in range(5):
        for start in range(0, len(x), 64):
            xb = x[start : start + 64]
            optimizer.zero_grad()
            objective_loss(model, model(xb), xb, y[: len(xb)], "autoencoder").backward()
            optimizer.step()
    with torch.no_grad():
        after = float(objective_loss(model, model(x), x, y, "autoencoder"))
    assert after <= 0.5 * before  # FEATURES.md: reconstruction loss falls >= 50%
    target_spec = transfer_spec(_spec(), num_classes=2, reuse_blocks=None, available_blocks=2)
    assert target_spec.objective == "classify"
    classifier = transfer_model(model, target_spec)
    assert isinstance(classifier.head, nn.Linear) and classifier.head.out_features == 2
    for key, value in model.backbone.state_dict().items():
        assert torch.equal(classifier.backbone.state_dict()[key], value)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["pretrain.objective=autoencoder", "model.family=cnn"], "mlp"),
        (
            ["pretrain.objective=autoencoder", "pretrain.early_stopping.monitor=val_accuracy"],
            "val_loss",
        ),
        (["finetune.objective=autoencoder"], "pretrain objective"),
    ],
)
def test_contradictory_autoencoder_settings_are_refused(overrides: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(preset="tiny", overrides=overrides)
