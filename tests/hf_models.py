"""Tiny random-weight Hugging Face image models, built and saved here (never downloaded): the
model.family=hf tests' pretrained backbones."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch


def tiny_hf_model(model_type: str, seed: int = 0, **overrides: Any) -> Any:
    """A few-thousand-parameter base model of ``model_type`` for 8 x 8 inputs, in eval mode;
    its BatchNorm statistics are moved off their 0/1 start so a test can tell them apart."""
    import transformers

    settings: dict[str, tuple[str, str, dict[str, Any]]] = {
        "resnet": (
            "ResNetConfig",
            "ResNetModel",
            {"embedding_size": 8, "hidden_sizes": [8, 16], "depths": [1, 1], "layer_type": "basic"},
        ),
        "convnext": (
            "ConvNextConfig",
            "ConvNextModel",
            {"hidden_sizes": [8, 16], "depths": [1, 1], "num_stages": 2, "patch_size": 2},
        ),
        "mobilenet_v2": ("MobileNetV2Config", "MobileNetV2Model", {"depth_multiplier": 0.25}),
        "vit": (
            "ViTConfig",
            "ViTModel",
            {
                "hidden_size": 16,
                "num_hidden_layers": 2,
                "num_attention_heads": 2,
                "intermediate_size": 32,
                "image_size": 8,
                "patch_size": 4,
            },
        ),
    }
    config_name, model_name, arguments = settings[model_type]
    config = getattr(transformers, config_name)(num_channels=3, **{**arguments, **overrides})
    torch.manual_seed(seed)
    model = getattr(transformers, model_name)(config)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
    return model.eval()


def saved_hf_model(model_type: str, folder: Path, **overrides: Any) -> tuple[Any, Path]:
    """:func:`tiny_hf_model` saved with ``save_pretrained`` (config.json, model.safetensors)."""
    model = tiny_hf_model(model_type, **overrides)
    model.save_pretrained(str(folder))
    return model, folder
