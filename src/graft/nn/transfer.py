"""Transfer learning: reuse a pretrained backbone, attach a new head, freeze and unfreeze.

The source model is never modified: its weights are copied into a freshly built target.
Frozen blocks keep their BatchNorm layers in eval mode, so running statistics of a frozen
block stay bit-identical (Keras' ``trainable=False`` semantics).
"""

from __future__ import annotations

from dataclasses import replace

from torch import nn

from graft.config import PhaseConfig
from graft.nn.models import GraftNet, ModelSpec, build_model

_BN_TYPES = (nn.BatchNorm1d, nn.BatchNorm2d, nn.SyncBatchNorm)


def transfer_spec(
    source: ModelSpec, num_classes: int, reuse_blocks: int | None, available_blocks: int
) -> ModelSpec:
    """The target architecture: the source's stem (and its input statistics, which the reused
    features were learned under) and first ``reuse_blocks`` blocks, plus a new head."""
    keep = available_blocks if reuse_blocks is None else min(reuse_blocks, available_blocks)
    # an autoencoder source hands on its encoder; the target always classifies
    return replace(source, num_classes=num_classes, backbone_blocks=keep, objective="classify")


def transfer_model(source: GraftNet, target_spec: ModelSpec) -> GraftNet:
    """A new model whose stem and backbone carry copies of ``source``'s weights."""
    target = build_model(target_spec)
    source_state = source.state_dict()
    reused = {
        name: tensor.clone()
        for name, tensor in source_state.items()
        if not name.startswith("head.") and name in target.state_dict()
    }
    missing, _ = target.load_state_dict(reused, strict=False)
    unexpected_missing = [n for n in missing if not n.startswith("head.")]
    if unexpected_missing:
        raise ValueError(f"backbone weights missing from the source model: {unexpected_missing}")
    return target


def trainable_blocks(model: GraftNet, phase: PhaseConfig) -> list[int]:
    """Indices of backbone blocks this phase trains (the head always trains)."""
    count = len(model.backbone)
    if phase.trainable == "all":
        return list(range(count))
    if phase.trainable == "top_k":
        return list(range(max(0, count - phase.top_k), count))
    return []


def apply_phase(model: GraftNet, phase: PhaseConfig) -> list[int]:
    """Set ``requires_grad`` for the phase; return the trainable block indices.

    The stem holds no trainable weights beyond PReLU/Swish parameters; it trains only when the
    whole network does.
    """
    unfrozen = trainable_blocks(model, phase)
    for param in model.stem.parameters():
        param.requires_grad = phase.trainable == "all"
    for index, block in enumerate(model.backbone):
        for param in block.parameters():
            param.requires_grad = index in unfrozen
    for param in model.head.parameters():
        param.requires_grad = True
    return unfrozen


def set_train_mode(model: GraftNet, unfrozen: list[int] | None) -> None:
    """``model.train()``, except BatchNorm inside frozen blocks stays in eval mode."""
    model.train()
    if unfrozen is None:
        return
    for index, block in enumerate(model.backbone):
        if index in unfrozen:
            continue
        for module in block.modules():
            if isinstance(module, _BN_TYPES):
                module.eval()
