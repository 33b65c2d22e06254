"""Model families (MLP, small CNN, MobileNet-style, a Hugging Face image model's backbone) built
from a serializable :class:`ModelSpec`.

Every model is ``stem -> backbone (a list of blocks) -> head``. The stem standardizes raw
inputs with statistics fitted on the training split, so an exported model takes raw inputs
and serving applies exactly what training did. Transfer learning reuses the stem and the
first k backbone blocks and replaces the head.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from graft.config import InitScheme, ModelConfig
from graft.nn.activations import build_activation
from graft.nn.hf_backbone import hf_parts, new_hf_model
from graft.nn.init import initialize


@dataclass
class ModelSpec:
    """Everything needed to rebuild a model's architecture (weights live elsewhere)."""

    model: dict[str, Any]  # a ModelConfig dump
    input_shape: list[int]
    num_classes: int
    mean: list[float]
    std: list[float]
    backbone_blocks: int | None = None  # keep only the first k blocks (transfer learning)
    objective: str = "classify"  # autoencoder: the head is a decoder back to the input
    # family hf: the Hugging Face model's config (graft.nn.hf_backbone), so a model folder
    # rebuilds it without the original files; absent from older spec.json files
    hf_config: dict[str, Any] | None = None

    @property
    def model_config(self) -> ModelConfig:
        return ModelConfig.model_validate(self.model)

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> ModelSpec:
        return cls(**json.loads(text))

    def save(self, path: Path) -> None:
        path.write_text(self.to_json())

    @classmethod
    def load(cls, path: Path) -> ModelSpec:
        return cls.from_json(path.read_text())


class Standardize(nn.Module):
    """(x - mean) / std with training-split statistics stored as buffers."""

    def __init__(self, mean: list[float], std: list[float], image: bool) -> None:
        super().__init__()
        shape = (1, -1, 1, 1) if image else (1, -1)
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).reshape(shape))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).reshape(shape))

    mean: torch.Tensor
    std: torch.Tensor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


class GraftNet(nn.Module):
    def __init__(self, stem: nn.Sequential, blocks: list[nn.Module], head: nn.Module) -> None:
        super().__init__()
        self.stem = stem
        self.backbone = nn.Sequential(*blocks)
        self.head = head

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(self.stem(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))

    def reconstruction_target(self, x: torch.Tensor) -> torch.Tensor:
        """What an autoencoder's decoder reproduces: the standardized, flattened input (before
        the stem's input dropout, so a dropout rate makes it a denoising autoencoder)."""
        standardize = self.stem[0]
        assert isinstance(standardize, Standardize)
        return standardize(x).flatten(1)


def _dropout(config: ModelConfig, rate: float) -> nn.Module:
    if rate <= 0:
        return nn.Identity()
    return nn.AlphaDropout(rate) if config.dropout.kind == "alpha" else nn.Dropout(rate)


def _batch_norm(config: ModelConfig, features: int, conv: bool) -> nn.Module:
    # Keras' momentum weighs the old average; torch's weighs the new value.
    momentum = 1.0 - config.batch_norm.ema_decay
    cls = nn.BatchNorm2d if conv else nn.BatchNorm1d
    return cls(features, eps=config.batch_norm.eps, momentum=momentum)


def _block(config: ModelConfig, layer: nn.Module, width: int, conv: bool) -> nn.Sequential:
    bn = config.batch_norm
    parts: list[nn.Module] = [layer]
    if bn.enabled and bn.placement == "before_activation":
        parts.append(_batch_norm(config, width, conv))
    parts.append(build_activation(config.activation))
    if bn.enabled and bn.placement == "after_activation":
        parts.append(_batch_norm(config, width, conv))
    if conv:
        parts.append(nn.MaxPool2d(2))
    parts.append(_dropout(config, config.dropout.rate))
    return nn.Sequential(*parts)


def _bias(config: ModelConfig) -> bool:
    # BN right after the layer subtracts the mean: a bias there is a wasted parameter.
    return not (config.batch_norm.enabled and config.batch_norm.placement == "before_activation")


def _mlp_blocks(config: ModelConfig, in_features: int) -> list[nn.Sequential]:
    blocks: list[nn.Sequential] = []
    for width in config.hidden_sizes:
        blocks.append(
            _block(config, nn.Linear(in_features, width, bias=_bias(config)), width, False)
        )
        in_features = width
    return blocks


def _cnn_blocks(config: ModelConfig, input_shape: list[int]) -> list[nn.Module]:
    channels, height, width = input_shape
    blocks: list[nn.Module] = []
    for out_channels in config.conv_channels:
        conv = nn.Conv2d(channels, out_channels, 3, padding=1, bias=_bias(config))
        blocks.append(_block(config, conv, out_channels, True))
        channels, height, width = out_channels, height // 2, width // 2
    flat = channels * height * width
    dense: list[nn.Module] = list(_mlp_blocks(config, flat))
    if dense:
        first = dense[0]
        assert isinstance(first, nn.Sequential)
        dense[0] = nn.Sequential(nn.Flatten(), *first)
    else:
        dense = [nn.Flatten()]
    return blocks + dense


def mobile_channels(channels: int, width_multiplier: float) -> int:
    """``channels`` scaled by the width multiplier, rounded to a multiple of 8 (at least 8),
    as MobileNet does so the scaled widths stay hardware-friendly."""
    return max(8, int(channels * width_multiplier + 4) // 8 * 8)


def _separable_block(config: ModelConfig, in_channels: int, out_channels: int) -> nn.Sequential:
    """Depthwise 3x3 (stride 2: where cnn max-pools) + BN + activation, then pointwise 1x1 +
    BN + activation. BN always follows each conv (bias-free), whatever model.batch_norm says:
    the separable block is defined with it."""
    return nn.Sequential(
        nn.Conv2d(in_channels, in_channels, 3, stride=2, padding=1, groups=in_channels, bias=False),
        _batch_norm(config, in_channels, True),
        build_activation(config.activation),
        nn.Conv2d(in_channels, out_channels, 1, bias=False),
        _batch_norm(config, out_channels, True),
        build_activation(config.activation),
        _dropout(config, config.dropout.rate),
    )


def _mobile_blocks(config: ModelConfig, input_shape: list[int]) -> list[nn.Module]:
    channels = input_shape[0]
    blocks: list[nn.Module] = []
    for base in config.conv_channels:
        out_channels = mobile_channels(base, config.mobile.width_multiplier)
        blocks.append(_separable_block(config, channels, out_channels))
        channels = out_channels
    # global average pooling: the dense part's width does not depend on the resolution
    pool: list[nn.Module] = [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
    dense: list[nn.Module] = list(_mlp_blocks(config, channels))
    if dense:
        first = dense[0]
        assert isinstance(first, nn.Sequential)
        dense[0] = nn.Sequential(*pool, *first)
    else:
        dense = [nn.Sequential(*pool)]
    return blocks + dense


class Resize(nn.Module):
    """Bilinear resize to a fixed (height, width): the resolution multiplier, applied inside
    the model so data-prep, evaluation and serving keep the dataset's resolution."""

    def __init__(self, size: tuple[int, int]) -> None:
        super().__init__()
        self.size = size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(x, size=self.size, mode="bilinear", align_corners=False)


def _resized(input_shape: list[int], multiplier: float) -> tuple[int, int]:
    return (max(1, round(input_shape[1] * multiplier)), max(1, round(input_shape[2] * multiplier)))


def _output_width(stem: nn.Module, blocks: list[nn.Module], input_shape: list[int]) -> int:
    with torch.no_grad():
        probe = torch.zeros(2, *input_shape)
        out = nn.Sequential(stem, *blocks).eval()(probe)
    return int(out.reshape(2, -1).shape[1])


def _decoder(
    config: ModelConfig, code_width: int, hidden_sizes: list[int], in_features: int
) -> nn.Sequential:
    """The encoder mirrored: dense layers back up through the hidden widths to the input's,
    the last one linear (standardized inputs are unbounded)."""
    widths = [code_width, *reversed(hidden_sizes[:-1]), in_features]
    layers: list[nn.Module] = []
    for index, (fan_in, fan_out) in enumerate(itertools.pairwise(widths)):
        layers.append(nn.Linear(fan_in, fan_out))
        if index < len(widths) - 2:
            layers.append(build_activation(config.activation))
    return nn.Sequential(*layers)


def _build_hf_model(spec: ModelSpec, pretrained: nn.Module | None) -> GraftNet:
    """A Hugging Face model's blocks between Graft's stem (standardize, match channels,
    resize) and a new head (dropout, linear); its weights are ``pretrained``'s, else random
    until a model folder's are loaded."""
    if spec.hf_config is None:
        raise ValueError(
            "model.family=hf needs the spec's hf_config: import the backbone with "
            "graft.train.backbone_import.import_backbone"
        )
    if spec.objective != "classify":
        raise ValueError("an imported Hugging Face backbone is finetuned to classify only")
    hf_model = new_hf_model(spec.hf_config) if pretrained is None else pretrained
    parts = hf_parts(hf_model, spec.hf_config, spec.input_shape, spec.backbone_blocks)
    stem_parts: list[nn.Module] = [Standardize(spec.mean, spec.std, image=True), *parts.adapters]
    if parts.resize is not None:
        stem_parts.append(Resize(parts.resize))
    stem = nn.Sequential(*stem_parts)
    pooled = parts.blocks if parts.pool is None else [*parts.blocks, parts.pool]
    width = _output_width(stem, pooled, spec.input_shape)
    config = spec.model_config
    # model.dropout.rate drops pooled features before the new head (Identity at 0, so the
    # weights' names do not depend on the rate); a backbone cut before its pooling block
    # hands on feature maps, which the head pools first
    head = nn.Sequential(
        *([] if parts.pool is None else [parts.pool]),
        _dropout(config, config.dropout.rate),
        nn.Linear(width, spec.num_classes),
    )
    model = GraftNet(stem, parts.blocks, head)
    initialize_head(model, config)
    return model


def _flattened(config: ModelConfig, kept: list[nn.Module]) -> list[nn.Module]:
    """A backbone cut before its dense part (``finetune.reuse_blocks``) ends on a feature map:
    flatten it as cnn's first dense block would (mobile: global-average-pool it first). The
    parameter-free layers go at the end of the last kept block, so weight names stay those of
    the uncut backbone and the transfer copies them by name."""
    if config.family not in ("cnn", "mobile") or not kept:
        return kept
    last = kept[-1]
    if not isinstance(last, nn.Sequential) or any(isinstance(m, nn.Flatten) for m in last):
        return kept
    pool: list[nn.Module] = [nn.AdaptiveAvgPool2d(1)] if config.family == "mobile" else []
    return [*kept[:-1], nn.Sequential(*last, *pool, nn.Flatten())]


def build_model(spec: ModelSpec, pretrained: nn.Module | None = None) -> GraftNet:
    """The network ``spec`` describes, with fresh weights. ``pretrained``: for family hf, the
    Hugging Face base model whose modules (and weights) become the backbone."""
    config = spec.model_config
    if config.family == "hf":
        return _build_hf_model(spec, pretrained)
    if config.family == "graft":
        raise ValueError(
            "model.family=graft names a registered model to import "
            "(graft.train.backbone_import.import_backbone); its model folder's spec keeps the "
            "registered architecture, which is what is built"
        )
    image = len(spec.input_shape) == 3
    if config.family in ("cnn", "mobile") and not image:
        raise ValueError(
            f"model.family={config.family} needs image inputs (N x C x H x W); use mlp"
        )
    stem_parts: list[nn.Module] = [Standardize(spec.mean, spec.std, image)]
    if config.family == "mobile":
        if config.mobile.resolution_multiplier != 1.0:
            stem_parts.append(
                Resize(_resized(spec.input_shape, config.mobile.resolution_multiplier))
            )
        blocks: list[nn.Module] = _mobile_blocks(config, spec.input_shape)
    elif config.family == "mlp":
        stem_parts.append(nn.Flatten())
        stem_parts.append(_dropout(config, config.dropout.input_rate))
        in_features = 1
        for dim in spec.input_shape:
            in_features *= dim
        blocks = list(_mlp_blocks(config, in_features))
    else:
        blocks = _cnn_blocks(config, spec.input_shape)
    if spec.backbone_blocks is not None and spec.backbone_blocks < len(blocks):
        blocks = _flattened(config, blocks[: spec.backbone_blocks])
    stem = nn.Sequential(*stem_parts)
    width = _output_width(stem, blocks, spec.input_shape)
    head: nn.Module
    if spec.objective == "autoencoder":
        if config.family != "mlp":
            raise ValueError("an autoencoder's decoder mirrors a dense backbone: use mlp")
        head = _decoder(config, width, [*config.hidden_sizes[: len(blocks)]], in_features)
    else:
        head = nn.Linear(width, spec.num_classes)
    model = GraftNet(stem, blocks, head)
    initialize(model.stem, config.init, config.activation.name)
    initialize(model.backbone, config.init, config.activation.name)
    initialize_head(model, config)
    return model


def initialize_head(model: GraftNet, config: ModelConfig) -> None:
    """(Re)draw the head's weights from torch's current RNG."""
    # The head feeds a softmax: Glorot, whatever the hidden activation (a He-scaled head
    # starts with over-confident logits).
    head_scheme: InitScheme = (
        "torch_default" if config.init == "torch_default" else "glorot_uniform"
    )
    initialize(model.head, head_scheme, config.activation.name)


def count_parameters(model: nn.Module) -> dict[str, int]:
    """Trainable, frozen and buffer (running statistics) counts, like Keras' summary."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    frozen = sum(p.numel() for p in model.parameters() if not p.requires_grad)
    running = sum(
        b.numel()
        for name, b in model.named_buffers()
        if name.endswith(("running_mean", "running_var"))
    )
    return {"trainable": trainable, "non_trainable": frozen + running, "running_stats": running}
