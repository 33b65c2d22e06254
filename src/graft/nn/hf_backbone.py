"""Hugging Face image models as Graft backbones (``model.family=hf``).

A Hugging Face base model is cut into Graft's backbone blocks, each a module taking and
returning one tensor, so transfer phases freeze and unfreeze them like Graft's own blocks:

- ``resnet``: the embedder, one block per encoder stage; the last also average-pools.
- ``convnext``: the embeddings, one block per stage; the last also pools and layer-norms.
- ``mobilenet_v2``: the stem, one block per inverted residual; the last also runs the 1x1
  conv and pools.
- ``vit``: the patch and position embeddings, one block per encoder layer; the last also
  layer-norms and takes the [CLS] token (as ``ViTForImageClassification`` does).

Any other ``model_type`` is refused. The model's config is kept (as a dict) in the
:class:`~graft.nn.models.ModelSpec`, so a Graft model folder rebuilds the architecture without
the original files. Weights are read from safetensors only, from a local folder only:
nothing here downloads, and no pickle is loaded. ``transformers`` is imported on first use.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from graft.errors import ConfigError

# model_type -> (config class, base model class) in transformers
SUPPORTED_MODEL_TYPES: dict[str, tuple[str, str]] = {
    "resnet": ("ResNetConfig", "ResNetModel"),
    "convnext": ("ConvNextConfig", "ConvNextModel"),
    "mobilenet_v2": ("MobileNetV2Config", "MobileNetV2Model"),
    "vit": ("ViTConfig", "ViTModel"),
}
CONFIG_FILE = "config.json"
SAFETENSORS_FILES = ("model.safetensors", "model.safetensors.index.json")
# weights of the base model that no Graft block uses (ViT's pooler: Graft takes the normed
# [CLS] token), so a checkpoint without them (a ViTForImageClassification) is complete
_UNUSED_PREFIXES = {"vit": ("pooler.",)}
# the source task's labels (the new head replaces them; ImageNet's are 1,000 entries) and the
# folder it was read from (a temporary path) are not part of the architecture
_DROPPED_CONFIG_KEYS = ("id2label", "label2id", "_name_or_path")


def model_type_of(hf_config: dict[str, Any]) -> str:
    """The config's ``model_type``; ConfigError unless Graft can cut it into blocks."""
    model_type = str(hf_config.get("model_type"))
    if model_type not in SUPPORTED_MODEL_TYPES:
        raise ConfigError(
            f"Hugging Face model_type '{model_type}' is not supported as a Graft backbone; "
            f"supported model_types: {', '.join(SUPPORTED_MODEL_TYPES)}"
        )
    return model_type


def _classes(model_type: str) -> tuple[Any, Any]:
    import transformers

    config_name, model_name = SUPPORTED_MODEL_TYPES[model_type]
    return getattr(transformers, config_name), getattr(transformers, model_name)


def new_hf_model(hf_config: dict[str, Any]) -> nn.Module:
    """A randomly initialised float32 base model of ``hf_config`` (its weights are loaded
    afterwards from a Graft model folder)."""
    config_class, model_class = _classes(model_type_of(hf_config))
    return model_class(config_class.from_dict(hf_config)).float()


def stored_config(config: Any) -> dict[str, Any]:
    """What a ModelSpec keeps of a transformers config: JSON, float32, no source labels."""
    data: dict[str, Any] = json.loads(config.to_json_string(use_diff=False))
    for key in _DROPPED_CONFIG_KEYS:
        data.pop(key, None)
    data["dtype"] = "float32"
    return data


def hf_folder(root: Path) -> Path:
    """The folder under ``root`` holding ``config.json``: ``root`` itself or, for a model
    MLflow's transformers flavour logged, its ``model/`` subfolder."""
    for candidate in (root, root / "model"):
        if (candidate / CONFIG_FILE).is_file():
            return candidate
    found = sorted(p.name for p in root.iterdir()) if root.is_dir() else []
    raise ConfigError(
        f"model.pretrained: {root} holds no {CONFIG_FILE} (found: {', '.join(found) or 'none'}); "
        "point it at the folder that save_pretrained(DIR) wrote"
    )


def load_pretrained_hf(folder: Path) -> tuple[nn.Module, dict[str, Any]]:
    """The base model saved in ``folder`` with its weights, and its config as kept in a spec.

    Reads ``config.json`` and ``model.safetensors`` (or its shards) from the folder alone:
    ``local_files_only`` (no Hub), ``use_safetensors`` (a ``pytorch_model.bin`` is a pickle,
    which could run code; it is never read), and a checkpoint missing any weight Graft uses is
    refused rather than silently left at its random initialisation."""
    folder = hf_folder(folder)
    hf_config = json.loads((folder / CONFIG_FILE).read_text())
    model_type = model_type_of(hf_config)
    if not any((folder / name).is_file() for name in SAFETENSORS_FILES):
        present = sorted(p.name for p in folder.iterdir())
        raise ConfigError(
            f"model.pretrained: {folder} has no model.safetensors (found: {', '.join(present)}); "
            "Graft reads safetensors only, never pytorch_model.bin (a pickle). Load the model "
            "in Python and save it with model.save_pretrained(DIR), which writes "
            "model.safetensors, then point model.pretrained at DIR"
        )
    _, model_class = _classes(model_type)
    misfit = f"model.pretrained: {folder}'s weights do not fit its {model_type} config"
    try:
        model, info = model_class.from_pretrained(
            str(folder),
            local_files_only=True,
            use_safetensors=True,
            dtype=torch.float32,
            output_loading_info=True,
        )
    except (OSError, RuntimeError, ValueError) as exc:  # unreadable file, other shapes
        raise ConfigError(
            f"{misfit} or cannot be read ({' '.join(str(exc).split())[:300]}); save the model "
            "again with save_pretrained(DIR)"
        ) from None
    unused = _UNUSED_PREFIXES.get(model_type, ())
    missing = [key for key in info["missing_keys"] if not key.startswith(unused)]
    if missing:
        raise ConfigError(
            f"{misfit} (missing: {', '.join(sorted(missing)[:5])}); save the model again with "
            "save_pretrained(DIR)"
        )
    return model.float(), stored_config(model.config)


class MatchChannels(nn.Module):
    """A greyscale image into a colour model (channels repeated), a colour image into a
    greyscale one (channels averaged)."""

    def __init__(self, data_channels: int, model_channels: int) -> None:
        super().__init__()
        self.model_channels = model_channels
        self.average = model_channels == 1 and data_channels > 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.average:
            return x.mean(dim=1, keepdim=True)
        return x.repeat(1, self.model_channels, 1, 1)


class GlobalMean(nn.Module):
    """N x C x H x W -> N x C (ConvNeXt's pooling: a plain mean, its layer norm follows)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(-2, -1))


class FirstToken(nn.Module):
    """N x T x D -> N x D: the [CLS] token of a ViT's sequence."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, 0]


def _average_pool() -> nn.Sequential:
    return nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())


@dataclass
class HFParts:
    """A Hugging Face model cut for a GraftNet: what the stem adds after standardizing, the
    backbone blocks, and the pooling a cut-short backbone leaves to the head."""

    adapters: list[nn.Module]
    resize: tuple[int, int] | None  # the input size the architecture needs, if any
    blocks: list[nn.Module]
    pool: nn.Module | None  # None: the last block already pools to N x width


def _blocks(model_type: str, model: Any) -> tuple[list[nn.Module], nn.Module]:
    """Every block, the last with the model's own pooling, and the pooling a backbone cut
    after an earlier block needs (without the final norm, which fits the last width only)."""
    if model_type == "resnet":
        *stages, last = model.encoder.stages
        return [model.embedder, *stages, nn.Sequential(last, *_average_pool())], _average_pool()
    if model_type == "convnext":
        *stages, last = model.encoder.stages
        pooled = nn.Sequential(last, GlobalMean(), model.layernorm)
        return [model.embeddings, *stages, pooled], GlobalMean()
    if model_type == "mobilenet_v2":
        *layers, last = model.layer
        pooled = nn.Sequential(last, model.conv_1x1, *_average_pool())
        return [model.conv_stem, *layers, pooled], _average_pool()
    *layers, last = model.layers  # vit
    pooled = nn.Sequential(last, model.layernorm, FirstToken())
    return [model.embeddings, *layers, pooled], FirstToken()


def _size(value: Any) -> tuple[int, int]:
    return (int(value), int(value)) if isinstance(value, int) else (int(value[0]), int(value[1]))


def _input_size(
    model_type: str, hf_config: dict[str, Any], height: int, width: int
) -> tuple[int, int] | None:
    """The size images are resized to in the stem, or None to keep the dataset's: a ViT's
    position embeddings fix its ``image_size``; ConvNeXt's patchify and downsampling convs
    (no padding) need ``patch_size x 2^(stages-1)`` pixels a side. ResNet and MobileNetV2 pad
    their convs and pool globally: they take any size."""
    if model_type == "vit":
        size = _size(hf_config["image_size"])
        return None if size == (height, width) else size
    if model_type == "convnext":
        least = int(hf_config["patch_size"]) * 2 ** (int(hf_config["num_stages"]) - 1)
        if height < least or width < least:
            return (max(height, least), max(width, least))
    return None


def hf_parts(
    model: nn.Module, hf_config: dict[str, Any], input_shape: list[int], keep: int | None
) -> HFParts:
    """``model`` (a base model of ``hf_config``) cut into blocks for images of
    ``input_shape`` (C x H x W); ``keep``: only the first k blocks (transfer learning)."""
    model_type = model_type_of(hf_config)
    if len(input_shape) != 3:
        raise ConfigError(
            f"model.family=hf needs an image dataset (C x H x W); this one has rows of shape "
            f"{input_shape}: use model.family=mlp for tables"
        )
    channels, height, width = input_shape
    wanted = int(hf_config.get("num_channels", 3))
    adapters: list[nn.Module] = []
    if channels != wanted:
        if channels != 1 and wanted != 1:
            raise ConfigError(
                f"the images have {channels} channels and the {model_type} model takes "
                f"{wanted}: Graft adapts 1 channel to many and many to 1 only; set "
                "data.image.channels to 1 or 3"
            )
        adapters.append(MatchChannels(channels, wanted))
    size = _input_size(model_type, hf_config, height, width)
    blocks, cut_pool = _blocks(model_type, model)
    if keep is not None and keep < len(blocks):
        return HFParts(adapters, size, blocks[:keep], cut_pool)
    return HFParts(adapters, size, blocks, None)
