"""An external pretrained backbone as a Graft model folder: what pretrain leaves, for the
finetune to transfer from (``model.family=hf`` or ``graft``, which skip pretrain).

- ``hf``: a Hugging Face image model saved with ``save_pretrained`` (a local folder, an
  ``s3://`` prefix or an MLflow artifact URI), cut into Graft blocks (graft.nn.hf_backbone)
  behind a stem that standardizes with the target task's training statistics.
- ``graft``: the model folder (``weights/``) that Graft's export logged for a registered
  version, ``models:/NAME@ALIAS`` or ``models:/NAME/VERSION``; it keeps its own
  architecture and stem.

Either way the result is read by :func:`~graft.train.model_dir.load_checkpoint_model` and
taken unchanged by :func:`~graft.train.stage_requests.finetune_request` as ``pretrained_dir``.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

import torch

from graft.config import GraftConfig
from graft.config.model import HF_MLFLOW_SCHEMES, registered_model_uri
from graft.data.manifest import DataManifest
from graft.errors import ConfigError, GraftError, RegistryError
from graft.io import registry, storage
from graft.nn.hf_backbone import load_pretrained_hf
from graft.nn.models import ModelSpec, build_model
from graft.train.champion import WEIGHTS_FOLDER
from graft.train.model_dir import load_checkpoint_model, save_model_dir

log = logging.getLogger(__name__)


def import_backbone(config: GraftConfig, dataset_dir: str, output_dir: Path) -> Path:
    """Write ``model.pretrained``'s backbone as a model folder at ``output_dir`` for the
    prepared dataset at ``dataset_dir``; return ``output_dir``."""
    source = config.model.pretrained
    if config.model.family == "hf" and source:
        return _import_hf(config, source, dataset_dir, output_dir)
    if config.model.family == "graft" and source:
        return _import_registered(config, source, dataset_dir, output_dir)
    raise ConfigError(
        f"model.family={config.model.family} pretrains its backbone here; importing one needs "
        "model.family=hf or graft with model.pretrained"
    )


def import_champion(config: GraftConfig, dataset_dir: str, output_dir: Path) -> Path:
    """The warm start's backbone: ``models:/<export.model_name>@champion`` as a model folder,
    in place of a pretrain the retraining loop would throw away."""
    source = f"models:/{config.export.model_name}@champion"
    return _import_registered(config, source, dataset_dir, output_dir)


def fetch_pretrained(config: GraftConfig, source: str, scratch: Path) -> Path:
    """A local folder with ``source``'s files: the folder itself, or a copy of an s3://
    prefix or an MLflow artifact URI downloaded under ``scratch``."""
    if storage.is_s3(source):
        return storage.download_tree(source, scratch / "pretrained")
    if source.startswith(HF_MLFLOW_SCHEMES):
        return registry.download_pretrained(config, source, scratch)
    folder = Path(source)
    if not folder.is_dir():
        raise ConfigError(
            f"model.pretrained={source} is not a folder on this machine; Graft never downloads "
            "from the Hugging Face Hub: save the model with save_pretrained(DIR) (or `hf "
            "download NAME --local-dir DIR`), then point model.pretrained at DIR, at its copy "
            "under s3:// or at the MLflow artifact folder you logged it to"
        )
    return folder


def _import_hf(config: GraftConfig, source: str, dataset_dir: str, output_dir: Path) -> Path:
    manifest = DataManifest.read(dataset_dir)
    # the target task's statistics: no source task was prepared for, or trained on, here
    task = manifest.tasks["target"]
    with tempfile.TemporaryDirectory(prefix="graft-backbone-") as scratch:
        hf_model, hf_config = load_pretrained_hf(fetch_pretrained(config, source, Path(scratch)))
        spec = ModelSpec(
            model=config.model.model_dump(mode="json"),
            input_shape=manifest.input_shape,
            num_classes=len(task.classes),
            mean=task.mean,
            std=task.std,
            hf_config=hf_config,
        )
        torch.manual_seed(config.seed)  # the head, which finetune replaces anyway
        model = build_model(spec, pretrained=hf_model)
        out = save_model_dir(model, spec, output_dir)
    log.info(
        "imported the %s backbone of %s (%d blocks) into %s",
        hf_config["model_type"],
        source,
        len(model.backbone),
        out,
    )
    return out


def _import_registered(
    config: GraftConfig, source: str, dataset_dir: str, output_dir: Path
) -> Path:
    parsed = registered_model_uri(source)
    if parsed is None:  # the config refuses it; a hand-built config might not have been checked
        raise ConfigError(f"model.pretrained={source}: write models:/NAME@ALIAS or NAME/VERSION")
    name, alias, number = parsed
    version = registry.registered_version(config, name, alias=alias, version=number)
    with tempfile.TemporaryDirectory(prefix="graft-backbone-") as scratch:
        folder = registry.download_version_files(
            config, version, WEIGHTS_FOLDER, Path(scratch), model_name=name
        )
        try:
            model, spec = load_checkpoint_model(folder)
        except (GraftError, OSError, ValueError, KeyError, TypeError, RuntimeError) as exc:
            raise RegistryError(
                f"{source} (version {version.version}) cannot be loaded as a Graft model: "
                f"{str(exc).splitlines()[0]}; point model.pretrained at a version this Graft's "
                "export registered"
            ) from None
    shape = DataManifest.read(dataset_dir).input_shape
    if list(spec.input_shape) != list(shape):
        raise ConfigError(
            f"{source} takes inputs of shape {spec.input_shape}, but the prepared dataset's rows "
            f"have shape {shape}: its backbone cannot read them. Prepare the data as that "
            "model's was (data.image.size, data.image.channels, the same columns)"
        )
    out = save_model_dir(model, spec, output_dir)
    log.info("imported %s (version %s) into %s", source, version.version, out)
    return out
