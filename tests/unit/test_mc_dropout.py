"""MC dropout: only dropout samples; batch norm stays in inference mode and its stats untouched."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from graft.nn.mc_dropout import mc_dropout_mode, mc_predict

N, FEATURES, CLASSES = 64, 20, 5


def _model(dropout: float = 0.5, alpha: bool = False) -> nn.Sequential:
    """A trained-looking BN + dropout classifier whose BN running stats are not the defaults."""
    torch.manual_seed(0)
    drop: nn.Module = nn.AlphaDropout(dropout) if alpha else nn.Dropout(dropout)
    model = nn.Sequential(
        nn.Linear(FEATURES, 32),
        nn.BatchNorm1d(32),
        nn.ReLU(),
        drop,
        nn.Linear(32, CLASSES),
    )
    model.train()
    with torch.no_grad():
        for _ in range(5):
            model(torch.randn(128, FEATURES) * 3 + 1)
    model.eval()
    return model


def _batch() -> torch.Tensor:
    return torch.randn(N, FEATURES, generator=torch.Generator().manual_seed(1))


def _bn(model: nn.Sequential) -> nn.BatchNorm1d:
    bn = model[1]
    assert isinstance(bn, nn.BatchNorm1d)
    return bn


def _bn_buffers(model: nn.Sequential) -> list[torch.Tensor]:
    """Copies of running_mean, running_var and num_batches_tracked."""
    bn = _bn(model)
    buffers = [bn.running_mean, bn.running_var, bn.num_batches_tracked]
    return [b.clone() for b in buffers if b is not None]


@pytest.mark.parametrize("alpha", [False, True])
def test_dropout_samples_inside_context_and_not_outside(alpha: bool):
    model = _model(alpha=alpha)
    x = _batch()
    with torch.no_grad():
        with mc_dropout_mode(model):
            first, second = model(x), model(x)
        assert not torch.equal(first, second)
        assert torch.equal(model(x), model(x))


def test_bn_running_stats_bit_identical_and_bn_in_eval_during_mc():
    model = _model()
    bn = _bn(model)
    before = _bn_buffers(model)
    assert len(before) == 3
    x = _batch()
    with mc_dropout_mode(model), torch.no_grad():
        assert not bn.training
        assert model[3].training
        for _ in range(50):
            model(x)
        assert not bn.training
    mc_predict(model, x, samples=50)
    after = _bn_buffers(model)
    assert all(torch.equal(a, b) for a, b in zip(after, before, strict=True))


def test_forcing_train_mode_instead_corrupts_bn_stats():
    """Negative control: the naive model.train() approach the module exists to avoid."""
    model = _model()
    mean_before = _bn_buffers(model)[0]
    model.train()
    with torch.no_grad():
        model(_batch())
    assert not torch.equal(_bn_buffers(model)[0], mean_before)


@pytest.mark.parametrize("start_in_train", [False, True])
def test_modes_restored_after_context(start_in_train: bool):
    model = _model()
    model.train(start_in_train)
    model[1].eval()  # a mixed state (e.g. frozen BN while finetuning) must also come back as-is
    before = [m.training for m in model.modules()]
    with mc_dropout_mode(model):
        pass
    assert [m.training for m in model.modules()] == before


def test_modes_restored_when_the_block_raises():
    model = _model()
    model.train()
    with pytest.raises(RuntimeError), mc_dropout_mode(model):
        raise RuntimeError("boom")
    assert all(m.training for m in model.modules())


def test_mc_predict_shapes_and_probabilities():
    model = _model()
    mean, std = mc_predict(model, _batch(), samples=30)
    assert mean.shape == (N, CLASSES)
    assert std.shape == (N, CLASSES)
    assert torch.allclose(mean.sum(dim=1), torch.ones(N), atol=1e-5)
    assert (std >= 0).all()
    assert std.max().item() > 0.01
    assert not model.training  # left in the eval mode it came in with


def test_mc_predict_std_is_zero_without_dropout():
    model = _model(dropout=0.0)
    x = _batch()
    mean, std = mc_predict(model, x, samples=10)
    assert torch.count_nonzero(std).item() == 0
    with torch.no_grad():
        plain = torch.softmax(model(x), dim=-1)
    assert torch.allclose(mean, plain, atol=1e-6)


def test_mc_predict_reproducible_with_seed_and_differs_from_plain_prediction():
    model = _model()
    x = _batch()
    torch.manual_seed(7)
    mean_a, std_a = mc_predict(model, x, samples=20)
    torch.manual_seed(7)
    mean_b, std_b = mc_predict(model, x, samples=20)
    assert torch.equal(mean_a, mean_b)
    assert torch.equal(std_a, std_b)
    with torch.no_grad():
        plain = torch.softmax(model(x), dim=-1)
    assert not torch.allclose(mean_a, plain, atol=1e-3)


def test_mc_predict_tracks_no_gradients():
    model = _model()
    mean, std = mc_predict(model, _batch(), samples=3)
    assert not mean.requires_grad
    assert not std.requires_grad


def test_mc_predict_rejects_zero_samples():
    with pytest.raises(ValueError, match="samples"):
        mc_predict(_model(), _batch(), samples=0)
