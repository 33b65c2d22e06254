import copy

import pytest
import torch

from graft.config import ModelConfig, PhaseConfig
from graft.nn.models import ModelSpec, build_model, count_parameters
from graft.nn.transfer import apply_phase, set_train_mode, transfer_model, transfer_spec


def _spec(**model: object) -> ModelSpec:
    config = ModelConfig.model_validate({"hidden_sizes": [16, 8], **model})
    return ModelSpec(
        model=config.model_dump(mode="json"),
        input_shape=[1, 8, 8],
        num_classes=5,
        mean=[3.0],
        std=[2.0],
    )


@pytest.mark.parametrize("family", ["mlp", "cnn", "mobile"])
def test_models_take_raw_images_and_give_logits(family: str) -> None:
    model = build_model(_spec(family=family, conv_channels=[4, 8]))
    assert model(torch.rand(3, 1, 8, 8) * 16).shape == (3, 5)


def test_stem_standardizes_with_training_statistics() -> None:
    model = build_model(_spec())
    x = torch.full((1, 1, 8, 8), 5.0)
    assert torch.allclose(model.stem[0](x), torch.full_like(x, 1.0))


def test_batch_norm_uses_keras_momentum_and_drops_the_bias() -> None:
    model = build_model(_spec(batch_norm={"enabled": True, "ema_decay": 0.99, "eps": 1e-3}))
    linear, bn = model.backbone[0][0], model.backbone[0][1]
    assert linear.bias is None
    assert bn.momentum == pytest.approx(0.01)
    assert bn.eps == 1e-3
    counts = count_parameters(model)
    assert counts["running_stats"] == 2 * (16 + 8)


def test_transfer_copies_the_backbone_and_leaves_the_source_alone() -> None:
    torch.manual_seed(0)
    source = build_model(_spec(batch_norm={"enabled": True}))
    before = copy.deepcopy(source.state_dict())
    target_spec = transfer_spec(_spec(batch_norm={"enabled": True}), 2, None, len(source.backbone))
    target = transfer_model(source, target_spec)
    for name, tensor in source.state_dict().items():
        assert torch.equal(tensor, before[name])
        if not name.startswith("head."):
            assert torch.equal(target.state_dict()[name], tensor)
            assert target.state_dict()[name].data_ptr() != tensor.data_ptr()
    assert target.head.out_features == 2
    # training the target never touches the source
    with torch.no_grad():
        target.backbone[0][0].weight.add_(1.0)
    assert torch.equal(source.backbone[0][0].weight, before["backbone.0.0.weight"])


def test_reuse_first_k_blocks() -> None:
    source = build_model(_spec())
    target = transfer_model(source, transfer_spec(_spec(), 2, 1, len(source.backbone)))
    assert len(target.backbone) == 1
    assert target.head.in_features == 16


@pytest.mark.parametrize("family", ["cnn", "mobile"])
@pytest.mark.parametrize("reuse", [1, 2])
def test_a_conv_backbone_cut_before_its_dense_part_still_classifies(
    family: str, reuse: int
) -> None:
    """finetune.reuse_blocks within the conv blocks: the kept feature map is flattened (mobile:
    pooled first) instead of reaching the head as N x C x H x W, and the kept blocks' weights
    are the source's, copied by their unchanged names."""
    spec = _spec(family=family, conv_channels=[4, 8])
    source = build_model(spec)
    target = transfer_model(source, transfer_spec(spec, 2, reuse, len(source.backbone)))
    assert target(torch.rand(3, 1, 8, 8) * 16).shape == (3, 2)
    kept = {n: t for n, t in target.state_dict().items() if not n.startswith("head.")}
    assert kept and all(torch.equal(t, source.state_dict()[n]) for n, t in kept.items())


def test_phases_freeze_and_frozen_batch_norm_stays_in_eval() -> None:
    model = build_model(_spec(batch_norm={"enabled": True}))
    unfrozen = apply_phase(model, PhaseConfig(trainable="head", epochs=1))
    assert unfrozen == []
    assert all(not p.requires_grad for p in model.backbone.parameters())
    assert all(p.requires_grad for p in model.head.parameters())
    set_train_mode(model, unfrozen)
    assert not model.backbone[0][1].training
    assert model.head.training
    unfrozen = apply_phase(model, PhaseConfig(trainable="top_k", top_k=1, epochs=1))
    assert unfrozen == [1]
    assert all(p.requires_grad for p in model.backbone[1].parameters())
    assert all(not p.requires_grad for p in model.backbone[0].parameters())
