"""Build the fit requests for pretrain and transfer-finetune from the config and artifacts."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from pydantic import ValidationError
from torch import nn

from graft.config import GraftConfig, ModelConfig
from graft.config.data import ImageAugmentConfig
from graft.config.runtime import EXTERNAL_FAMILIES
from graft.data.manifest import DataManifest
from graft.errors import ConfigError
from graft.io import tracking
from graft.nn.models import ModelSpec, build_model
from graft.nn.transfer import transfer_model, transfer_spec
from graft.train.champion import load_champion
from graft.train.in_process import overfit_one_batch
from graft.train.model_dir import load_checkpoint_model
from graft.train.request import FitRequest, phases_for
from graft.train.stream_data import split_path, stream_inputs

log = logging.getLogger(__name__)


def source_model_spec(config: GraftConfig, dataset_dir: str) -> ModelSpec:
    """The pretrain (source task) architecture for a prepared dataset."""
    manifest = DataManifest.read(dataset_dir)
    task = manifest.tasks["source"]
    return ModelSpec(
        model=config.model.model_dump(mode="json"),
        input_shape=manifest.input_shape,
        num_classes=len(task.classes),
        mean=task.mean,
        std=task.std,
        objective=config.pretrain.objective,
    )


def image_augmentation(config: GraftConfig, dataset_dir: str) -> ImageAugmentConfig | None:
    """``data.image.augment`` when it is on and the dataset holds images; else None."""
    settings = config.data.image.augment
    if not settings.active:
        return None
    if DataManifest.read(dataset_dir).kind != "image":
        log.warning("data.image.augment is set but the dataset is a table; it is not augmented")
        return None
    log.info(
        "train batches augmented: crop_padding=%d, horizontal_flip=%s",
        settings.crop_padding,
        settings.horizontal_flip,
    )
    return settings


def pretrain_request(
    config: GraftConfig, dataset_dir: str, tracking_run_id: str | None
) -> FitRequest:
    if config.model.family in EXTERNAL_FAMILIES:
        raise ConfigError(
            f"model.family={config.model.family} imports its backbone from "
            f"model.pretrained={config.model.pretrained} instead of pretraining one: pretrain "
            "does not run for it (graft.train.backbone_import.import_backbone writes the model "
            "folder finetune starts from)"
        )
    spec = source_model_spec(config, dataset_dir)
    train_path = split_path(dataset_dir, "source", "train")
    if config.pretrain.preflight_overfit_batch:
        overfit_one_batch(build_model(spec), train_path, config.seed, spec.objective)
    return FitRequest(
        train_path=train_path,
        val_path=split_path(dataset_dir, "source", "val"),
        stream=stream_inputs(dataset_dir, "source", config.data),
        spec_json=spec.to_json(),
        pretrain=config.pretrain,
        phases=phases_for(config.pretrain),
        seed=config.seed,
        augment=image_augmentation(config, dataset_dir),
        tracking_uri=config.resolved_tracking_uri(),
        mlflow_run_id=tracking_run_id,
    )


def finetune_request(
    config: GraftConfig,
    dataset_dir: str,
    pretrained_dir: str,
    scratch_dir: Path,
    tracking_run_id: str | None,
) -> FitRequest:
    """Copy the pretrained backbone into a new target model (the source stays untouched),
    save it as the workers' starting weights, and describe the phases.

    With ``finetune.warm_start_from_champion`` and a registered champion of the same
    architecture, the starting weights are the champion's instead (the retraining loop).
    """
    manifest = DataManifest.read(dataset_dir)
    source_model, source_spec = load_checkpoint_model(pretrained_dir)
    # Architecture-free settings (dropout rate, activation parameters) may differ from pretrain:
    # tune explores them. Weights only depend on widths, so they load into the new layout.
    source_spec.model = _finetune_model_block(config, source_spec)
    spec = transfer_spec(
        source_spec,
        num_classes=len(manifest.tasks["target"].classes),
        reuse_blocks=config.finetune.reuse_blocks,
        available_blocks=len(source_model.backbone),
    )
    torch.manual_seed(config.seed)
    target = transfer_model(source_model, spec)
    if config.finetune.warm_start_from_champion:
        start = _load_champion_weights(config, target)
        if tracking_run_id is not None:
            tracking.logger_for(config, tracking_run_id).tags({"graft.init": start})
    scratch_dir.mkdir(parents=True, exist_ok=True)
    init_path = scratch_dir / "init_weights.pt"
    torch.save(target.state_dict(), init_path)
    return FitRequest(
        train_path=split_path(dataset_dir, "target", "train"),
        val_path=split_path(dataset_dir, "target", "val"),
        stream=stream_inputs(dataset_dir, "target", config.data),
        spec_json=spec.to_json(),
        finetune=config.finetune,
        phases=phases_for(config.finetune),
        seed=config.seed,
        augment=image_augmentation(config, dataset_dir),
        init_weights_path=str(init_path),
        tracking_uri=config.resolved_tracking_uri(),
        mlflow_run_id=tracking_run_id,
    )


def _finetune_model_block(config: GraftConfig, source: ModelSpec) -> dict[str, Any]:
    """The config's model block, except for a registered model imported as the backbone
    (family graft): the config describes no architecture then, so the registered model's
    block is kept and only the config's dropout (no weights; tune may search it) replaces its
    own. (An hf import's architecture is the spec's hf_config, untouched here.)"""
    if config.model.family != "graft":
        return config.model.model_dump(mode="json")
    block = {**source.model, "dropout": config.model.dropout.model_dump(mode="json")}
    try:
        ModelConfig.model_validate(block)
    except ValidationError as exc:
        raise ConfigError(
            f"model.dropout does not fit the architecture of {config.model.pretrained}: "
            f"{exc.errors()[0]['msg']}"
        ) from None
    return block


def _load_champion_weights(config: GraftConfig, target: nn.Module) -> str:
    """Load ``models:/<name>@champion``'s weights into ``target`` when the architectures match;
    return where the weights come from (tagged on the finetune run)."""
    name = config.export.model_name
    champion = load_champion(config)
    if champion is None:
        log.warning(
            "warm start: no champion of '%s' yet; starting from the pretrained backbone", name
        )
        return "pretrained"
    wanted = {key: tuple(t.shape) for key, t in target.state_dict().items()}
    state = champion.network.state_dict()
    found = {key: tuple(t.shape) for key, t in state.items()}
    if wanted != found:
        differing = sorted(set(wanted) ^ set(found)) or sorted(
            key for key in wanted if wanted[key] != found[key]
        )
        log.warning(
            "warm start: champion %s v%s has another architecture (%s differ); starting from "
            "the pretrained backbone",
            name,
            champion.version,
            ", ".join(differing[:5]),
        )
        return "pretrained"
    target.load_state_dict(state)
    log.info("warm start: finetuning from champion %s v%s", name, champion.version)
    return f"champion:{champion.version}"
