"""Cached bottleneck features: the frozen trunk's inference-mode outputs, flags restored."""

import torch
from torch.utils.data import TensorDataset

from graft.config import load_config
from graft.nn.models import ModelSpec, build_model
from graft.train.workers import bottleneck_features


def test_features_are_the_trunks_eval_outputs_and_train_flags_are_restored() -> None:
    config = load_config(
        preset="tiny",
        overrides=["model.batch_norm.enabled=true", "model.dropout.rate=0.5"],
    )
    spec = ModelSpec(
        model=config.model.model_dump(mode="json"),
        input_shape=[64],
        num_classes=2,
        mean=[0.0] * 64,
        std=[1.0] * 64,
    )
    torch.manual_seed(0)
    model = build_model(spec)
    model.train()
    x, y = torch.randn(70, 64), torch.randint(0, 2, (70,))
    cached = bottleneck_features(model, TensorDataset(x, y), torch.device("cpu"), batch_size=32)
    assert all(module.training for module in model.modules())  # restored
    model.eval()
    with torch.no_grad():
        expected = model.features(x)
    features, targets = cached.tensors
    # dropout (rate 0.5) would make train-mode features differ: these are deterministic
    assert torch.allclose(features, expected, atol=1e-6)
    assert torch.equal(targets, y)
