"""model.family=hf: a Hugging Face image model cut into Graft blocks, its weights read from
safetensors only; transfer phases, frozen BN, cached features and ONNX export on it."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime
import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from graft.config import ModelConfig, PhaseConfig
from graft.errors import ConfigError
from graft.export.formats import export_and_check
from graft.nn.hf_backbone import SUPPORTED_MODEL_TYPES, load_pretrained_hf
from graft.nn.models import GraftNet, ModelSpec, build_model
from graft.nn.transfer import apply_phase, set_train_mode, transfer_model, transfer_spec
from graft.train.model_dir import load_checkpoint_model, save_model_dir
from graft.train.workers import bottleneck_features
from hf_models import saved_hf_model

MEAN, STD = [0.5], [2.0]


# these models are a few thousand weights: one intra-op thread (tests/conftest.py)
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _spec(folder: Path, hf_config: dict[str, Any], shape: list[int], **fields: Any) -> ModelSpec:
    model = ModelConfig(family="hf", pretrained=str(folder)).model_dump(mode="json")
    channels = shape[0]
    return ModelSpec(
        model, shape, 3, MEAN * channels, STD * channels, hf_config=hf_config, **fields
    )


def _imported(model_type: str, tmp_path: Path, shape: list[int] | None = None) -> tuple[Any, Any]:
    """The saved HF model and a GraftNet built on its weights as read back from the folder."""
    hf, folder = saved_hf_model(model_type, tmp_path / model_type)
    loaded, hf_config = load_pretrained_hf(folder)
    spec = _spec(folder, hf_config, shape or [1, 8, 8])
    return hf, (build_model(spec, pretrained=loaded).eval(), spec)


def _hf_features(model_type: str, hf: Any, pixels: torch.Tensor) -> torch.Tensor:
    out = hf(pixels)
    if model_type == "vit":  # the normed [CLS] token, as ViTForImageClassification reads it
        return out.last_hidden_state[:, 0]
    return out.pooler_output.flatten(1)


@pytest.mark.parametrize("model_type", sorted(SUPPORTED_MODEL_TYPES))
def test_a_greyscale_dataset_gets_the_hf_models_features_from_its_weights(
    model_type: str, tmp_path: Path
) -> None:
    hf, (model, spec) = _imported(model_type, tmp_path)
    x = torch.rand(4, 1, 8, 8) * 4
    with torch.no_grad():
        # the stem standardizes with the dataset's statistics, then repeats the one channel
        expected = _hf_features(model_type, hf, ((x - 0.5) / 2.0).repeat(1, 3, 1, 1))
        assert torch.allclose(model.features(x), expected, atol=1e-5)
        assert model(x).shape == (4, 3)
    # the model folder rebuilds it from spec.json alone: the HF folder is not needed again
    for path in (tmp_path / model_type).iterdir():
        path.unlink()
    reloaded, reloaded_spec = load_checkpoint_model(save_model_dir(model, spec, tmp_path / "dir"))
    assert reloaded_spec.hf_config == spec.hf_config
    with torch.no_grad():
        assert torch.equal(reloaded.eval()(x), model(x))


def test_every_weight_of_the_base_model_is_in_the_backbone(tmp_path: Path) -> None:
    hf, (model, _) = _imported("resnet", tmp_path)
    ours = sorted(t.sum().item() for t in model.backbone.state_dict().values())
    theirs = sorted(t.sum().item() for t in hf.state_dict().values())
    assert ours == theirs  # same tensors, BN running statistics included
    assert len(model.backbone) == 3  # embedder, stage 1, stage 2 + pooling


def test_vit_images_are_resized_to_its_image_size(tmp_path: Path) -> None:
    hf, folder = saved_hf_model("vit", tmp_path / "vit", image_size=16)
    loaded, hf_config = load_pretrained_hf(folder)
    model = build_model(_spec(folder, hf_config, [3, 8, 8]), pretrained=loaded).eval()
    x = torch.rand(2, 3, 8, 8)
    with torch.no_grad():
        assert model.stem(x).shape == (2, 3, 16, 16)
        big = nn.functional.interpolate((x - 0.5) / 2.0, size=(16, 16), mode="bilinear")
        assert torch.allclose(model.features(x), _hf_features("vit", hf, big), atol=1e-5)


def test_a_folder_without_safetensors_is_refused_without_unpickling(tmp_path: Path) -> None:
    _, folder = saved_hf_model("resnet", tmp_path / "bin-only")
    weights = (folder / "model.safetensors").read_bytes()
    (folder / "model.safetensors").unlink()
    marker = tmp_path / "unpickled"
    torch.save({"weights": weights, "canary": _WritesMarker(marker)}, folder / "pytorch_model.bin")
    with pytest.raises(ConfigError) as refused:
        load_pretrained_hf(folder)
    message = str(refused.value)
    assert str(folder) in message
    assert "model.save_pretrained(DIR)" in message and "pytorch_model.bin" in message
    assert not marker.exists()


class _WritesMarker:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (f"touch {self.marker}",))


def test_an_unsupported_architecture_and_missing_weights_are_refused(tmp_path: Path) -> None:
    folder = tmp_path / "bert"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(ConfigError, match="supported model_types: resnet, convnext"):
        load_pretrained_hf(folder)
    _, other = saved_hf_model("resnet", tmp_path / "deeper")
    config = json.loads((other / "config.json").read_text())
    (other / "config.json").write_text(json.dumps({**config, "depths": [2, 1]}))
    with pytest.raises(ConfigError, match="weights do not fit its resnet config"):
        load_pretrained_hf(other)  # a stage the checkpoint lacks
    (other / "config.json").write_text(json.dumps({**config, "hidden_sizes": [8, 24]}))
    with pytest.raises(ConfigError, match="weights do not fit its resnet config"):
        load_pretrained_hf(other)  # a stage of another width


def test_an_older_spec_without_hf_config_still_loads() -> None:
    spec = ModelSpec(ModelConfig().model_dump(mode="json"), [4], 2, [0.0] * 4, [1.0] * 4)
    old = json.loads(spec.to_json())
    del old["hf_config"]
    assert ModelSpec.from_json(json.dumps(old)) == spec


def _bn_state(block: nn.Module) -> list[torch.Tensor]:
    return [
        t.clone()
        for name, t in block.state_dict().items()
        if name.endswith(("running_mean", "running_var"))
    ]


def _train_step(model: GraftNet, unfrozen: list[int] | None) -> None:
    set_train_mode(model, unfrozen)
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    loss = nn.functional.cross_entropy(model(torch.rand(8, 1, 8, 8) * 4), torch.arange(8) % 3)
    loss.backward()
    optimizer.step()


@pytest.mark.parametrize(
    ("trainable", "expected"), [("head", []), ("top_k", [2]), ("all", [0, 1, 2])]
)
def test_phases_freeze_hf_blocks_and_frozen_batch_norm_keeps_its_statistics(
    trainable: str, expected: list[int], tmp_path: Path
) -> None:
    _, (model, _) = _imported("resnet", tmp_path)
    phase = PhaseConfig(trainable=trainable, epochs=1, top_k=1)  # type: ignore[arg-type]
    unfrozen = apply_phase(model, phase)
    assert unfrozen == expected
    for index, block in enumerate(model.backbone):
        assert all(p.requires_grad == (index in expected) for p in block.parameters())
    before = [
        (_bn_state(block), [p.clone() for p in block.parameters()]) for block in model.backbone
    ]
    _train_step(model, None if trainable == "all" else unfrozen)
    for index, block in enumerate(model.backbone):
        stats, weights = before[index]
        same_stats = all(torch.equal(a, b) for a, b in zip(stats, _bn_state(block), strict=True))
        same_weights = all(
            torch.equal(a, b) for a, b in zip(weights, block.parameters(), strict=True)
        )
        # frozen: weights and BN running statistics bit-identical; trained: both moved
        assert same_stats == same_weights == (index not in expected)


def test_cached_bottleneck_features_are_the_frozen_trunks(tmp_path: Path) -> None:
    _, (model, _) = _imported("convnext", tmp_path)
    model.train()
    x, y = torch.rand(10, 1, 8, 8) * 4, torch.arange(10) % 3
    cached = bottleneck_features(model, TensorDataset(x, y), torch.device("cpu"), batch_size=4)
    assert all(module.training for module in model.modules())  # flags restored
    features, _ = cached.tensors
    model.eval()
    with torch.no_grad():
        assert torch.allclose(model.head(features), model(x), atol=1e-6)


def test_a_backbone_cut_short_pools_in_its_head(tmp_path: Path) -> None:
    _, (model, spec) = _imported("resnet", tmp_path)
    cut = transfer_spec(spec, num_classes=2, reuse_blocks=2, available_blocks=3)
    target = transfer_model(model, cut).eval()
    assert len(target.backbone) == 2
    x = torch.rand(3, 1, 8, 8)
    with torch.no_grad():
        assert torch.equal(target.backbone(target.stem(x)), model.backbone[:2](model.stem(x)))
        assert target(x).shape == (3, 2)


@pytest.mark.parametrize("model_type", ["resnet", "vit"])
def test_an_hf_graftnet_exports_to_onnx_matching_torch(model_type: str, tmp_path: Path) -> None:
    _, (model, _) = _imported(model_type, tmp_path)
    example = torch.rand(4, 1, 8, 8) * 4
    files = export_and_check(model, example, tmp_path / "export", opset=18, atol=1e-4)
    assert files.onnx_max_abs_diff < 1e-4
    other = torch.rand(7, 1, 8, 8) * 4  # another batch size: the batch axis is dynamic
    session = onnxruntime.InferenceSession(files.onnx, providers=["CPUExecutionProvider"])
    onnx_out = session.run(["logits"], {"input": other.numpy()})[0]
    with torch.no_grad():
        np.testing.assert_allclose(onnx_out, model(other).numpy(), atol=1e-4)
